# Your own classes, image + mask layout: data/my_masks/{images,masks}/{train,val}/NAME.jpg / NAME.png, the
# png holding class indices 0..N-1 (255 = ignored). What changes from the Shapes segmentor it starts
# from: the data root and folders, the class names and palette (metainfo), reduce_zero_label (False: 0 is
# a class here), decode_head.num_classes, the label check's num_classes in both pipelines, and the
# starting weights: the backbone from the authors' ImageNet RepViT-M0.9 (converted when loaded). The
# widths stay the Shapes segmentor's (128-channel FPN, 64-channel head: 0.60 GMACs at 128x128 where
# ADE20K's widths cost 1.58), sized for a CPU. The authors released no M0.9 ADE20K segmentor: to start
# from one they released (M1.1, M1.5, M2.3), inherit that ADE20K config instead (docs/usage.md).
_base_ = ['../segmentation/fpn_repvit-m0.9_shapes.py']

data_root = 'data/my_masks'
metainfo = dict(classes=('ground', 'round', 'cornered'), palette=[(40, 40, 40), (0, 200, 120), (250, 60, 160)])
num_classes = len(metainfo['classes'])

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='CheckedLoadAnnotations', num_classes=num_classes),
    dict(type='RandomResize', scale=(512, 128), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=(128, 128), cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='AlignResize', scale=(512, 128), keep_ratio=True, size_divisor=32),
    dict(type='CheckedLoadAnnotations', num_classes=num_classes),
    dict(type='PackSegInputs'),
]
model = dict(
    backbone=dict(init_cfg=dict(
        type='Pretrained', prefix='backbone.',
        checkpoint='https://github.com/THU-MIG/RepViT/releases/download/v1.0/repvit_m0_9_distill_300e.pth')),
    decode_head=dict(num_classes=num_classes))
train_dataloader = dict(dataset=dict(
    data_root=data_root, metainfo=metainfo, reduce_zero_label=False, pipeline=train_pipeline,
    data_prefix=dict(img_path='images/train', seg_map_path='masks/train')))
val_dataloader = dict(dataset=dict(
    data_root=data_root, metainfo=metainfo, reduce_zero_label=False, pipeline=test_pipeline,
    data_prefix=dict(img_path='images/val', seg_map_path='masks/val')))
test_dataloader = val_dataloader
