# Mask R-CNN + FPN, RepViT-M0.9, fine-tuned on the embedded Shapes data (COCO layout, 3 classes, 128x128)
# from a Shapes classifier (configs/classification/repvit-m0.9_shapes-64px.py): the pretrain -> downstream
# path of the COCO configs in a schedule that runs in minutes on a CPU. Point the backbone at the classifier
# with `--cfg-options model.backbone.init_cfg.checkpoint=PATH`.
_base_ = [
    '../_base_/models/mask-rcnn_repvit_fpn.py',
    '../_base_/datasets/shapes_coco.py',
    'mmdet::_base_/default_runtime.py',
]

model = dict(
    backbone=dict(arch='m0_9', init_cfg=dict(checkpoint='work_dirs/demo/classification/iter_400.pth')),
    neck=dict(in_channels=[48, 96, 192, 384]),
    # Shapes are 15-45 px wide: anchors of 16-256 px instead of COCO's 32-512.
    rpn_head=dict(anchor_generator=dict(scales=[4])),
    # Lighter RoI heads and sampling than COCO's (at most 5 objects per image, 128 px): the mask head's
    # four 256-channel convs on every positive RoI would otherwise dominate a CPU training step; two convs
    # of 64 channels draw filled polygons well enough.
    roi_head=dict(bbox_head=dict(num_classes=3, fc_out_channels=256),
                  mask_head=dict(num_classes=3, num_convs=2, conv_out_channels=64)),
    train_cfg=dict(rpn=dict(sampler=dict(num=128)),
                   rpn_proposal=dict(nms_pre=500, max_per_img=50),
                   rcnn=dict(sampler=dict(num=32))),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=100), rcnn=dict(max_per_img=20)),
)

# 260 iterations of 4 images (about 2 epochs of the demo's 600 training images), from the Shapes classifier.
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=5e-4, weight_decay=0.05))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=30),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=260, milestones=[220], gamma=0.1),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=260, val_interval=130)
# One process x 4 images; `tools/train.py --auto-scale-lr` rescales the lr for another total batch size.
auto_scale_lr = dict(base_batch_size=4)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    logger=dict(interval=10, log_metric_by_epoch=False),
    checkpoint=dict(type='AtomicCheckpointHook', by_epoch=False, interval=260, max_keep_ckpts=1,
                    save_best='coco/bbox_mAP', rule='greater'))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)
