# RepViT classifier trained as the authors do: DeiT hard distillation from a frozen RegNetY-16GF teacher
# (a second, distillation head; its logits are averaged with the class head's at test time), Mixup 0.8 /
# CutMix 1.0 (one of the two per batch), label smoothing 0.1. The per-arch files set arch and in_channels.
model = dict(
    type='DistillationImageClassifier',
    backbone=dict(type='RepViT', arch='m0_9'),
    head=dict(
        type='RepViTClsHead',
        num_classes=1000,
        in_channels=384,
        distillation=True,
        distillation_type='hard',  # or 'soft' (KL at temperature tau); 'none' with teacher=None
        alpha=0.5,
        tau=1.0,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        topk=(1, 5),
    ),
    # DeiT's teacher weights (regnety_160-a5fe301d.pth, 82.6% top-1) as a local file: nothing is downloaded.
    teacher=dict(name='regnety_160', checkpoint='data/teachers/regnety_160-a5fe301d.pth', num_classes=1000,
                 random_init=False),
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]),
)
