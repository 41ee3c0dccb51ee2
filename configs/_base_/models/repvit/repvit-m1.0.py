_base_ = './repvit.py'
model = dict(backbone=dict(arch='m1_0'), head=dict(in_channels=448))
