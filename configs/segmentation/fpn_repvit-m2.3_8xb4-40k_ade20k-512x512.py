# RepViT-M2.3 (the authors' result with mmseg 0.30: mIoU 46.1).
_base_ = './fpn_repvit-m1.1_8xb4-40k_ade20k-512x512.py'
model = dict(
    backbone=dict(arch='m2_3', init_cfg=dict(checkpoint='checkpoints/repvit-m2.3_in1k.pth')),
    neck=dict(in_channels=[80, 160, 320, 640]))
