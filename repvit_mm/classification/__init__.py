"""ImageNet classification with the authors' recipe: DeiT distillation, AGC, random erasing, data checks,
released weights."""

from . import agc, data_checks, distill, erasing, transforms, visualization  # noqa: F401  (registration)
from .agc import AGCOptimWrapper, AmpAGCOptimWrapper
from .distill import DistillationImageClassifier, build_teacher, load_teacher_weights
from .erasing import ErasingClsDataPreprocessor
from .transforms import LoadImageFromFileOrFail, UnreadableImageError

__all__ = [
    'AGCOptimWrapper',
    'AmpAGCOptimWrapper',
    'DistillationImageClassifier',
    'ErasingClsDataPreprocessor',
    'build_teacher',
    'load_teacher_weights',
    'LoadImageFromFileOrFail',
    'UnreadableImageError',
]
