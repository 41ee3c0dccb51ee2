"""mmpretrain's ``UniversalVisualizer`` for ``tools/test.py --show-dir``: small images enlarged first.

A Shapes test image reaches the visualization hook at 64 px, where the class and score text does not fit;
the picture is drawn with its short side at least :data:`MIN_SIDE` pixels (as ``tools/demo.py`` draws),
through mmpretrain's own ``rescale_factor``.
"""

from __future__ import annotations

from mmpretrain.registry import VISUALIZERS
from mmpretrain.visualization import UniversalVisualizer

from ..utils.drawing import MIN_SIDE

__all__ = ['EnlargingUniversalVisualizer', 'MIN_SIDE']


@VISUALIZERS.register_module()
class EnlargingUniversalVisualizer(UniversalVisualizer):
    def visualize_cls(self, image, data_sample, *args, rescale_factor=None, resize=None, **kwargs):
        if rescale_factor is None and resize is None:
            rescale_factor = max(1.0, MIN_SIDE / min(image.shape[:2]))
        return super().visualize_cls(image, data_sample, *args, rescale_factor=rescale_factor, resize=resize, **kwargs)
