# Mask R-CNN + FPN, RepViT-M1.1 backbone, 1x schedule on COCO 2017 instances: the authors' setting
# (their result with mmdet 2.28: box AP 39.8, mask AP 37.2), backbone initialised from their release
# repvit_m1_1_distill_300e.pth. Convert such a file for our backbone first:
#   python tools/convert_checkpoint.py repvit_m1_1_distill_300e.pth checkpoints/repvit-m1.1_in1k.pth \
#       --arch m1_1
# or point model.backbone.init_cfg.checkpoint at an ImageNet classifier trained with configs/classification.
_base_ = [
    '../_base_/models/mask-rcnn_repvit_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',  # 1333x800, flip, bbox + segm CocoMetric
    'mmdet::_base_/schedules/schedule_1x.py',  # 12 epochs; the schedule is the authors', below
    'mmdet::_base_/default_runtime.py',
]

# The authors' optimiser instead of SGD; no gradient clipping.
optim_wrapper = dict(optimizer=dict(_delete_=True, type='AdamW', lr=2e-4, weight_decay=0.05))
# Their schedule_1x (mmdet 2): linear warm-up over 500 iterations from 1e-6 x lr (warmup_ratio=1e-6; mmdet 3
# starts at 1e-3), then x0.1 after epochs 8 and 11. mmcv reaches the full rate at iteration 500 and mmengine's
# LinearLR at iteration end - 1, hence end=501.
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=501),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1),
]
# Their detection launcher passes --seed 0 (one seed for every GPU).
randomness = dict(seed=0)
# 8 GPUs x 2 images; `tools/train.py --auto-scale-lr` keeps the recipe with another total batch size.
train_dataloader = dict(batch_size=2)
auto_scale_lr = dict(base_batch_size=16)
# Checkpoints saved crash-proof (temporary file, flush, rename; old ones removed after the new one is complete).
default_hooks = dict(checkpoint=dict(type='AtomicCheckpointHook'))
