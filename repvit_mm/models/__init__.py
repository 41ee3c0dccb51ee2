"""RepViT models; importing this package registers ``RepViT`` and ``RepViTClsHead`` in mmpretrain's
``MODELS`` (mmdet/mmseg configs use ``type='mmpretrain.RepViT'``)."""

from . import hub  # noqa: F401  (the model index; repvit_mm registers it)
from .backbones import RepViT
from .checkpoints import (
    Checkpoint,
    CheckpointMismatchError,
    convert_checkpoint,
    fit_checkpoint,
    load_checkpoint_into,
    read_checkpoint,
)
from .convert import FORMATS, LAYOUTS, TASK_OF_LAYOUT
from .heads import RepViTClsHead
from .reparam import switch_to_deploy

__all__ = [
    'RepViT',
    'RepViTClsHead',
    'switch_to_deploy',
    'Checkpoint',
    'CheckpointMismatchError',
    'read_checkpoint',
    'fit_checkpoint',
    'load_checkpoint_into',
    'convert_checkpoint',
    'LAYOUTS',
    'FORMATS',
    'TASK_OF_LAYOUT',
]
