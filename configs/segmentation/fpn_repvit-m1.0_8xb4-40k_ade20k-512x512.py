# RepViT-M1.0 (not in the paper's segmentation table).
_base_ = './fpn_repvit-m1.1_8xb4-40k_ade20k-512x512.py'
model = dict(
    backbone=dict(arch='m1_0', init_cfg=dict(checkpoint='checkpoints/repvit-m1.0_in1k.pth')),
    neck=dict(in_channels=[56, 112, 224, 448]))
