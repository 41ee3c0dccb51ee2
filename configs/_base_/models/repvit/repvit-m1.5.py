_base_ = './repvit.py'
model = dict(backbone=dict(arch='m1_5'), head=dict(in_channels=512))
