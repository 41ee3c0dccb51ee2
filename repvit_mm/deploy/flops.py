"""Parameters and multiply-accumulates (MACs) of any repvit-mm config, unfused and fused.

Counted with mmengine's analyzer (``mmengine.analysis.FlopAnalyzer`` and ``parameter_count``, what
``get_model_complexity_info`` is built on; like fvcore it counts one fused multiply-add as one "flop",
i.e. MACs). What is counted depends on the config:

- classifier: the whole classifier (backbone + head) on a 224x224 image, the paper's convention; the
  fused numbers reproduce the paper's table (e.g. RepViT-M0.9: 5.1M params, 0.8G MACs);
- ``backbone_only``: the backbone alone, 512x512 by default (as for dense prediction);
- detector / segmentor: the full model (backbone, neck, heads; RPN proposals and RoI heads included)
  on one 800x1344 (detection) or 512x512 (segmentation) image. The RoI heads are counted for the
  proposals the config's ``test_cfg`` keeps; operators the analyzer cannot count (NMS, RoIAlign) count
  as zero.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from mmengine.config import Config
from torch import nn

from .model import LoadedModel, load_model, tensor_model

__all__ = ['DEFAULT_SHAPES', 'model_complexity', 'count_complexity', 'format_table']

#: Input (H, W) by task when none is given.
DEFAULT_SHAPES = {
    'classification': (224, 224),
    'backbone': (512, 512),
    'detection': (800, 1344),
    'segmentation': (512, 512),
}


class _DenseTensor(nn.Module):
    """A detector or segmentor as images -> tensors (``mode='tensor'``), for tracing."""

    def __init__(self, model: nn.Module, task: str, shape: tuple[int, int]) -> None:
        super().__init__()
        self.model = model
        self.task = task
        self.shape = tuple(shape)

    def forward(self, x: torch.Tensor):
        if self.task == 'segmentation':
            return self.model(x, mode='tensor')
        from mmdet.structures import DetDataSample

        meta = dict(
            img_shape=self.shape,
            ori_shape=self.shape,
            pad_shape=self.shape,
            batch_input_shape=self.shape,
            scale_factor=(1.0, 1.0),
        )
        return self.model(x, [DetDataSample(metainfo=meta) for _ in range(x.shape[0])], mode='tensor')


def _view(loaded: LoadedModel, backbone_only: bool, shape: tuple[int, int]) -> tuple[nn.Module, str]:
    """The module to analyse and the prefix of the model's own components inside it."""
    if backbone_only or loaded.task == 'classification':
        view = tensor_model(loaded, backbone_only)
        return view, 'backbone' if backbone_only else 'classifier'
    return _DenseTensor(loaded.model, loaded.task, shape).eval(), 'model'


@torch.no_grad()
def count_complexity(module: nn.Module, shape: tuple[int, int], prefix: str = '') -> dict[str, Any]:
    """``{'params', 'macs', 'by_module': {child: {'params', 'macs'}}}`` of ``module`` on one
    ``3 x H x W`` image; ``by_module`` lists the children of ``prefix`` (e.g. backbone, neck, heads)."""
    from mmengine.analysis import FlopAnalyzer, parameter_count

    module = module.eval()
    analyzer = FlopAnalyzer(module, (torch.zeros(1, 3, *shape),))
    analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings('none')
    logger = logging.getLogger('mmengine')
    level = logger.level
    logger.setLevel(logging.ERROR)  # the analyzer logs skipped ops (NMS, RoIAlign, ...)
    try:
        macs = analyzer.total()
        by_module = analyzer.by_module()
    finally:
        logger.setLevel(level)
    params = parameter_count(module)
    children: dict[str, dict[str, int]] = {}
    inner = module.get_submodule(prefix) if prefix and prefix != 'backbone' else None
    if inner is not None:
        for name, _ in inner.named_children():
            if name == 'data_preprocessor':
                continue
            key = f'{prefix}.{name}'
            if params.get(key, 0) or by_module.get(key, 0):
                children[name] = {'params': int(params.get(key, 0)), 'macs': int(by_module.get(key, 0))}
    return {'params': int(params['']), 'macs': int(macs), 'by_module': children}


def model_complexity(
    config: str | os.PathLike | Config, *, shape: tuple[int, int] | None = None, backbone_only: bool = False
) -> dict[str, Any]:
    """Params and MACs of the config's model, unfused (training structure) and fused (deploy).

    Returns:
        ``{'task', 'arch', 'shape', 'backbone_only', 'unfused': {...}, 'fused': {...}}`` with
        :func:`count_complexity` results.
    """
    result: dict[str, Any] = {}
    for fused in (False, True):
        loaded = load_model(config, None, fuse=fused)
        if not result:
            key = 'backbone' if backbone_only else loaded.task
            shape = tuple(shape or DEFAULT_SHAPES[key])
            result.update(
                task=loaded.task,
                arch=loaded.cfg.model.get('backbone', {}).get('arch'),
                shape=list(shape),
                backbone_only=backbone_only,
                config=str(loaded.cfg.filename),
            )
        view, prefix = _view(loaded, backbone_only, shape)
        result['fused' if fused else 'unfused'] = count_complexity(view, shape, prefix)
    return result


def format_table(result: dict[str, Any]) -> str:
    """The tool's printout: one row per variant and, indented, per component."""
    h, w = result['shape']
    what = 'backbone' if result['backbone_only'] else result['task']
    lines = [
        f'RepViT-{result["arch"]} {what}, input 1x3x{h}x{w} ({result["config"]})',
        f'{"model":<22}{"params":>12}{"MACs":>14}',
    ]
    for key, label in (('unfused', 'unfused (training)'), ('fused', 'fused (deploy)')):
        entry = result[key]
        lines.append(f'{label:<22}{entry["params"] / 1e6:>10.3f} M{entry["macs"] / 1e9:>12.4f} G')
        for name, child in entry['by_module'].items():
            lines.append(f'  {name:<20}{child["params"] / 1e6:>10.3f} M{child["macs"] / 1e9:>12.4f} G')
    if result['task'] == 'classification' and not result['backbone_only']:
        fused = result['fused']
        lines.append(
            f"as in the paper's table (fused): {fused['params'] / 1e6:.1f}M params, {fused['macs'] / 1e9:.1f}G MACs"
        )
    return '\n'.join(lines)
