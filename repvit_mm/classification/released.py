"""Let ``tools/test.py`` evaluate the authors' released ``.pth`` files and timm state dicts (``.pth`` or
``.safetensors``).

Our checkpoints hold ``{'state_dict': {'backbone.*', 'head.*'}}``. The authors' release files hold
``{'model': {'features.*', 'classifier.*'}}`` and timm's RepViT weights are bare ``{'stem.*', 'stages.*',
'head.*'}`` state dicts; both are converted with :func:`repvit_mm.models.convert.convert_checkpoint`
into a temporary file (deleted when the process exits) that the Runner then loads. Testing needs no
distillation teacher, so it is dropped from the model config.
"""
from __future__ import annotations

import atexit
import os
import os.path as osp
import tempfile

import torch
from mmengine.config import Config

from ..utils.errors import UserInputError

__all__ = ['is_own_layout', 'resolve_released_checkpoint']

_OWN_PREFIXES = ('backbone.', 'neck.', 'head.', 'data_preprocessor.')


def is_own_layout(checkpoint: object) -> bool:
    """Whether a loaded checkpoint is already an mmengine checkpoint of an mmpretrain classifier."""
    state = checkpoint.get('state_dict') if isinstance(checkpoint, dict) else None
    return isinstance(state, dict) and bool(state) and all(k.startswith(_OWN_PREFIXES) for k in state)


def _uses_repvit_classifier(cfg: Config) -> bool:
    backbone = (cfg.get('model') or {}).get('backbone') or {}
    return (cfg.get('default_scope') == 'mmpretrain'
            and str(backbone.get('type', '')).split('.')[-1] == 'RepViT')


def _check_heads(state: dict, cfg: Config, checkpoint: str) -> None:
    """A distilled checkpoint has two heads whose mean is the prediction: evaluating it with a one-head
    config (or the reverse) would silently score something else, so refuse that."""
    head = cfg.model.get('head') or {}
    fused = 'head.head.weight' in state  # a deployed checkpoint: one Linear, nothing to compare
    if str(head.get('type', '')).split('.')[-1] != 'RepViTClsHead' or head.get('deploy') or fused:
        return
    has_dist = any(k.startswith('head.head_dist.') for k in state)
    wants_dist = bool(head.get('distillation', True))
    if has_dist and not wants_dist:
        raise UserInputError(f'{checkpoint} has a distillation head but the config\'s head has '
                             'distillation=False: evaluate it with a *-distill-* config')
    if wants_dist and not has_dist and any(k.startswith('head.') for k in state):
        raise UserInputError(f'{checkpoint} has no distillation head but the config\'s head has '
                             'distillation=True: evaluate it with a config without distillation')


def _remove(path: str) -> None:
    if osp.exists(path):
        os.remove(path)


def resolve_released_checkpoint(checkpoint: str, cfg: Config) -> str:
    """The checkpoint file the Runner should load for testing ``cfg``.

    Returns ``checkpoint`` itself unless ``cfg`` is a RepViT classifier and the file is an authors'
    release or a timm state dict; then the path of a converted temporary copy. Also sets
    ``cfg.model.teacher = None`` (a distillation config needs no teacher to be evaluated).
    """
    if isinstance(cfg.get('model'), dict) and cfg.model.get('teacher') is not None:
        cfg.model.teacher = None
    if not _uses_repvit_classifier(cfg):
        return checkpoint
    from ..models.convert import convert_checkpoint, read_weights

    loaded = read_weights(checkpoint)
    if is_own_layout(loaded):
        _check_heads(loaded['state_dict'], cfg, checkpoint)
        return checkpoint

    arch = cfg.model.backbone.get('arch', 'm0_9')
    try:
        state = convert_checkpoint(loaded, arch)
    except UserInputError as err:  # unknown layout, or weights of another arch: say which file
        raise UserInputError(f'{checkpoint}: {err}') from None
    _check_heads(state, cfg, checkpoint)
    fd, path = tempfile.mkstemp(prefix=f'{osp.splitext(osp.basename(checkpoint))[0]}-converted-',
                                suffix='.pth')
    os.close(fd)
    atexit.register(_remove, path)
    torch.save({'state_dict': state, 'meta': {'converted_from': osp.abspath(checkpoint)}}, path)
    return path
