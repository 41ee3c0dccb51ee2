from .repvit import RepViT

__all__ = ['RepViT']
