# The RepViT authors' optimisation (main.py): AdamW, lr 1e-3 per 512 images (8 GPUs x 256 -> 4e-3),
# weight decay 0.025 except on 1-D parameters (timm filter_bias_and_bn), adaptive gradient clipping 0.02,
# 5 linear warm-up epochs from 1e-6, then cosine to 1e-5 at the last epoch.
optim_wrapper = dict(
    type='AGCOptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3 * 2048 / 512, weight_decay=0.025, eps=1e-8, betas=(0.9, 0.999)),
    paramwise_cfg=dict(flat_decay_mult=0.0),
    clip_grad=dict(type='agc', clip_factor=0.02),
)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6 / (1e-3 * 2048 / 512), by_epoch=True, begin=0, end=5),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=5),  # ends at max_epochs
]
train_cfg = dict(by_epoch=True, max_epochs=300, val_interval=1)
val_cfg = dict()
test_cfg = dict()
# --auto-scale-lr rescales lr for another total batch size, keeping lr 1e-3 per 512 images.
auto_scale_lr = dict(base_batch_size=2048)
