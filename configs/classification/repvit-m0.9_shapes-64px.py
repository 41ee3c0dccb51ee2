# RepViT-M0.9 on the embedded Shapes data (3 classes, 64x64): the demo's classifier and the smoke test of
# the training tools. A short iteration-based schedule that runs in minutes on a CPU: 400 iterations of 32
# images (the demo writes 600 training images per class, so about 7 epochs).
_base_ = [
    '../_base_/datasets/shapes_imagenet.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['repvit_mm'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    backbone=dict(type='RepViT', arch='m0_9'),
    head=dict(type='RepViTClsHead', num_classes=3, in_channels=384, distillation=False, topk=(1,)),
)

# No weight decay on norms and biases; those parameters share one optimizer group (the constructor), not
# one group per tensor as mmengine's default makes them (slow on GPUs, the same updates).
optim_wrapper = dict(optimizer=dict(type='AdamW', lr=2e-3, weight_decay=0.025),
                     paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0),
                     constructor='MergedGroupsOptimWrapperConstructor')
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=20),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=False, begin=20, end=400),
]
train_cfg = dict(by_epoch=False, max_iters=400, val_interval=100)
# One process x 32 images; `tools/train.py --auto-scale-lr` rescales the lr for another total batch size.
auto_scale_lr = dict(base_batch_size=32)
val_cfg = dict()
test_cfg = dict()
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10, log_metric_by_epoch=False),
    checkpoint=dict(type='AtomicCheckpointHook', by_epoch=False, interval=400, max_keep_ckpts=1,
                    save_best='accuracy/top1', rule='greater'),
)
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)
