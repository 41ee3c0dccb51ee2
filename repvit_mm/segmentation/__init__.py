"""Semantic segmentation (mmseg 1.x) parts of repvit-mm.

The segmentor is mmseg's Semantic FPN (``EncoderDecoder`` + ``FPN`` + ``FPNHead``) with
``mmpretrain.RepViT`` as the backbone, built from ``configs/segmentation``. Importing this package
registers what is ours: the ``AlignResize`` and ``CheckedLoadAnnotations`` transforms (mmseg
``TRANSFORMS``), a ``SegLocalVisualizer`` that draws 1x1 predictions too (mmseg ``VISUALIZERS``) and the
pre-flight data check the tools run on ADE20K-style datasets.
"""

from .data_checks import LABEL_SCAN_LIMIT, check_seg_dataset
from .transforms import AlignResize, CheckedLoadAnnotations
from .visualization import NumpySegLocalVisualizer

__all__ = ['AlignResize', 'CheckedLoadAnnotations', 'LABEL_SCAN_LIMIT', 'NumpySegLocalVisualizer', 'check_seg_dataset']
