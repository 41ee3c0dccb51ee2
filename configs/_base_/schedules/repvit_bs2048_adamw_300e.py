# The RepViT authors' optimisation (main.py): AdamW, lr 1e-3 per 512 images (8 GPUs x 256 -> 4e-3),
# weight decay 0.025 except on 1-D parameters (timm filter_bias_and_bn), adaptive gradient clipping 0.02 on
# the unscaled gradients, fp16 autocast with dynamic loss scaling (torch's GradScaler defaults, as timm's
# NativeScaler). Mixed precision needs a GPU: on a CPU the same config trains in fp32 and logs so
# (AmpWhereCUDAOptimWrapperConstructor); `tools/train.py --no-amp` forces fp32.
optim_wrapper = dict(
    type='AmpAGCOptimWrapper',
    constructor='AmpWhereCUDAOptimWrapperConstructor',
    loss_scale='dynamic',
    dtype='float16',
    optimizer=dict(type='AdamW', lr=1e-3 * 2048 / 512, weight_decay=0.025, eps=1e-8, betas=(0.9, 0.999)),
    paramwise_cfg=dict(flat_decay_mult=0.0),
    clip_grad=dict(type='agc', clip_factor=0.02),
)
# timm's CosineLRScheduler (5 warm-up epochs from 1e-6, cosine to 1e-5) stepped at the end of each epoch as
# their loop steps it: one rate per epoch, epoch e at timm's value for e - 1. Only the optimizer lr follows
# --auto-scale-lr; warmup_lr_init and lr_min stay absolute, as in their main.py. The cosine spans
# train_cfg.max_epochs (t_initial defaults to the scheduler's end, which the Runner sets to max_epochs).
param_scheduler = [dict(type='EpochEndCosineLR', warmup_t=5, warmup_lr_init=1e-6, lr_min=1e-5, by_epoch=True)]
train_cfg = dict(by_epoch=True, max_epochs=300, val_interval=1)
val_cfg = dict()
test_cfg = dict()
# --auto-scale-lr rescales lr for another total batch size, keeping lr 1e-3 per 512 images.
auto_scale_lr = dict(base_batch_size=2048)
