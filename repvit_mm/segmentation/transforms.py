"""Data transforms of the segmentation configs (registered in mmseg's ``TRANSFORMS``).

``AlignResize``           the authors' test-time resize (mmseg 0.x only): keep the aspect ratio, then
                          stretch both sides up to a multiple of 32, so every FPN level lines up.
``CheckedLoadAnnotations`` mmseg's ``LoadAnnotations`` that names an unreadable label map or one whose size
                          differs from its image, and refuses label values outside the classes.
``LoadImageFromFile``     mmcv's, naming the file it cannot decode (:mod:`repvit_mm.utils.image_loading`).
"""

from __future__ import annotations

import math

import mmcv
import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.datasets.transforms import LoadAnnotations
from mmseg.registry import TRANSFORMS

from ..utils.errors import UserInputError
from ..utils.image_loading import register_checked_loading, unreadable
from .labels import label_range_error

register_checked_loading(TRANSFORMS)


@TRANSFORMS.register_module()
class AlignResize(BaseTransform):
    """Resize to fit ``scale`` (keeping the aspect ratio), then round both sides up to ``size_divisor``.

    With ``scale=(2048, 512)`` a 683x512 ADE20K image becomes 704x512 and a 512x384 one 704x512
    (683x512, aligned). Unlike padding, nothing has to be cropped off the prediction afterwards: the
    segmentor resizes its output to ``ori_shape``. The image is resized once, straight to the aligned
    size (the authors' mmseg 0.x version rescales and then stretches, interpolating twice).

    Required keys: ``img``. Modified keys: ``img``, every key in ``seg_fields`` (nearest neighbour).
    Added keys: ``img_shape`` (h, w), ``scale_factor`` (w_scale, h_scale) of the whole resize,
    ``keep_ratio``.

    Args:
        scale: (w, h) bound: with ``keep_ratio`` the long side fits ``max(scale)`` and the short side
            ``min(scale)``, whichever is tighter; without it the image is resized to (w, h).
        keep_ratio: keep the aspect ratio before aligning (the authors' test setting).
        size_divisor: both output sides are the smallest multiples of this that are at least the size
            the resize asked for.
        interpolation: image interpolation (mmcv names); label maps always use ``'nearest'``.
        backend: ``'cv2'`` or ``'pillow'``, as in mmcv's ``Resize``.
    """

    def __init__(
        self,
        scale: tuple[int, int],
        keep_ratio: bool = True,
        size_divisor: int = 32,
        interpolation: str = 'bilinear',
        backend: str = 'cv2',
    ) -> None:
        super().__init__()
        if not (
            isinstance(scale, (tuple, list)) and len(scale) == 2 and all(isinstance(s, int) and s > 0 for s in scale)
        ):
            raise ValueError(f'AlignResize: scale must be two positive ints (w, h), got {scale}')
        if not isinstance(size_divisor, int) or size_divisor < 1:
            raise ValueError(f'AlignResize: size_divisor must be a positive int, got {size_divisor}')
        self.scale = tuple(scale)
        self.keep_ratio = keep_ratio
        self.size_divisor = size_divisor
        self.interpolation = interpolation
        self.backend = backend

    def target_size(self, width: int, height: int) -> tuple[int, int]:
        """The (w, h) an image of ``width`` x ``height`` is resized to."""
        if self.keep_ratio:
            width, height = mmcv.rescale_size((width, height), self.scale)
        else:
            width, height = self.scale
        return self._align(width), self._align(height)

    def _align(self, length: int) -> int:
        return max(1, math.ceil(length / self.size_divisor)) * self.size_divisor

    def transform(self, results: dict) -> dict:
        height, width = results['img'].shape[:2]
        new_w, new_h = self.target_size(width, height)
        results['img'] = mmcv.imresize(
            results['img'], (new_w, new_h), interpolation=self.interpolation, backend=self.backend
        )
        for key in results.get('seg_fields', []):
            results[key] = mmcv.imresize(results[key], (new_w, new_h), interpolation='nearest', backend=self.backend)
        results['img_shape'] = (new_h, new_w)
        results['scale_factor'] = (new_w / width, new_h / height)
        results['keep_ratio'] = self.keep_ratio
        return results

    def __repr__(self) -> str:
        return (
            f'{self.__class__.__name__}(scale={self.scale}, keep_ratio={self.keep_ratio}, '
            f'size_divisor={self.size_divisor}, interpolation={self.interpolation!r}, '
            f'backend={self.backend!r})'
        )


@TRANSFORMS.register_module()
class CheckedLoadAnnotations(LoadAnnotations):
    """mmseg's ``LoadAnnotations`` plus a check that every label is a class index or ``ignore_index`` and
    that the label map has the size of its image; an unreadable png is named in one line.

    Without it an out-of-range label stops training with an indexing error that names no file (or a
    CUDA device-side assert), and in evaluation ``IoUMetric`` silently drops those pixels. Checking
    the loaded map costs one ``bincount`` per image, so unlike the pre-flight scan of the tools
    (:mod:`.data_checks`, capped) it covers every annotation of a dataset as large as ADE20K.

    Args:
        num_classes: number of classes of the dataset (after ``reduce_zero_label`` and ``label_map``).
        ignore_index: the label ignored by loss and metric (the dataset's, 255 by default).
        **kwargs: ``LoadAnnotations`` arguments (``imdecode_backend``, ``backend_args``;
            ``reduce_zero_label`` is better left to the dataset).
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.ignore_index = ignore_index

    def transform(self, results: dict) -> dict:
        # An image handed to mmseg's inferencers has no annotation (they drop only a step named
        # 'LoadAnnotations'); a dataset sample always has its seg_map_path.
        if 'seg_map_path' not in results:
            return results
        return super().transform(results)

    def _load_seg_map(self, results: dict) -> None:
        path = results['seg_map_path']
        try:
            super()._load_seg_map(results)
        except Exception:  # cv2/PIL decoder errors, a missing file
            raise unreadable(path, 'annotation') from None
        labels = results['gt_seg_map']
        if labels.ndim != 2:
            raise UserInputError(
                f'{path}: label map has shape {labels.shape}; expected one channel '
                '(a grayscale or palette png of class indices)'
            )
        image_shape = results.get('ori_shape')
        if image_shape is not None and tuple(labels.shape) != tuple(image_shape[:2]):
            raise UserInputError(
                f'annotation {path} is {labels.shape[1]}x{labels.shape[0]} but its image '
                f'{results.get("img_path")} is {image_shape[1]}x{image_shape[0]} (width x height); '
                'they must match'
            )
        counts = np.bincount(labels.ravel(), minlength=256)
        counts[: self.num_classes] = 0
        if self.ignore_index < counts.size:
            counts[self.ignore_index] = 0
        bad = np.flatnonzero(counts)
        if bad.size:
            # Report what is in the file: reduce_zero_label subtracted 1 from every kept value.
            raw = bad + 1 if self.reduce_zero_label else bad
            raise label_range_error(path, raw, self.num_classes, bool(self.reduce_zero_label), self.ignore_index)

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f', num_classes={self.num_classes}, ignore_index={self.ignore_index})'
