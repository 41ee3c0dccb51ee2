# Your own categories, COCO-json layout: data/my_coco/{train,val}/*.jpg + annotations/{train,val}.json.
# What changes from the Shapes detector it starts from: the data root, ann files and image folders, the
# class names (metainfo; the COCO json's category names must match them, in any id order), both RoI
# heads' num_classes, the evaluator's ann_file, and the starting weights: the backbone from the authors'
# ImageNet RepViT-M0.9 (converted when loaded), or a whole detector trained on COCO with
# `--cfg-options load_from=CKPT` (its class-specific head layers do not fit and start fresh).
_base_ = ['../detection/mask-rcnn_repvit-m0.9_fpn_shapes.py']

data_root = 'data/my_coco/'
metainfo = dict(classes=('coin', 'tile'), palette=[(255, 128, 0), (0, 128, 255)])
num_classes = len(metainfo['classes'])

model = dict(
    backbone=dict(init_cfg=dict(
        type='Pretrained', prefix='backbone.',
        checkpoint='https://github.com/THU-MIG/RepViT/releases/download/v1.0/repvit_m0_9_distill_300e.pth')),
    # COCO's FPN, RPN and RoI head widths (the Shapes detector's are lighter), so that the authors' COCO
    # detector loads with `load_from` and only its class-specific layers start fresh
    neck=dict(out_channels=256),
    rpn_head=dict(in_channels=256, feat_channels=256),
    roi_head=dict(bbox_roi_extractor=dict(out_channels=256),
                  bbox_head=dict(in_channels=256, num_classes=num_classes, fc_out_channels=1024),
                  mask_roi_extractor=dict(out_channels=256),
                  mask_head=dict(in_channels=256, num_classes=num_classes, num_convs=4, conv_out_channels=256)))
train_dataloader = dict(dataset=dict(data_root=data_root, metainfo=metainfo, ann_file='annotations/train.json',
                                     data_prefix=dict(img='train/')))
val_dataloader = dict(dataset=dict(data_root=data_root, metainfo=metainfo, ann_file='annotations/val.json',
                                   data_prefix=dict(img='val/')))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/val.json')
test_evaluator = val_evaluator
