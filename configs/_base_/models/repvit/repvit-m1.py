_base_ = './repvit.py'
model = dict(backbone=dict(arch='m1'), head=dict(in_channels=384))
