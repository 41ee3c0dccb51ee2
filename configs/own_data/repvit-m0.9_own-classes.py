# Your own classes, ImageNet-folder layout: data/my_classes/{train,val}/<class name>/*.jpg. What changes
# from the Shapes classifier it starts from: the data root, the class names, the head's num_classes, and
# the backbone's starting weights (the authors' ImageNet RepViT-M0.9, downloaded once and converted when
# loaded; a checkpoint of ours or a converted file works too). The head starts fresh (prefix='backbone.').
_base_ = ['../classification/repvit-m0.9_shapes-64px.py']

data_root = 'data/my_classes'
classes = ('disc', 'wedge')

model = dict(
    backbone=dict(init_cfg=dict(
        type='Pretrained', prefix='backbone.',
        checkpoint='https://github.com/THU-MIG/RepViT/releases/download/v1.0/repvit_m0_9_distill_300e.pth')),
    head=dict(num_classes=len(classes)))
data_preprocessor = dict(num_classes=len(classes))
# ann_file='': the class folders are the labels (the Shapes data also lists its images in meta/*.txt)
train_dataloader = dict(dataset=dict(data_root=data_root, classes=classes, ann_file=''))
val_dataloader = dict(dataset=dict(data_root=data_root, classes=classes, ann_file=''))
test_dataloader = val_dataloader
