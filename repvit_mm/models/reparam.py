"""Structural reparameterization (training structure -> fused inference structure).

The RepViT backbone and classification head have a ``switch_to_deploy()`` method that folds their
BatchNorms and parallel branches into plain convolutions / linear layers, in place: every fusable block
(``ConvBN``, ``RepVGGDW``, ``BNLinear``) is replaced by the bare ``nn.Conv2d`` / ``nn.Linear`` its
``fuse()`` returns, the structure a ``deploy=True`` build has. :func:`switch_to_deploy` applies that to a
whole model: an mmpretrain classifier, an mmdet detector, an mmseg segmentor, or anything else whose
sub-modules have ``switch_to_deploy()``.

A reparameterized backbone or head is inference-only: its ``train(True)`` raises :class:`RuntimeError`
(``eval()`` / ``train(False)`` keep working), so a fused model cannot be fine-tuned by accident.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from mmengine.logging import print_log
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ['switch_to_deploy', 'fuse_bn', 'DEPLOY_TRAIN_ERROR']

DEPLOY_TRAIN_ERROR = (
    '{name} has been reparameterized (deploy mode: BatchNorms and branches are fused into single '
    'convolutions/linear layers) and is inference-only; train(True) is refused because training the '
    'fused structure would silently change the model. Use eval()/train(False) for inference, or build '
    'the model with deploy=False and load the unfused checkpoint to train.'
)


def fuse_bn(weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold an (eval-mode) BatchNorm that follows a conv/linear with ``weight``/``bias`` into them.

    ``weight`` has the output channels first (conv ``(O, I, kh, kw)`` or linear ``(O, I)``);
    ``bias`` may be ``None``. Returns the fused ``(weight, bias)``.
    """
    if not isinstance(bn, _BatchNorm) or not bn.track_running_stats or bn.running_var is None:
        raise RuntimeError(
            f'cannot fuse {type(bn).__name__}: only BatchNorm layers with running '
            'statistics (BN, SyncBN) can be folded into the preceding layer'
        )
    std = (bn.running_var + bn.eps).sqrt()
    scale = bn.weight / std if bn.affine else 1.0 / std
    shift = bn.bias if bn.affine else torch.zeros_like(std)
    if bias is None:
        bias = torch.zeros_like(std)
    fused_w = weight * scale.reshape(-1, *([1] * (weight.dim() - 1)))
    fused_b = shift + (bias - bn.running_mean) * scale
    return fused_w, fused_b


def _convert(module: nn.Module) -> int:
    """Top-down: a module with ``switch_to_deploy`` converts its own sub-tree; else recurse."""
    count = 0
    for child in module.children():
        fn = getattr(child, 'switch_to_deploy', None)
        if callable(fn):
            fn()
            count += 1
        else:
            count += _convert(child)
    return count


@torch.no_grad()
def switch_to_deploy(model: nn.Module) -> nn.Module:
    """Reparameterize ``model`` in place for inference and put it in eval mode.

    Calls ``switch_to_deploy()`` on the outermost sub-modules that have one (a RepViT backbone or
    head converts all of its blocks itself), so it works on an mmpretrain ``ImageClassifier``, an mmdet
    Mask R-CNN, an mmseg ``EncoderDecoder`` or a bare backbone alike. In eval mode the outputs are
    unchanged up to float rounding. Afterwards ``model.train()`` raises (the model is inference-only).

    Args:
        model: the model to convert (also accepted: a module that itself has ``switch_to_deploy``).

    Returns:
        The same ``model`` object, converted and in eval mode.
    """
    fn = getattr(model, 'switch_to_deploy', None)
    if callable(fn):
        fn()
        count = 1
    else:
        count = _convert(model)
    if count == 0:
        print_log(
            f'switch_to_deploy: no module of {type(model).__name__} has a switch_to_deploy() '
            'method; nothing was reparameterized',
            logger='current',
            level=30,
        )
    model.eval()
    return model
