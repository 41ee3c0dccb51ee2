"""Detection (mmdet 3) parts of repvit-mm.

The detectors themselves are mmdet's (Mask R-CNN + FPN) with ``mmpretrain.RepViT`` as the backbone, built
from ``configs/detection``; what is ours is imported here for registration: the pre-flight check of COCO
datasets that ``tools/train.py`` / ``tools/test.py`` run before the Runner starts, and image loading that
names the file it cannot decode (as mmdet's ``LoadImageFromFile``).
"""

from . import transforms, visualization  # noqa: F401  (registration)
from .data_checks import check_coco_dataset

__all__ = ['check_coco_dataset']
