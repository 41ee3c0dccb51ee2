"""Image loading of the classification configs: mmcv's ``LoadImageFromFile`` that names the file it cannot
decode (:mod:`repvit_mm.utils.image_loading`), registered in mmpretrain's ``TRANSFORMS`` as
``LoadImageFromFile`` (what the configs and mmpretrain's inferencer use) and ``LoadImageFromFileOrFail``."""

from __future__ import annotations

import mmpretrain.datasets.transforms  # noqa: F401  (registers mmcv's LoadImageFromFile first; replaced below)
from mmpretrain.registry import TRANSFORMS

from ..utils.image_loading import LoadImageFromFileOrFail, UnreadableImageError, register_checked_loading

__all__ = ['LoadImageFromFileOrFail', 'UnreadableImageError']

TRANSFORMS.register_module(module=LoadImageFromFileOrFail, force=True)
register_checked_loading(TRANSFORMS, replace=True)
