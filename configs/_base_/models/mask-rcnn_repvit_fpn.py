# Mask R-CNN + FPN with a RepViT backbone: mmdet's ResNet-50 model with the backbone swapped for
# mmpretrain.RepViT. The last block of each of the four stages (strides 4/8/16/32) feeds FPN, which is what
# the authors' block indices (e.g. [2, 6, 20, 24] for M1.1) select. Default arch: M1.1.
_base_ = 'mmdet::_base_/models/mask-rcnn_r50_fpn.py'
# repvit_mm registers RepViT; repvit_mm.detection the COCO pre-flight data check of the tools.
custom_imports = dict(imports=['repvit_mm', 'repvit_mm.detection'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmpretrain.RepViT',
        arch='m1_1',
        out_indices=(0, 1, 2, 3),
        # As the authors: SyncBN, every BN kept in eval mode while training (ImageNet statistics frozen,
        # affine parameters trained). mmengine turns SyncBN into BN when not distributed.
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        norm_eval=True,
        # An ImageNet classifier checkpoint of ours (keys backbone.*); the authors' release files go
        # through tools/convert_checkpoint.py first.
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/repvit-m1.1_in1k.pth',
                      prefix='backbone.')),
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=256, num_outs=5))
