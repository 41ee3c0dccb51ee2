"""Image loading of the detection configs: ``LoadImageFromFile`` in mmdet's ``TRANSFORMS`` names the file it
cannot decode (:mod:`repvit_mm.utils.image_loading`); the configs keep the type name that ``DetInferencer``
and ``inference_detector`` look for."""

from __future__ import annotations

from mmdet.registry import TRANSFORMS

from ..utils.image_loading import register_checked_loading

register_checked_loading(TRANSFORMS)
