# RepViT-M0.9 (not in the paper's detection table).
_base_ = './mask-rcnn_repvit-m1.1_fpn_1x_coco.py'
model = dict(
    backbone=dict(arch='m0_9', init_cfg=dict(checkpoint='checkpoints/repvit-m0.9_in1k.pth')),
    neck=dict(in_channels=[48, 96, 192, 384]))
