# RepViT-M2.3 on ImageNet-1K without distillation (single head, no teacher), 300 epochs.
_base_ = './repvit-m2.3_8xb256-distill-300e_in1k.py'
model = dict(teacher=None, head=dict(distillation=False, distillation_type='none'))
