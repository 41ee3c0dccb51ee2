# ADE20K as in mmseg's base config (train: resize to 2048x512 x0.5-2.0, crop 512 with cat_max_ratio 0.75,
# flip, photometric distortion; labels 1..150, 0 ignored via reduce_zero_label), with the authors' test
# resize: keep the ratio within 2048x512, then both sides up to a multiple of 32 (AlignResize). Label
# values are checked as they are loaded (CheckedLoadAnnotations). Both transforms are registered by
# repvit_mm.segmentation, which the model base (fpn_repvit.py) imports.
_base_ = 'mmseg::_base_/datasets/ade20k.py'
num_classes = 150
crop_size = (512, 512)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='CheckedLoadAnnotations', num_classes=num_classes),
    dict(type='RandomResize', scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='AlignResize', scale=(2048, 512), keep_ratio=True, size_divisor=32),
    # loaded after the resize: the metric compares with the original-size labels
    dict(type='CheckedLoadAnnotations', num_classes=num_classes),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
