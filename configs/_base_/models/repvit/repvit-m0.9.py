_base_ = './repvit.py'
model = dict(backbone=dict(arch='m0_9'), head=dict(in_channels=384))
