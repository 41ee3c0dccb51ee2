"""repvit-mm: RepViT (Revisiting Mobile CNN From ViT Perspective) on OpenMMLab 2.x.

Importing the package (configs do it with ``custom_imports=dict(imports=['repvit_mm'])``) registers the
RepViT backbone, head and the project's transforms, hooks and model wrappers in the OpenMMLab registries,
and makes mmengine load checkpoints with ``torch.load(weights_only=True)`` (see ``utils.safe_checkpoint``).
"""
from .utils import safe_checkpoint as _safe_checkpoint

_safe_checkpoint.install()

from . import classification, datasets, detection, engine, models, segmentation  # noqa: E402,F401  (registration)

__version__ = '0.1.0'
