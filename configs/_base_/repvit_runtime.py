# mmpretrain's runtime with what the RepViT recipe adds: top-1/top-5 after every epoch, the best top-1
# checkpoint kept (saved crash-proof by AtomicCheckpointHook), and the authors' seed.
_base_ = 'mmpretrain::_base_/default_runtime.py'
custom_imports = dict(imports=['repvit_mm', 'repvit_mm.classification'], allow_failed_imports=False)

default_hooks = dict(
    checkpoint=dict(type='AtomicCheckpointHook', interval=1, max_keep_ckpts=3, save_best='accuracy/top1',
                    rule='greater'),
)
env_cfg = dict(cudnn_benchmark=True)
randomness = dict(seed=0, diff_rank_seed=True)
