"""Fold every BatchNorm and RepVGG branch of a checkpoint into a deploy checkpoint.

The deploy checkpoint holds ``{'state_dict': fused weights, 'meta': {..., 'deploy': True}}``. It loads
strictly into the same config with the deploy flags set, e.g. for a classifier::

    --cfg-options model.backbone.deploy=True model.head.deploy=True

(detectors and segmentors: ``model.backbone.deploy=True``), and the deploy tools here accept it with the
unchanged training config.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from mmengine.config import Config

from ..utils.errors import UserInputError
from ..utils.outputs import atomic_output, check_output
from .model import LoadedModel, fused_copy, load_model

__all__ = ['fuse_checkpoint', 'deploy_cfg_options', 'max_output_diff']


def deploy_cfg_options(loaded: LoadedModel) -> dict[str, bool]:
    """The ``--cfg-options`` that make the config build the fused structure directly."""
    options = {'model.backbone.deploy': True}
    if loaded.task == 'classification' and 'deploy' in _init_args(loaded.model.head):
        options['model.head.deploy'] = True
    return options


def _init_args(module: torch.nn.Module) -> set[str]:
    import inspect

    return set(inspect.signature(type(module).__init__).parameters)


@torch.no_grad()
def max_output_diff(
    before: torch.nn.Module,
    after: torch.nn.Module,
    task: str,
    shape: tuple[int, int] = (64, 64),
    batch: int = 2,
    seed: int = 0,
) -> float:
    """Largest absolute difference of the two models' tensor outputs on a random batch: logits for
    classifiers, ``extract_feat`` (backbone + neck) features for detectors and segmentors."""
    x = torch.randn(batch, 3, *shape, generator=torch.Generator().manual_seed(seed))

    def run(model):
        out = model(x, mode='tensor') if task == 'classification' else model.extract_feat(x)
        return out if isinstance(out, (tuple, list)) else (out,)

    return max(float((a - b).abs().max()) for a, b in zip(run(before), run(after), strict=False))


def fuse_checkpoint(
    config: str | os.PathLike | Config,
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    force: bool = False,
    check_shape: tuple[int, int] = (64, 64),
) -> dict[str, Any]:
    """Write the fused (deploy) version of ``checkpoint`` to ``out``.

    Args:
        config: the config the checkpoint was trained with (classifier, detector or segmentor).
        checkpoint: a training checkpoint of that config.
        out: where the deploy checkpoint goes; an existing file is replaced only with ``force``.
        check_shape: input size of the random batch on which fused and unfused outputs are compared.

    Returns:
        ``{'out', 'params_before', 'params_after', 'max_abs_diff', 'cfg_options'}``.
    """
    out_path = check_output(out, force)
    loaded = load_model(config, checkpoint)
    if loaded.fused:
        raise UserInputError(f'checkpoint {checkpoint} is already fused (a deploy checkpoint)')
    unfused, fused = loaded.model, fused_copy(loaded)
    diff = max_output_diff(unfused, fused.model, loaded.task, check_shape)
    options = deploy_cfg_options(loaded)
    meta = dict(loaded.meta)
    meta.update(deploy=True, fused_from=str(checkpoint), deploy_cfg_options=options)
    if loaded.cfg.filename:
        meta['config'] = str(loaded.cfg.filename)
    with atomic_output(out_path) as tmp:
        torch.save({'state_dict': fused.model.state_dict(), 'meta': meta}, tmp)
    return {
        'out': str(out_path),
        'params_before': sum(p.numel() for p in unfused.parameters()),
        'params_after': sum(p.numel() for p in fused.model.parameters()),
        'max_abs_diff': diff,
        'cfg_options': options,
    }
