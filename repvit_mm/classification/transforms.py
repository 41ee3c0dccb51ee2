"""Image loading of the classification configs: mmcv's ``LoadImageFromFile`` that names the file it cannot
decode (:mod:`repvit_mm.utils.image_loading`), registered in mmpretrain's ``TRANSFORMS`` as
``LoadImageFromFile`` (what the configs use) and ``LoadImageFromFileOrFail``. mmpretrain's
``ImageClassificationInferencer`` drops that step and reads files with ``mmcv.imread`` itself (an empty file
ends in a bare ``cv2.error``): its module's ``imread`` is replaced by :func:`checked_imread`."""

from __future__ import annotations

import os

import mmcv
import mmpretrain.apis.image_classification
import mmpretrain.datasets.transforms  # noqa: F401  (registers mmcv's LoadImageFromFile first; replaced below)
import numpy as np
from mmpretrain.registry import TRANSFORMS

from ..utils.image_loading import LoadImageFromFileOrFail, UnreadableImageError, register_checked_loading, unreadable

__all__ = ['LoadImageFromFileOrFail', 'UnreadableImageError', 'checked_imread']


def checked_imread(img_or_path, *args, **kwargs) -> np.ndarray:
    """``mmcv.imread`` that raises :class:`UnreadableImageError` naming a file it cannot decode."""
    try:
        img = mmcv.imread(img_or_path, *args, **kwargs)
    except Exception:  # cv2.error on an empty file, OSError, ...
        if not isinstance(img_or_path, (str, os.PathLike)):
            raise
        raise unreadable(str(img_or_path)) from None
    if img is None and isinstance(img_or_path, (str, os.PathLike)):
        raise unreadable(str(img_or_path))
    return img


mmpretrain.apis.image_classification.imread = checked_imread

TRANSFORMS.register_module(module=LoadImageFromFileOrFail, force=True)
register_checked_loading(TRANSFORMS, replace=True)
