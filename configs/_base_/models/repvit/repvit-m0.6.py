_base_ = './repvit.py'
model = dict(backbone=dict(arch='m0_6'), head=dict(in_channels=320))
