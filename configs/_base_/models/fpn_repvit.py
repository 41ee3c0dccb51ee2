# Semantic FPN with a RepViT backbone: mmseg's FPN model with the ResNet-50 swapped for mmpretrain.RepViT.
# The last block that runs at each of the four resolutions (strides 4/8/16/32) feeds FPN: for stages 0-2 that
# is the next stage's pre-downsampling block, which is what the authors' segmentation block indices
# (e.g. [3, 7, 21, 24] for M1.1) select. Default arch: M1.1; ADE20K's 150 classes.
_base_ = 'mmseg::_base_/models/fpn_r50.py'
# repvit_mm registers RepViT; repvit_mm.segmentation our transforms and the tools' pre-flight data check.
custom_imports = dict(imports=['repvit_mm', 'repvit_mm.segmentation'], allow_failed_imports=False)

model = dict(
    pretrained=None,  # fpn_r50 names an ImageNet ResNet here; the backbone's init_cfg says what to load
    backbone=dict(
        _delete_=True,
        type='mmpretrain.RepViT',
        arch='m1_1',
        out_indices=(0, 1, 2, 3),
        out_at_resolution_end=True,
        # As the authors: SyncBN, every BN kept in eval mode while training (ImageNet statistics frozen,
        # affine parameters trained). mmengine turns SyncBN into BN when not distributed.
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        norm_eval=True,
        # An ImageNet classifier checkpoint of ours (keys backbone.*); the authors' release files go
        # through tools/convert_checkpoint.py first.
        init_cfg=dict(type='Pretrained', checkpoint='checkpoints/repvit-m1.1_in1k.pth',
                      prefix='backbone.')),
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=256, num_outs=4),
    decode_head=dict(num_classes=150))
