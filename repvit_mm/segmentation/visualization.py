"""mmseg's ``SegLocalVisualizer`` for label maps of a single pixel.

mmseg 1.2.2 draws a prediction with ``mask[sem_seg[0] == label, :] = color``: a numpy array indexed by a
torch bool tensor. A tensor of one element is taken as the integer index ``True`` (1), so a 1x1 image ends in
``IndexError`` in ``MMSegInferencer(out_dir=...)`` and ``tools/test.py --show-dir``. Ours hands the label map
over as a numpy array (the same drawing), and is registered under the upstream name in mmseg's
``VISUALIZERS`` so that the configs keep ``type='SegLocalVisualizer'``.

``EnlargingSegLocalVisualizer`` (``tools/test.py --show-dir``) first enlarges a small image and its label maps
to a short side of at least :data:`MIN_SIDE` pixels (as ``tools/demo.py`` draws), where class names fit.
"""

from __future__ import annotations

import torch
from mmengine.structures import PixelData
from mmseg.registry import VISUALIZERS
from mmseg.visualization import SegLocalVisualizer

from ..utils.drawing import MIN_SIDE, enlarged

__all__ = ['EnlargingSegLocalVisualizer', 'MIN_SIDE', 'NumpySegLocalVisualizer']


class NumpySegLocalVisualizer(SegLocalVisualizer):
    def _draw_sem_seg(self, image, sem_seg: PixelData, classes, palette, with_labels=True):
        as_numpy = PixelData(data=sem_seg.cpu().numpy().data)
        return super()._draw_sem_seg(image, as_numpy, classes, palette, with_labels)


VISUALIZERS.register_module(name='SegLocalVisualizer', module=NumpySegLocalVisualizer, force=True)


@VISUALIZERS.register_module()
class EnlargingSegLocalVisualizer(NumpySegLocalVisualizer):
    def add_datasample(self, name, image, data_sample=None, *args, **kwargs):
        image, scale, size = enlarged(image)
        if scale > 1:
            if data_sample is not None:
                data_sample = data_sample.clone()
                for key in ('gt_sem_seg', 'pred_sem_seg'):
                    if key in data_sample:
                        data = data_sample.get(key).data
                        resized = torch.nn.functional.interpolate(data[None].float(), size=size, mode='nearest')[0]
                        data_sample.set_field(PixelData(data=resized.to(data.dtype)), key)
        return super().add_datasample(name, image, data_sample, *args, **kwargs)
