"""Adaptive gradient clipping (AGC, Brock et al. 2021) as mmengine optimizer wrappers.

The authors train RepViT with timm's ``--clip-grad 0.02 --clip-mode agc``: before each optimizer step
every parameter's gradient is rescaled, unit-wise (per output row/filter), so that its norm is at most
``clip_factor`` times the norm of the weights (:func:`timm.utils.adaptive_clip_grad`). In a config::

    optim_wrapper = dict(type='AGCOptimWrapper', clip_grad=dict(type='agc', clip_factor=0.02), ...)

``AmpAGCOptimWrapper`` does the same with mixed precision (gradients are unscaled before clipping).
``clip_grad`` with ``type='norm'``/``'value'`` behaves as in mmengine's wrappers.

The wrappers clip with :func:`adaptive_clip_grad_`: timm's numbers, bit for bit, with about a third of the
kernel launches (timm launches ten small kernels per parameter tensor, ~3,800 for RepViT-M0.9's 381; this
one two norms and one multiply per tensor, plus five multi-tensor operations).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS

from ..utils.errors import UserInputError

__all__ = ['AGCOptimWrapper', 'AmpAGCOptimWrapper', 'adaptive_clip_grad_']

_AGC_ARGS = ('clip_factor', 'eps', 'norm_type')
_MIN_GRAD_NORM = 1e-6  # timm's floor on the gradient norm it divides by


@torch.no_grad()
def adaptive_clip_grad_(
    parameters: Iterable[torch.Tensor] | torch.Tensor, clip_factor: float = 0.01, eps: float = 1e-3, norm_type=2.0
) -> None:
    """:func:`timm.utils.adaptive_clip_grad` with the same results in fewer kernels.

    timm computes, per tensor, ``max_norm = clamp(norm(w), eps) * clip_factor`` and replaces the gradient
    by ``where(norm(g) < max_norm, g, g * (max_norm / clamp(norm(g), 1e-6)))`` (norms unit-wise: per output
    row/filter, whole-tensor for 1-D tensors). Here the two norms are timm's own per-tensor calls, the
    arithmetic on the (small) norm tensors runs as multi-tensor ``torch._foreach_*`` operations, and the
    ``where`` becomes ``g *= min(max_norm / clamp(norm(g), 1e-6), 1)``: when ``norm(g) < max_norm`` that
    factor is exactly 1 (a quotient of floats ``a / b`` with ``a > b`` never rounds below 1, and
    ``max_norm >= eps * clip_factor > 1e-6``), so ``g`` is multiplied by 1 and unchanged; otherwise the
    factor is timm's. With ``eps * clip_factor <= 1e-6`` that argument fails and timm's function runs.
    """
    from timm.utils.agc import adaptive_clip_grad, unitwise_norm

    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    params = [p for p in parameters if p.grad is not None]
    if not params:
        return
    if not eps * clip_factor > _MIN_GRAD_NORM:
        adaptive_clip_grad(params, clip_factor=clip_factor, eps=eps, norm_type=norm_type)
        return
    grads = [p.grad for p in params]  # no_grad: no .detach() calls needed, timm's make two per tensor
    max_norms = [unitwise_norm(p, norm_type=norm_type) for p in params]
    grad_norms = [unitwise_norm(g, norm_type=norm_type) for g in grads]
    torch._foreach_clamp_min_(max_norms, eps)
    torch._foreach_mul_(max_norms, clip_factor)
    torch._foreach_clamp_min_(grad_norms, _MIN_GRAD_NORM)
    torch._foreach_div_(max_norms, grad_norms)  # now timm's clipping factor, > 1 where it keeps g
    torch._foreach_clamp_max_(max_norms, 1.0)
    torch._foreach_mul_(grads, max_norms)  # broadcast per unit


class _AGCMixin:
    """Turns ``clip_grad=dict(type='agc', ...)`` into timm's adaptive clipping (:func:`adaptive_clip_grad_`);
    ``type`` defaults to agc."""

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
            # mmengine's step() clips when clip_grad_kwargs is non-empty (after unscaling, under AMP).
            self.clip_func = adaptive_clip_grad_
            self.clip_grad_kwargs = agc
            self.grad_name = 'agc'  # adaptive_clip_grad returns no norm, so nothing is logged under it


@OPTIM_WRAPPERS.register_module()
class AGCOptimWrapper(_AGCMixin, OptimWrapper):
    """:class:`mmengine.optim.OptimWrapper` with adaptive gradient clipping."""


@OPTIM_WRAPPERS.register_module()
class AmpAGCOptimWrapper(_AGCMixin, AmpOptimWrapper):
    """:class:`mmengine.optim.AmpOptimWrapper` with adaptive gradient clipping."""
