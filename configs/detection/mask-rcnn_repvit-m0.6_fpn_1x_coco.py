# RepViT-M0.6 (not in the paper's detection table).
_base_ = './mask-rcnn_repvit-m1.1_fpn_1x_coco.py'
model = dict(
    backbone=dict(arch='m0_6', init_cfg=dict(checkpoint='checkpoints/repvit-m0.6_in1k.pth')),
    neck=dict(in_channels=[40, 80, 160, 320]))
