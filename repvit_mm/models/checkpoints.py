"""One way from a checkpoint into a model: read -> unwrap -> detect the layout -> convert -> fit -> load.

Every route into a model with a RepViT inside ends here (the tools; mmengine's via :mod:`.mmengine_loading`). A
checkpoint fits every key and shape or raises :class:`CheckpointMismatchError` (fine-tuning may skip heads).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace

import torch
from mmengine.logging import print_log
from mmengine.runner import CheckpointLoader
from torch import nn

from ..utils.errors import UserInputError
from .backbones.repvit import RepViT, normalize_arch_name
from .convert import FORMATS, LAYOUTS, detect_layout, to_repvit_mm
from .heads.repvit_head import RepViTClsHead
from .reparam import switch_to_deploy

__all__ = ['HEAD_PREFIXES', 'Checkpoint', 'Fit', 'CheckpointMismatchError', 'read_checkpoint', 'as_checkpoint']
__all__ += ['fit_checkpoint', 'load_checkpoint_into', 'allow_head_reinit', 'finetuning', 'convert_checkpoint']

#: Modules whose tensors depend on the number of classes: what fine-tuning may re-initialise.
HEAD_PREFIXES = ('head.', 'roi_head.bbox_head.', 'roi_head.mask_head.', 'decode_head.', 'auxiliary_head.')
_WRAPPERS = ('state_dict', 'model', 'state_dict_ema', 'model_ema')  # where checkpoints keep their weights
_finetuning: contextvars.ContextVar[bool] = contextvars.ContextVar('repvit_mm_finetuning', default=False)
finetuning = _finetuning.get  # finetuning(): whether allow_head_reinit is in effect


class CheckpointMismatchError(UserInputError):
    """The checkpoint does not fit the model: ``missing``, ``unexpected``, ``mismatched`` (key, its shapes)."""

    def __init__(self, message: str, missing=(), unexpected=(), mismatched: Sequence[tuple[str, tuple, tuple]] = ()):
        super().__init__(message)
        self.missing, self.unexpected, self.mismatched = list(missing), list(unexpected), list(mismatched)


@contextlib.contextmanager
def allow_head_reinit(enabled: bool = True) -> Iterator[None]:
    """Inside this block, mmengine's loads (``load_from``) may leave mis-shaped head tensors at their initialisation."""
    token = _finetuning.set(enabled)
    try:
        yield
    finally:
        _finetuning.reset(token)


@dataclass
class Checkpoint:
    """A checkpoint in memory: source, tensors (unwrapped, ``module.`` stripped), ``meta``, layout, ``raw`` object."""

    source: str
    state: dict[str, torch.Tensor]
    meta: dict
    layout: str
    raw: Mapping = field(default_factory=dict, repr=False)

    @property
    def is_training_checkpoint(self) -> bool:
        """Whether ``Runner.resume`` can continue from it (``meta.epoch``, ``meta.iter`` and ``message_hub``)."""
        return {'epoch', 'iter'} <= set(self.meta) and 'message_hub' in self.raw

    @property
    def dataset_meta(self) -> dict:
        """mmengine's ``meta.dataset_meta``, or the ``meta.CLASSES`` (and ``PALETTE``) of mmdet 2 / mmseg 0."""
        if isinstance(self.meta.get('dataset_meta'), Mapping):
            return dict(self.meta['dataset_meta'])
        found = {'classes': tuple(self.meta['CLASSES'])} if self.meta.get('CLASSES') else {}
        if found and self.meta.get('PALETTE'):
            found['palette'] = [tuple(c) for c in self.meta['PALETTE']]
        return found


def read_checkpoint(filename: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint weights-only, any scheme (path, ``https://``, ``torchvision://``, ...)."""
    name = str(filename)
    try:
        raw = CheckpointLoader.load_checkpoint(name, map_location='cpu', logger='current')
    except FileNotFoundError as err:  # the tools print it as one error line, as a UserInputError
        raise FileNotFoundError(str(err) if name in str(err) else f'checkpoint not found: {name}') from None
    except KeyError as err:  # a model name missing from mmengine's URL tables (torchvision://nope)
        raise UserInputError(f'{name}: unknown model name {err}') from None
    return as_checkpoint(raw, name)


def as_checkpoint(obj, source: str = 'checkpoint') -> Checkpoint:
    """Unwrap a loaded checkpoint (``state_dict``, ``model``, EMA weights or a bare state dict); detect its layout."""
    if isinstance(obj, Checkpoint):
        return obj
    if not isinstance(obj, Mapping):
        raise UserInputError(f'{source}: expected a checkpoint dict, found {type(obj).__name__}')
    state = next((obj[k] for k in _WRAPPERS if isinstance(obj.get(k), Mapping)), obj)
    tensors = OrderedDict((k, v) for k, v in state.items() if isinstance(v, torch.Tensor))
    if not tensors:
        raise UserInputError(
            f'{source}: no tensors found in it (top-level keys: {", ".join(map(str, list(obj)[:8])) or "none"})'
        )
    if all(k.startswith('module.') for k in tensors):  # saved from DataParallel / DDP
        tensors = OrderedDict((k[len('module.') :], v) for k, v in tensors.items())
    meta = obj.get('meta') if isinstance(obj.get('meta'), Mapping) else {}
    return Checkpoint(source, tensors, dict(meta), detect_layout(tensors), obj)


@dataclass
class Fit:
    """What :func:`fit_checkpoint` found: the state to load strictly, fused or not, the heads left as initialised."""

    state: OrderedDict
    fused: bool = False
    reinitialised: list[str] = field(default_factory=list)


def _compare(state: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor], unmapped: Sequence[str] = ()):
    missing = [k for k in own if k not in state and not k.endswith('num_batches_tracked')]
    unexpected = [*unmapped, *(k for k in state if k not in own)]
    mismatched = [
        (k, tuple(state[k].shape), tuple(own[k].shape)) for k in own if k in state and state[k].shape != own[k].shape
    ]
    return missing, unexpected, mismatched


def _arch_fits(state: Mapping[str, torch.Tensor], arch, deploys=(False, True)) -> bool:
    """Whether ``state`` is exactly a RepViT ``arch`` built with one of ``deploys`` (meta device: keys and shapes)."""
    with torch.device('meta'):
        return any(not any(_compare(state, RepViT(arch, deploy=d).state_dict())) for d in deploys)


def _backbone_fits(ckpt: Checkpoint, arch: str) -> bool:
    """Whether the checkpoint's backbone is a RepViT ``arch`` (training or fused)."""
    state, unmapped = to_repvit_mm(ckpt.state, ckpt.layout, arch)
    backbone = {k[len('backbone.') :]: v for k, v in state.items() if k.startswith('backbone.')} or state
    return not any(k.startswith(('backbone.', 'features.')) for k in unmapped) and _arch_fits(backbone, arch)


def _select(state: dict, prefix: str | None, model: nn.Module, source: str) -> dict:
    """``state`` under ``prefix``, prefix removed (a bare backbone takes a whole model's ``backbone.*``)."""
    if prefix is None and isinstance(model, RepViT) and any(k.startswith('backbone.') for k in state):
        prefix = 'backbone.'
    if not prefix:
        return state
    prefix = prefix if prefix.endswith('.') else prefix + '.'
    selected = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if not selected:
        raise UserInputError(
            f'{source} has no keys under {prefix!r} (its keys start with '
            f'{", ".join(sorted({k.split(".")[0] for k in state})[:6])})'
        )
    return selected


def _mismatch(model: nn.Module, backbone: RepViT | None, ckpt: Checkpoint, found) -> CheckpointMismatchError:
    """The one mismatch report: file, layout, model, the arch the backbone fits, then each kind's count and keys."""
    missing, unexpected, mismatched = found
    what = type(model).__name__
    if backbone is not None:
        arch = next((n for n in RepViT.arch_zoo if RepViT.get_arch_settings(n) == backbone.arch_settings), 'custom')
        what = f'RepViT arch {arch!r}' if isinstance(model, _Reference) else f'{what} with RepViT arch {arch!r}'
        fits = [a for a in RepViT.arch_zoo if a != arch and _backbone_fits(ckpt, a)]
        what += f"; the checkpoint's backbone fits arch {' / '.join(map(repr, fits))}" if fits else ''
    layout = '' if ckpt.layout == 'repvit-mm' or backbone is None else f' ({LAYOUTS[ckpt.layout]})'
    wrong = [f'{k} {a} vs {b} in the model' for k, a, b in mismatched]
    kinds = {'missing keys': missing, 'unexpected keys': unexpected, 'keys with wrong shapes': wrong}
    keys = '; '.join(
        f'{len(ks)} {kind} [{", ".join(ks[:12])}{f", ... ({len(ks) - 12} more)" if len(ks) > 12 else ""}]'
        for kind, ks in kinds.items()
        if ks
    )
    dist = lambda ks: bool(ks) and all(k.startswith('head.head_dist.') for k in ks)  # noqa: E731
    hint = ''
    if dist(unexpected) and not missing:
        hint = ' (the checkpoint has a distillation head: use a *-distill-* config)'
    if dist(missing) and not unexpected:
        hint = ' (the checkpoint has no distillation head: use a config without distillation)'
    return CheckpointMismatchError(f'{ckpt.source}{layout} does not fit the model ({what}): {keys}{hint}', *found)


def fit_checkpoint(
    model: nn.Module, checkpoint, *, prefix=None, finetune=False, accept_fused=False, fused_hint=''
) -> Fit:
    """Convert ``checkpoint`` for ``model`` and check every key and shape (raising :class:`CheckpointMismatchError`).

    ``prefix``: take only the keys under it. ``finetune``: :data:`HEAD_PREFIXES` tensors of another shape keep the
    model's. ``accept_fused``: a fused checkpoint reparameterizes ``model``, else ``fused_hint`` says what to do."""
    ckpt = as_checkpoint(checkpoint)
    at, backbone = next(((n, m) for n, m in model.named_modules() if isinstance(m, RepViT)), ('', None))
    # Layouts are RepViT's: any other model (a distillation teacher) takes the keys as they are.
    state, unmapped = (
        to_repvit_mm(ckpt.state, ckpt.layout, backbone.arch_settings) if backbone is not None else (ckpt.state, [])
    )
    state = _select(state, prefix, model, ckpt.source)
    own = model.state_dict()
    found = _compare(state, own, unmapped)
    fused = False
    if any(found) and backbone is not None and not backbone.deploy:
        part = {k[len(at) + 1 :]: v for k, v in state.items() if k.startswith(at + '.')} if at else state
        if _arch_fits(part, backbone.arch_settings, deploys=(True,)):
            if not accept_fused:
                raise CheckpointMismatchError(
                    f'{ckpt.source} is a fused (deploy) checkpoint: it fits the reparameterized model only'
                    f'{"; " + fused_hint if fused_hint else " (call repvit_mm.models.switch_to_deploy(model) first)"}'
                )
            own, fused = switch_to_deploy(model).state_dict(), True
            found = _compare(state, own, unmapped)
    missing, unexpected, mismatched = found
    heads = [m for m in mismatched if m[0].startswith(HEAD_PREFIXES)]
    reinitialised = []
    if finetune and heads and len(heads) == len(mismatched) and not (missing or unexpected):
        state = {**state, **{k: own[k] for k, _, _ in heads}}
        reinitialised, found = sorted({k.rsplit('.', 1)[0] for k, _, _ in heads}), ([], [], [])
    if any(found):
        raise _mismatch(model, backbone, ckpt, found)
    # absent num_batches_tracked buffers start at 0; the model's key order
    ordered = OrderedDict((k, state[k] if k in state else torch.zeros(v.shape, dtype=v.dtype)) for k, v in own.items())
    return Fit(ordered, fused, reinitialised)


def load_checkpoint_into(model: nn.Module, checkpoint, *, logger='current', **options) -> Fit:
    """:func:`fit_checkpoint` of ``checkpoint`` (also a file name or URL), then load it strictly."""
    ckpt = read_checkpoint(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else as_checkpoint(checkpoint)
    fit = fit_checkpoint(model, ckpt, **options)
    model.load_state_dict(fit.state, strict=True)
    if fit.reinitialised:
        heads = ', '.join(fit.reinitialised)
        print_log(f'{ckpt.source}: heads re-initialised for another number of classes (shapes differ): {heads}', logger)
    return fit


class _Reference(nn.Module):
    """RepViT ``arch`` and, if ``state`` has ``head.*`` keys, a head like its own: what conversion checks against."""

    def __init__(self, arch, state: Mapping[str, torch.Tensor]) -> None:
        super().__init__()
        self.backbone = RepViT(arch)
        if any(k.startswith('head.') for k in state):
            names = ('head.head.linear.weight', 'head.head_dist.linear.weight', 'head.head.weight')
            weight = next((state[k] for k in names if k in state), None)
            self.head = RepViTClsHead(
                num_classes=weight.shape[0] if weight is not None and weight.dim() == 2 else 1,
                in_channels=self.backbone.arch_settings['channels'][-1],
                distillation=any(k.startswith('head.head_dist.') for k in state),
            )


def convert_checkpoint(checkpoint, arch, format: str = 'auto') -> OrderedDict:  # noqa: A002
    """A checkpoint's weights in our layout, backbone and classifier head checked against ``arch`` (raising
    :class:`CheckpointMismatchError`). ``format``: ``'auto'`` or one of :data:`~.convert.FORMATS`. The neck and
    heads of the authors' COCO / ADE20K releases keep their names; a repvit-mm checkpoint is only checked."""
    ckpt = as_checkpoint(checkpoint)
    if format != 'auto':
        if format not in FORMATS:
            raise UserInputError(
                f'unknown checkpoint format {format!r}; use {", ".join(map(repr, ["auto", *FORMATS]))}'
            )
        ckpt = replace(ckpt, layout=FORMATS[format])
    arch = normalize_arch_name(arch) if isinstance(arch, str) else arch
    if ckpt.layout == 'repvit-mm' and not any(k.startswith('backbone.') for k in ckpt.state):
        if not any(k.startswith(('stem.', 'stages.')) for k in ckpt.state):
            raise UserInputError(
                "not a RepViT checkpoint: expected authors' keys (features.*), timm keys "
                f'(stem.*, stages.*) or repvit-mm keys (backbone.*), got {", ".join(list(ckpt.state)[:6])}'
            )
        ckpt = replace(ckpt, layout='timm')  # a bare backbone of ours: timm's names, 'c' spelled out
    # the neck and heads of the COCO / ADE20K releases: the same names in mmdet 3.3 / mmseg 1.2
    dense = ckpt.layout.startswith('authors-') and ckpt.layout != 'authors-classification'
    rest = {k: v for k, v in ckpt.state.items() if dense and not k.startswith('backbone.')}
    ckpt = replace(ckpt, state={k: v for k, v in ckpt.state.items() if k not in rest})
    with torch.device('meta'):  # keys and shapes only
        reference = _Reference(arch, to_repvit_mm(ckpt.state, ckpt.layout, arch)[0])
    return fit_checkpoint(reference, ckpt, accept_fused=True).state | rest
