# ImageNet-1K as the RepViT authors train on it (their main.py, timm 0.9 transforms), 256 images per GPU.
# Layout: data/imagenet/{train,val}/<wnid>/*.JPEG (meta/{train,val}.txt are used if present).
dataset_type = 'ImageNet'
data_root = 'data/imagenet'

data_preprocessor = dict(
    # mmpretrain's ClsDataPreprocessor plus timm's RandomErasing where the authors' timm pipeline has it:
    # --reprob 0.25 --remode pixel --recount 1, on the normalised image (erased pixels are N(0, 1), not
    # clipped), before Mixup/CutMix (the model's train_cfg.augments, applied right after it).
    type='ErasingClsDataPreprocessor',
    random_erasing=dict(probability=0.25, mode='pixel', max_count=1),
    num_classes=1000,
    mean=[123.675, 116.28, 103.53],  # timm IMAGENET_DEFAULT_MEAN/STD, RGB, 0-255
    std=[58.395, 57.12, 57.375],
    to_rgb=True,
)
bgr_mean = data_preprocessor['mean'][::-1]

train_pipeline = [
    dict(type='LoadImageFromFile'),  # repvit_mm's: a corrupt image stops training with its file name
    dict(type='RandomResizedCrop', scale=224, backend='pillow', interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    # timm 'rand-m9-mstd0.5-inc1': 2 ops, magnitude 9 (of 10) with std 0.5, increasing-severity ops.
    # The authors' --color-jitter 0.4 is not applied: timm disables colour jitter when RandAugment is on.
    dict(type='RandAugment', policies='timm_increasing', num_policies=2, total_level=10, magnitude_level=9,
         magnitude_std=0.5, hparams=dict(pad_val=[round(x) for x in bgr_mean], interpolation='bicubic')),
    # random erasing follows in the data preprocessor (above), after normalisation
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=256, edge='short', backend='pillow', interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=224),
    dict(type='PackInputs'),
]

train_dataloader = dict(
    batch_size=256,
    num_workers=10,
    drop_last=True,
    dataset=dict(type=dataset_type, data_root=data_root, split='train', pipeline=train_pipeline),
    sampler=dict(type='RepeatAugSampler', shuffle=True, num_repeats=3),  # the authors' RASampler
    # The batch stacked in the worker processes (every training image is 224x224 after RandomResizedCrop):
    # the data preprocessor then copies one uint8 tensor to the GPU and normalises it in one go, instead of
    # one copy and four kernels per image (mmengine's default pseudo_collate); the same numbers.
    collate_fn=dict(type='default_collate'),
)
val_dataloader = dict(
    batch_size=256,
    num_workers=10,
    dataset=dict(type=dataset_type, data_root=data_root, split='val', pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
val_evaluator = dict(type='Accuracy', topk=(1, 5))
test_dataloader = val_dataloader
test_evaluator = val_evaluator
