"""ImageNet classification with the authors' recipe: DeiT distillation, AGC, data checks, released weights."""
from . import agc, checks, distill, transforms  # noqa: F401  (registration)
from .agc import AGCOptimWrapper, AmpAGCOptimWrapper
from .distill import DistillationImageClassifier, build_teacher, load_teacher_weights
from .transforms import LoadImageFromFileOrFail, UnreadableImageError

__all__ = ['AGCOptimWrapper', 'AmpAGCOptimWrapper', 'DistillationImageClassifier', 'build_teacher',
           'load_teacher_weights', 'LoadImageFromFileOrFail',
           'UnreadableImageError']
