"""Adaptive gradient clipping (AGC, Brock et al. 2021) as mmengine optimizer wrappers.

The authors train RepViT with timm's ``--clip-grad 0.02 --clip-mode agc``: before each optimizer step
every parameter's gradient is rescaled, unit-wise (per output row/filter), so that its norm is at most
``clip_factor`` times the norm of the weights (:func:`timm.utils.adaptive_clip_grad`). In a config::

    optim_wrapper = dict(type='AGCOptimWrapper', clip_grad=dict(type='agc', clip_factor=0.02), ...)

``AmpAGCOptimWrapper`` does the same with mixed precision (gradients are unscaled before clipping).
``clip_grad`` with ``type='norm'``/``'value'`` behaves as in mmengine's wrappers.
"""

from __future__ import annotations

from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS

from ..utils.errors import UserInputError

__all__ = ['AGCOptimWrapper', 'AmpAGCOptimWrapper']

_AGC_ARGS = ('clip_factor', 'eps', 'norm_type')


class _AGCMixin:
    """Turns ``clip_grad=dict(type='agc', ...)`` into timm's adaptive clipping; ``type`` defaults to agc."""

    def __init__(self, *args, clip_grad: dict | None = None, **kwargs) -> None:
        agc = None
        if clip_grad is not None and clip_grad.get('type', 'agc') == 'agc':
            agc = {k: v for k, v in clip_grad.items() if k != 'type'}
            unknown = sorted(set(agc) - set(_AGC_ARGS))
            if unknown or 'clip_factor' not in agc or not agc['clip_factor'] > 0:
                raise UserInputError(
                    f'optim_wrapper.clip_grad: agc takes clip_factor (> 0), eps, norm_type; got {dict(clip_grad)}'
                )
            clip_grad = None
        super().__init__(*args, clip_grad=clip_grad, **kwargs)
        if agc is not None:
            from timm.utils import adaptive_clip_grad

            # mmengine's step() clips when clip_grad_kwargs is non-empty (after unscaling, under AMP).
            self.clip_func = adaptive_clip_grad
            self.clip_grad_kwargs = agc
            self.grad_name = 'agc'  # adaptive_clip_grad returns no norm, so nothing is logged under it


@OPTIM_WRAPPERS.register_module()
class AGCOptimWrapper(_AGCMixin, OptimWrapper):
    """:class:`mmengine.optim.OptimWrapper` with adaptive gradient clipping."""


@OPTIM_WRAPPERS.register_module()
class AmpAGCOptimWrapper(_AGCMixin, AmpOptimWrapper):
    """:class:`mmengine.optim.AmpOptimWrapper` with adaptive gradient clipping."""
