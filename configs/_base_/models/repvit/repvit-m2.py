_base_ = './repvit.py'
model = dict(backbone=dict(arch='m2'), head=dict(in_channels=512))
