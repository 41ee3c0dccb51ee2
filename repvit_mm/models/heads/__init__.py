from .repvit_head import RepViTClsHead

__all__ = ['RepViTClsHead']
