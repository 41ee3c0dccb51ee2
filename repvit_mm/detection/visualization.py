"""mmdet's ``DetLocalVisualizer`` for ``tools/test.py --show-dir``: small images enlarged first.

A 128 px Shapes image has no room for 'class score' labels: the image is enlarged to a short side of at
least :data:`MIN_SIDE` pixels (as ``tools/demo.py`` draws) and the boxes and masks of the ground truth and
the prediction with it, then mmdet draws as always.
"""

from __future__ import annotations

import mmcv
import numpy as np
import torch
from mmdet.registry import VISUALIZERS
from mmdet.visualization import DetLocalVisualizer
from mmengine.structures import InstanceData

from ..utils.drawing import MIN_SIDE, enlarged

__all__ = ['EnlargingDetLocalVisualizer', 'MIN_SIDE']


def _scaled(instances: InstanceData, scale: float, size: tuple[int, int]) -> InstanceData:
    instances = instances.clone()
    if 'bboxes' in instances:
        boxes = instances.bboxes
        instances.bboxes = boxes.rescale_([scale, scale]) if hasattr(boxes, 'rescale_') else boxes * scale
    if 'masks' in instances:
        masks = instances.masks
        if isinstance(masks, torch.Tensor):
            resized = torch.nn.functional.interpolate(masks[None].float(), size=size, mode='nearest')[0]
            instances.masks = resized.to(masks.dtype)
        elif isinstance(masks, np.ndarray):
            instances.masks = np.stack([mmcv.imresize(m, size[::-1], interpolation='nearest') for m in masks])
        else:  # BitmapMasks / PolygonMasks
            instances.masks = masks.resize(size)
    return instances


@VISUALIZERS.register_module()
class EnlargingDetLocalVisualizer(DetLocalVisualizer):
    def add_datasample(self, name, image, data_sample=None, *args, **kwargs):
        image, scale, size = enlarged(image)
        if scale > 1:
            if data_sample is not None:
                data_sample = data_sample.clone()
                for key in ('gt_instances', 'pred_instances'):
                    if key in data_sample:
                        data_sample.set_field(_scaled(data_sample.get(key), scale, size), key)
        return super().add_datasample(name, image, data_sample, *args, **kwargs)
