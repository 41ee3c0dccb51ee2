# Your own categories, COCO-json layout: data/my_coco/{train,val}/*.jpg + annotations/{train,val}.json.
# What changes from the Shapes detector it starts from: the data root, ann files and image folders, the
# class names (metainfo; the COCO json's category names must match them, in any id order), both RoI
# heads' num_classes, the evaluator's ann_file, and the starting weights: the backbone from the authors'
# ImageNet RepViT-M0.9 (converted when loaded). The widths stay the Shapes detector's (128-channel FPN,
# RPN and RoI heads: 3.35 GMACs at 128x128 where COCO's widths cost 54.7), sized for a CPU. The authors
# released no M0.9 COCO detector: to start from one they released (M1.1, M1.5, M2.3), inherit that COCO
# config instead, as docs/usage.md "Your own data" shows.
_base_ = ['../detection/mask-rcnn_repvit-m0.9_fpn_shapes.py']

data_root = 'data/my_coco/'
metainfo = dict(classes=('coin', 'tile'), palette=[(255, 128, 0), (0, 128, 255)])
num_classes = len(metainfo['classes'])

model = dict(
    backbone=dict(init_cfg=dict(
        type='Pretrained', prefix='backbone.',
        checkpoint='https://github.com/THU-MIG/RepViT/releases/download/v1.0/repvit_m0_9_distill_300e.pth')),
    roi_head=dict(bbox_head=dict(num_classes=num_classes), mask_head=dict(num_classes=num_classes)))
train_dataloader = dict(dataset=dict(data_root=data_root, metainfo=metainfo, ann_file='annotations/train.json',
                                     data_prefix=dict(img='train/')))
val_dataloader = dict(dataset=dict(data_root=data_root, metainfo=metainfo, ann_file='annotations/val.json',
                                   data_prefix=dict(img='val/')))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/val.json')
test_evaluator = val_evaluator
