"""Build the model a config describes, outside mmengine's Runner (the tools' checks, the deploy tools)."""

from __future__ import annotations

import copy

from mmengine.config import Config
from mmengine.registry import DefaultScope
from torch import nn

from ..utils.errors import UserInputError

__all__ = ['build_model']


def build_model(cfg: Config, *, teacher: bool = False, pretrained: bool = False) -> nn.Module:
    """Build ``cfg.model`` in the config's registry scope, SyncBN replaced by BN, in eval mode.

    Args:
        teacher: keep a distillation teacher (built and loaded as in training); by default it is dropped.
        pretrained: keep a legacy ``model.pretrained`` entry; ``init_cfg`` entries are only applied by
            ``init_weights()``, which this function does not call.
    """
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import MODELS

    scope = cfg.get('default_scope', 'mmpretrain')
    model_cfg = copy.deepcopy(cfg.model)
    if cfg.get('data_preprocessor') is not None:  # as mmengine's Runner does
        model_cfg.setdefault('data_preprocessor', copy.deepcopy(cfg.data_preprocessor))
    if 'teacher' in model_cfg and not teacher:  # distillation teachers only matter for training
        model_cfg.teacher = None
    if model_cfg.get('pretrained') is not None and not pretrained:
        model_cfg.pretrained = None
    try:
        with DefaultScope.overwrite_default_scope(scope):
            model = MODELS.build(model_cfg)
    except (UserInputError, FileNotFoundError):
        raise
    except Exception as err:  # a KeyError of the registry, a bad argument, ...
        raise UserInputError(
            f'cannot build the model of {cfg.filename}: {type(err).__name__}: '
            f'{str(err).splitlines()[0] if str(err) else ""}'
        ) from err
    model = revert_sync_batchnorm(model)
    return model.eval()
