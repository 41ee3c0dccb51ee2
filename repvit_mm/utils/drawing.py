"""The size predictions are drawn at: small images enlarged so that labels fit (tools/demo.py, --show-dir)."""

from __future__ import annotations

import mmcv
import numpy as np

__all__ = ['MIN_SIDE', 'enlarged']

MIN_SIDE = 256  # short side of a drawn prediction, at least: a 64 px image has no room for labels


def enlarged(image: np.ndarray) -> tuple[np.ndarray, float, tuple[int, int]]:
    """``(image, scale, (height, width))``: the image resized (bicubic) to a short side of :data:`MIN_SIDE`
    if it is shorter, else as it is with scale 1."""
    scale = MIN_SIDE / min(image.shape[:2])
    if scale <= 1:
        return image, 1.0, image.shape[:2]
    size = (round(image.shape[0] * scale), round(image.shape[1] * scale))
    return mmcv.imresize(image, size[::-1], interpolation='bicubic'), scale, size
