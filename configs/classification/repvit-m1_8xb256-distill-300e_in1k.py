# RepViT-M1 on ImageNet-1K, the authors' recipe: 300 epochs, hard distillation from RegNetY-16GF.
_base_ = [
    '../_base_/models/repvit/repvit-m1.py',
    '../_base_/datasets/imagenet_bs256_repvit.py',
    '../_base_/schedules/repvit_bs2048_adamw_300e.py',
    '../_base_/repvit_runtime.py',
]
