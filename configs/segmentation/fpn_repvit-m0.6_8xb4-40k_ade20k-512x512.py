# RepViT-M0.6 (not in the paper's segmentation table).
_base_ = './fpn_repvit-m1.1_8xb4-40k_ade20k-512x512.py'
model = dict(
    backbone=dict(arch='m0_6', init_cfg=dict(checkpoint='checkpoints/repvit-m0.6_in1k.pth')),
    neck=dict(in_channels=[40, 80, 160, 320]))
