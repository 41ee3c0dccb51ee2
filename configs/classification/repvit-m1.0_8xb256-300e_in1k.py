# RepViT-M1.0 on ImageNet-1K without distillation (single head, no teacher), 300 epochs.
_base_ = './repvit-m1.0_8xb256-distill-300e_in1k.py'
model = dict(teacher=None, head=dict(distillation=False, distillation_type='none'))
