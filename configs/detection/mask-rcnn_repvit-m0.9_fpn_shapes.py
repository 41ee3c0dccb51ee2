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
    # Three classes at 128 px need less width than COCO: a 128-channel FPN and RPN (not 256). The FPN and
    # RPN convs at stride 4 dominate a CPU step, which now costs 0.52 s instead of 0.91 s (one thread).
    neck=dict(in_channels=[48, 96, 192, 384], out_channels=128),
    # Shapes are 15-45 px wide: anchors of 16-256 px instead of COCO's 32-512.
    rpn_head=dict(in_channels=128, feat_channels=128, anchor_generator=dict(scales=[4])),
    # Lighter RoI heads and sampling than COCO's (at most 5 objects per image, 128 px): the mask head's
    # four 256-channel convs on every positive RoI would otherwise dominate a CPU training step; two convs
    # of 64 channels draw filled polygons well enough.
    roi_head=dict(bbox_roi_extractor=dict(out_channels=128),
                  bbox_head=dict(in_channels=128, num_classes=3, fc_out_channels=256),
                  mask_roi_extractor=dict(out_channels=128),
                  mask_head=dict(in_channels=128, num_classes=3, num_convs=2, conv_out_channels=64)),
    train_cfg=dict(rpn=dict(sampler=dict(num=128)),
                   rpn_proposal=dict(nms_pre=500, max_per_img=50),
                   rcnn=dict(sampler=dict(num=32))),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=100), rcnn=dict(max_per_img=20)),
)

# 400 iterations of 4 images (about 2.7 epochs of the demo's 600 training images), from the Shapes
# classifier, in the CPU time that 260 iterations took with 256 channels. On the demo's data, seeds 0 / 1:
# box AP 0.79 / 0.82 (lr 1e-3; with 256 channels and 260 iterations: 0.62 at 1e-3, 0.57 / 0.59 at 5e-4).
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=30),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=400, milestones=[340], gamma=0.1),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=400, val_interval=200)
# One process x 4 images; `tools/train.py --auto-scale-lr` rescales the lr for another total batch size.
auto_scale_lr = dict(base_batch_size=4)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    logger=dict(interval=10, log_metric_by_epoch=False),
    checkpoint=dict(type='AtomicCheckpointHook', by_epoch=False, interval=400, max_keep_ckpts=1,
                    save_best='coco/bbox_mAP', rule='greater'))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)
