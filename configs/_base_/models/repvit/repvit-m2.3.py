_base_ = './repvit.py'
model = dict(backbone=dict(arch='m2_3'), head=dict(in_channels=640))
