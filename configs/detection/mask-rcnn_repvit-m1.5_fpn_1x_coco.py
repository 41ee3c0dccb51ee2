# RepViT-M1.5 (the authors' result: box AP 41.6, mask AP 38.6), from their repvit_m1_5_distill_300e.pth
# (tools/convert_checkpoint.py ... --arch m1_5).
_base_ = './mask-rcnn_repvit-m1.1_fpn_1x_coco.py'
model = dict(
    backbone=dict(arch='m1_5', init_cfg=dict(checkpoint='checkpoints/repvit-m1.5_in1k.pth')),
    neck=dict(in_channels=[64, 128, 256, 512]))
