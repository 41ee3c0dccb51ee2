# Semantic FPN, RepViT-M1.1 backbone, 40k iterations on ADE20K at 512x512: the authors' setting
# (their result with mmseg 0.30: mIoU 40.6).
_base_ = [
    '../_base_/models/fpn_repvit.py',
    '../_base_/datasets/ade20k_align.py',  # mmseg's ADE20K pipeline, AlignResize at test time
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_40k.py',  # 40k iters, eval + checkpoint every 4k
]

# training crops are padded to 512x512 to batch them
model = dict(data_preprocessor=dict(size=(512, 512)))

# The authors' AdamW instead of SGD, no gradient clipping; poly decay (power 0.9) down to 1e-6 as mmcv's
# (1 - iter / 40000) ** 0.9: mmengine's PolyLR reaches eta_min at iteration end - 1, hence end=40001.
optim_wrapper = dict(optimizer=dict(_delete_=True, type='AdamW', lr=2e-4, weight_decay=1e-4))
param_scheduler = [dict(type='PolyLR', eta_min=1e-6, power=0.9, begin=0, end=40001, by_epoch=False)]
# 8 GPUs x 4 images; `tools/train.py --auto-scale-lr` keeps the recipe with another total batch size.
train_dataloader = dict(batch_size=4)
auto_scale_lr = dict(enable=False, base_batch_size=32)
# Checkpoints saved crash-proof (temporary file, flush, rename; old ones removed after the new one is complete).
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
