# The authors' 450-epoch schedule: the 300-epoch recipe with --epochs 450 (the cosine spans 450 epochs).
_base_ = './repvit_bs2048_adamw_300e.py'
train_cfg = dict(max_epochs=450)
