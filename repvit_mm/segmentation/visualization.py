"""mmseg's ``SegLocalVisualizer`` for label maps of a single pixel.

mmseg 1.2.2 draws a prediction with ``mask[sem_seg[0] == label, :] = color``: a numpy array indexed by a
torch bool tensor. A tensor of one element is taken as the integer index ``True`` (1), so a 1x1 image ends in
``IndexError`` in ``MMSegInferencer(out_dir=...)`` and ``tools/test.py --show-dir``. Ours hands the label map
over as a numpy array (the same drawing), and is registered under the upstream name in mmseg's
``VISUALIZERS`` so that the configs keep ``type='SegLocalVisualizer'``.
"""

from __future__ import annotations

from mmengine.structures import PixelData
from mmseg.registry import VISUALIZERS
from mmseg.visualization import SegLocalVisualizer

__all__ = ['NumpySegLocalVisualizer']


class NumpySegLocalVisualizer(SegLocalVisualizer):
    def _draw_sem_seg(self, image, sem_seg: PixelData, classes, palette, with_labels=True):
        as_numpy = PixelData(data=sem_seg.cpu().numpy().data)
        return super()._draw_sem_seg(image, as_numpy, classes, palette, with_labels)


VISUALIZERS.register_module(name='SegLocalVisualizer', module=NumpySegLocalVisualizer, force=True)
