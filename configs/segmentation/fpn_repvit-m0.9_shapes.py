# Semantic FPN, RepViT-M0.9, fine-tuned on the embedded Shapes data (ADE20K layout, 4 classes, 128x128)
# from a Shapes classifier (configs/classification/repvit-m0.9_shapes-64px.py): the pretrain -> downstream
# path of the ADE20K configs in a schedule that runs in minutes on a CPU. Point the backbone at the
# classifier with `--cfg-options model.backbone.init_cfg.checkpoint=PATH`.
_base_ = [
    '../_base_/models/fpn_repvit.py',
    '../_base_/datasets/shapes_ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_40k.py',  # hooks and loops; the schedule is replaced below
]

# BN instead of SyncBN: CPU runs, including CPU distributed (gloo) ones, have no SyncBN.
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    data_preprocessor=dict(size=(128, 128)),
    backbone=dict(arch='m0_9', norm_cfg=norm_cfg,
                  init_cfg=dict(checkpoint='work_dirs/demo/classification/iter_400.pth')),
    neck=dict(in_channels=[48, 96, 192, 384]),
    decode_head=dict(num_classes=4, norm_cfg=norm_cfg),
)

# 220 iterations of 8 crops (about 3 epochs of the demo's 600 training images), from the Shapes classifier.
optim_wrapper = dict(optimizer=dict(_delete_=True, type='AdamW', lr=6e-4, weight_decay=1e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=20),
    dict(type='PolyLR', eta_min=1e-6, power=0.9, by_epoch=False, begin=20, end=220),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=220, val_interval=110)
# One process x 8 images; `tools/train.py --auto-scale-lr` rescales the lr for another total batch size.
auto_scale_lr = dict(base_batch_size=8)
default_hooks = dict(
    logger=dict(interval=10, log_metric_by_epoch=False),
    checkpoint=dict(type='AtomicCheckpointHook', interval=220, max_keep_ckpts=1, save_best='mIoU',
                    rule='greater'))
log_processor = dict(by_epoch=False)
env_cfg = dict(cudnn_benchmark=False)
randomness = dict(seed=0)
