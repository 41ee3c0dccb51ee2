_base_ = './repvit.py'
model = dict(backbone=dict(arch='m3'), head=dict(in_channels=512))
