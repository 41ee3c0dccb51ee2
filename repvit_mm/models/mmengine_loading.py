"""Route mmengine's checkpoint loading through :mod:`.checkpoints` (installed when repvit_mm is imported).

Every mmengine route into a model (``load_from``, ``resume``, ``init_detector``, ``init_model``, the inferencers)
ends in ``mmengine.runner.checkpoint.load_state_dict`` (``strict=False``): :func:`install` replaces it and the
``Pretrained`` initializer (mmengine's, given a ``prefix``, reads ``state_dict`` checkpoints only).
"""

from __future__ import annotations

import mmengine.runner.checkpoint as mmengine_checkpoint
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.model.weight_init import PretrainedInit, update_init_info
from mmengine.registry import WEIGHT_INITIALIZERS

from ..utils.safe_checkpoint import source_of
from .backbones.repvit import RepViT
from .checkpoints import as_checkpoint, finetuning, load_checkpoint_into

__all__ = ['install', 'load_state_dict', 'RepViTPretrainedInit']

_upstream_load_state_dict = mmengine_checkpoint.load_state_dict


def load_state_dict(module, state_dict, strict: bool = False, logger=None):
    """mmengine's ``load_state_dict``; models with a RepViT inside go through
    :func:`~.checkpoints.load_checkpoint_into` (``strict`` ignored, heads re-initialised in ``allow_head_reinit``)."""
    model = module.module if is_model_wrapper(module) else module
    if not any(isinstance(m, RepViT) for m in model.modules()):
        return _upstream_load_state_dict(module, state_dict, strict, logger)
    load_checkpoint_into(
        model,
        as_checkpoint(state_dict, source_of(state_dict) or 'checkpoint'),
        finetune=finetuning(),
        logger=logger or 'current',
        fused_hint='evaluate it with tools/test.py (fused checkpoints load automatically) '
        'or reparameterize the model with repvit_mm.models.switch_to_deploy first',
    )


class RepViTPretrainedInit(PretrainedInit):
    """mmengine's ``Pretrained`` initializer; modules with a RepViT inside load any layout, strictly (but for
    heads of another shape), with any ``prefix``."""

    def __call__(self, module) -> None:
        if not any(isinstance(m, RepViT) for m in module.modules()):
            return super().__call__(module)
        what = f'{self.prefix} in model' if self.prefix else 'model'
        print_log(f'load {what} from: {self.checkpoint}', logger='current')
        load_checkpoint_into(module, self.checkpoint, prefix=self.prefix, finetune=True)
        if hasattr(module, '_params_init_info'):
            update_init_info(module, init_info=self._get_init_info())


def install() -> None:
    """Make mmengine's loading strict for RepViT models (idempotent)."""
    mmengine_checkpoint.load_state_dict = load_state_dict
    WEIGHT_INITIALIZERS.register_module(name='Pretrained', module=RepViTPretrainedInit, force=True)
