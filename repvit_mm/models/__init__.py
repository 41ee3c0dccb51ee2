"""RepViT models; importing this package registers ``RepViT`` and ``RepViTClsHead`` in mmpretrain's
``MODELS`` (mmdet/mmseg configs use ``type='mmpretrain.RepViT'``)."""

from . import hub  # noqa: F401  (the model index; repvit_mm registers it)
from .backbones import RepViT
from .convert import convert_checkpoint, convert_official, convert_timm
from .heads import RepViTClsHead
from .reparam import switch_to_deploy

__all__ = ['RepViT', 'RepViTClsHead', 'switch_to_deploy', 'convert_checkpoint', 'convert_official', 'convert_timm']
