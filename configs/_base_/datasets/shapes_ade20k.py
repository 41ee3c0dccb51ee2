# Shapes (embedded toy data, `python tools/make_shapes.py data/shapes`) in the ADE20K layout:
# data/shapes/ade20k/images/{training,validation}/*.jpg + annotations/{training,validation}/*.png with
# 0 = unlabeled (ignored via reduce_zero_label), 1 = background, 2..4 = circle, square, triangle.
# ADE20K's pipeline scaled from 512 to 128 px (the images are 128x128).
dataset_type = 'BaseSegDataset'  # ADE20KDataset would insist on ADE20K's 150 class names
data_root = 'data/shapes/ade20k'
metainfo = dict(classes=('background', 'circle', 'square', 'triangle'),
                palette=[(120, 120, 120), (220, 20, 60), (30, 144, 255), (255, 190, 0)])
num_classes = 4
crop_size = (128, 128)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='CheckedLoadAnnotations', num_classes=num_classes),
    dict(type='RandomResize', scale=(512, 128), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='AlignResize', scale=(512, 128), keep_ratio=True, size_divisor=32),
    # loaded after the resize: the metric compares with the original-size labels
    dict(type='CheckedLoadAnnotations', num_classes=num_classes),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=8,
    num_workers=0,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type=dataset_type, data_root=data_root, metainfo=metainfo, reduce_zero_label=True,
                 data_prefix=dict(img_path='images/training', seg_map_path='annotations/training'),
                 pipeline=train_pipeline),
)
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root, metainfo=metainfo, reduce_zero_label=True,
                 data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation'),
                 pipeline=test_pipeline),
)
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
