# RepViT-M2.3 (the authors' result: box AP 44.6, mask AP 40.8), from their repvit_m2_3_distill_450e.pth
# (tools/convert_checkpoint.py ... --arch m2_3).
_base_ = './mask-rcnn_repvit-m1.1_fpn_1x_coco.py'
model = dict(
    backbone=dict(arch='m2_3', init_cfg=dict(checkpoint='checkpoints/repvit-m2.3_in1k.pth')),
    neck=dict(in_channels=[80, 160, 320, 640]))
