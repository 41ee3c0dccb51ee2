# RepViT-M1.0 (not in the paper's detection table).
_base_ = './mask-rcnn_repvit-m1.1_fpn_1x_coco.py'
model = dict(
    backbone=dict(arch='m1_0', init_cfg=dict(checkpoint='checkpoints/repvit-m1.0_in1k.pth')),
    neck=dict(in_channels=[56, 112, 224, 448]))
