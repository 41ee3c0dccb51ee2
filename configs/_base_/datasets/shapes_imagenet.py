# Shapes (embedded toy data, `python tools/make_shapes.py data/shapes`) in the ImageNet folder layout:
# data/shapes/imagenet/{train,val}/{circle,square,triangle}/*.JPEG, listed in meta/{train,val}.txt (classes
# interleaved: the first validation images show every class)
dataset_type = 'CustomDataset'
data_root = 'data/shapes/imagenet'
classes = ('circle', 'square', 'triangle')
image_size = 64

data_preprocessor = dict(
    num_classes=len(classes),
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    to_rgb=True,
)

# No random crops: the shapes reach the image border, and a circle or triangle cut by a crop edge is
# another shape (label noise that slows learning down).
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=image_size, edge='short', backend='pillow', interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=image_size),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=image_size, edge='short', backend='pillow', interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=image_size),
    dict(type='PackInputs'),
]

# Two persistent workers decode the next batches while the model trains (and stay up between epochs, the
# demo's 400 iterations being about 7 of them); the loading they hide is small (about 5% of a step).
train_dataloader = dict(
    batch_size=32,
    num_workers=2,
    persistent_workers=True,
    dataset=dict(type=dataset_type, data_root=data_root, data_prefix='train', ann_file='meta/train.txt',
                 classes=classes, pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True),
)
val_dataloader = dict(
    batch_size=64,
    num_workers=0,
    dataset=dict(type=dataset_type, data_root=data_root, data_prefix='val', ann_file='meta/val.txt',
                 classes=classes, pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
val_evaluator = dict(type='Accuracy', topk=(1,))
test_dataloader = val_dataloader
test_evaluator = val_evaluator
