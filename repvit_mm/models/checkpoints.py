"""One way from a checkpoint into a model: read once, convert in memory, check every key and shape.

Every route that puts weights into a model with a RepViT inside ends here: ``tools/test.py`` (``--deploy``
too), ``load_from``, ``--resume``, ``init_cfg=dict(type='Pretrained')``, the deploy tools and
``tools/demo.py``, and -- through :mod:`.mmengine_loading` -- mmengine's ``load_checkpoint``, mmdet's
``init_detector``, mmseg's ``init_model`` and the mmpretrain inferencers given our configs.

:func:`read_checkpoint` reads a file once, with any scheme mmengine knows, through the weights-only loader
(:mod:`repvit_mm.utils.safe_checkpoint`). :func:`fit_checkpoint` converts the state dict from its layout
(see :data:`LAYOUTS`) to the receiving model's keys and checks every key and shape: a checkpoint that does
not fit raises :class:`~repvit_mm.models.convert.CheckpointMismatchError` (one line: the arch it fits if
known, counts and first keys missing / unexpected / mis-shaped) -- never a silent partial load. A fused
(deploy) checkpoint is recognised by fitting the reparameterized model. The one sanctioned partial load is
fine-tuning to another number of classes (``finetune=True``: ``load_from`` and ``init_cfg``): head tensors
whose shapes differ keep their initialisation, and one log line names those heads.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import os
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import torch
from mmengine.logging import print_log
from torch import nn

from ..utils.errors import UserInputError
from ..utils.safe_checkpoint import read_checkpoint_file
from .backbones.repvit import RepViT
from .convert import CheckpointMismatchError, _official_to_mm, _timm_to_mm, describe_mismatch, guess_arch

__all__ = [
    'LAYOUTS',
    'HEAD_PREFIXES',
    'Checkpoint',
    'Fit',
    'read_checkpoint',
    'as_checkpoint',
    'detect_layout',
    'to_repvit_mm',
    'fit_checkpoint',
    'load_checkpoint_into',
    'allow_head_reinit',
    'convert_to_repvit_mm',
    'TASK_OF_LAYOUT',
    'CheckpointMismatchError',
]

#: Layouts :func:`detect_layout` tells apart, and how messages name them.
LAYOUTS = {
    'repvit-mm': 'repvit-mm checkpoint',
    'authors-classification': "authors' ImageNet release (features.*, classifier.*)",
    'authors-coco': "authors' COCO Mask R-CNN release (mmdet 2.28, backbone.features.*)",
    'authors-ade20k': "authors' ADE20K Semantic FPN release (mmseg 0.30, backbone.features.*)",
    'authors-backbone': "authors' detection/segmentation backbone (backbone.features.*)",
    'timm': 'timm repvit_* state dict (stem.*, stages.*)',
}
#: Modules whose tensors depend on the number of classes: what fine-tuning may re-initialise.
HEAD_PREFIXES = ('head.', 'roi_head.bbox_head.', 'roi_head.mask_head.', 'decode_head.', 'auxiliary_head.')

_finetuning: contextvars.ContextVar[bool] = contextvars.ContextVar('repvit_mm_finetuning', default=False)


@contextlib.contextmanager
def allow_head_reinit(enabled: bool = True) -> Iterator[None]:
    """Inside this block, loads through mmengine (``load_from``) may leave mis-shaped class-dependent head
    tensors at their initialisation (fine-tuning to another number of classes). Resuming and testing
    never do."""
    token = _finetuning.set(enabled)
    try:
        yield
    finally:
        _finetuning.reset(token)


def finetuning() -> bool:
    return _finetuning.get()


# ----------------------------------------------------------------------------------------- reading
@dataclass
class Checkpoint:
    """A checkpoint in memory: its tensors (``state_dict`` / ``model`` unwrapped, ``module.`` stripped),
    its ``meta``, the layout of its keys, and the object as loaded (``raw``)."""

    source: str
    state: dict[str, torch.Tensor]
    meta: dict
    layout: str
    raw: Mapping = field(default_factory=dict, repr=False)

    @property
    def is_training_checkpoint(self) -> bool:
        """Whether mmengine's ``Runner.resume`` can continue from it (``meta.epoch``, ``meta.iter`` and a
        ``message_hub``, as tools/train.py writes them)."""
        return {'epoch', 'iter'} <= set(self.meta) and 'message_hub' in self.raw

    @property
    def dataset_meta(self) -> dict:
        """mmengine's ``meta.dataset_meta``, or the ``meta.CLASSES`` (and ``PALETTE``) of mmdet 2 / mmseg 0."""
        if isinstance(self.meta.get('dataset_meta'), Mapping):
            return dict(self.meta['dataset_meta'])
        if self.meta.get('CLASSES'):
            found = {'classes': tuple(self.meta['CLASSES'])}
            if self.meta.get('PALETTE'):
                found['palette'] = [tuple(c) for c in self.meta['PALETTE']]
            return found
        return {}


def read_checkpoint(filename: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint once, safely (weights-only, any scheme: path, ``https://``, ``torchvision://``, ...).

    Raises:
        FileNotFoundError: there is no such file.
        UnsafeCheckpointError: the file is refused as unsafe, or is no readable checkpoint.
        UserInputError: it holds no tensors.
    """
    name = str(filename)
    try:
        raw = read_checkpoint_file(name)
    except FileNotFoundError as err:  # the tools print it as one error line, as a UserInputError
        raise FileNotFoundError(str(err) if name in str(err) else f'checkpoint not found: {name}') from None
    except KeyError as err:  # a model name missing from mmengine's URL tables (torchvision://nope)
        raise UserInputError(f'{name}: unknown model name {err}') from None
    return as_checkpoint(raw, name)


def as_checkpoint(obj, source: str = 'checkpoint') -> Checkpoint:
    """Wrap a loaded checkpoint (``{'state_dict': ...}``, ``{'model': ...}`` or a bare state dict)."""
    if isinstance(obj, Checkpoint):
        return obj
    if not isinstance(obj, Mapping):
        raise UserInputError(f'{source}: expected a checkpoint dict, found {type(obj).__name__}')
    state = obj
    for key in ('state_dict', 'model', 'state_dict_ema', 'model_ema'):  # the EMA weights only if alone
        if isinstance(obj.get(key), Mapping):
            state = obj[key]
            break
    tensors = OrderedDict((k, v) for k, v in state.items() if isinstance(v, torch.Tensor))
    if not tensors:
        raise UserInputError(
            f'{source}: no tensors found in it (top-level keys: {", ".join(map(str, list(obj)[:8])) or "none"})'
        )
    if all(k.startswith('module.') for k in tensors):  # saved from DataParallel / DDP
        tensors = OrderedDict((k[len('module.') :], v) for k, v in tensors.items())
    meta = obj.get('meta') if isinstance(obj.get('meta'), Mapping) else {}
    return Checkpoint(source, tensors, dict(meta), detect_layout(tensors), obj)


def detect_layout(state: Mapping[str, torch.Tensor]) -> str:
    """One of :data:`LAYOUTS`, from the keys."""
    keys = list(state)
    if any(k.startswith('backbone.features.') for k in keys):
        if any(k.startswith(('rpn_head.', 'roi_head.')) for k in keys):
            return 'authors-coco'
        if any(k.startswith(('decode_head.', 'auxiliary_head.')) for k in keys):
            return 'authors-ade20k'
        return 'authors-backbone'
    if any(k.startswith('features.') for k in keys):
        return 'authors-classification'
    if any(k.startswith(('stem.', 'stages.')) and '.c.' in k for k in keys):
        return 'timm'
    return 'repvit-mm'


def to_repvit_mm(checkpoint: Checkpoint, arch) -> tuple[dict[str, torch.Tensor], list[str]]:
    """``(state dict in our model's keys, source keys that map to nothing)`` for RepViT ``arch``.

    The authors' dense-prediction releases differ from ours in the backbone only: their
    ``backbone.features.<n>`` is the classification release's ``features.<n>`` (the same ``RepViT`` feature
    list, without classifier). The neck, RPN, RoI and decode heads of Mask R-CNN / FPN (mmdet 2.28 ->
    3.3) and Semantic FPN (mmseg 0.30 -> 1.2) keep their key names and shapes, so they pass unchanged:
    mmdet 3.3's own model index serves its Mask R-CNN R50-FPN with the file mmdet 2 trained
    (``mmdetection/v2.0/mask_rcnn/..._20200205-d4b0c5d6.pth``), and mmseg 1.2's serves Semantic FPN with
    mmseg 0.x files (``mmsegmentation/v0.5/sem_fpn/...``).
    """
    layout, state = checkpoint.layout, checkpoint.state
    if layout == 'authors-classification':
        return _official_to_mm(state, arch)
    if layout == 'timm':
        return _timm_to_mm(state)
    if layout.startswith('authors-'):
        backbone = {k[len('backbone.') :]: v for k, v in state.items() if k.startswith('backbone.')}
        out, unmapped = _official_to_mm(backbone, arch)
        out.update((k, v) for k, v in state.items() if not k.startswith('backbone.'))
        return out, ['backbone.' + k for k in unmapped]
    return dict(state), []


# ----------------------------------------------------------------------------------------- fitting
@dataclass
class Fit:
    """What :func:`fit_checkpoint` found: the state dict to load strictly, whether it needs the fused
    (deploy) model, and the heads left at their initialisation."""

    state: OrderedDict
    fused: bool = False
    reinitialised: list[str] = field(default_factory=list)


def _repvit_in(model: nn.Module) -> RepViT | None:
    return next((m for m in model.modules() if isinstance(m, RepViT)), None)


def _arch_name(backbone: RepViT) -> str:
    for name in RepViT.arch_zoo:
        if RepViT.get_arch_settings(name) == backbone.arch_settings:
            return name
    return 'custom'


def _compare(state: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor], unmapped: list[str]):
    missing = [k for k in own if k not in state and not k.endswith('num_batches_tracked')]
    unexpected = unmapped + [k for k in state if k not in own]
    mismatched = [
        (k, tuple(state[k].shape), tuple(own[k].shape)) for k in own if k in state and state[k].shape != own[k].shape
    ]
    return missing, unexpected, mismatched


def _ordered(state: Mapping[str, torch.Tensor], own: Mapping[str, torch.Tensor]) -> OrderedDict:
    """``state`` in the model's key order; absent ``num_batches_tracked`` buffers filled with 0."""
    return OrderedDict((k, state[k] if k in state else torch.zeros_like(v)) for k, v in own.items())


def _select(state: dict, prefix: str | None, model: nn.Module, source: str) -> dict:
    """The part of ``state`` under ``prefix`` (``init_cfg=dict(prefix='backbone.')``), prefix removed; a
    bare backbone given a whole-model checkpoint takes its ``backbone.*`` keys."""
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


def _hint(missing: list[str], unexpected: list[str]) -> str:
    if unexpected and all(k.startswith('head.head_dist.') for k in unexpected) and not missing:
        return ' (the checkpoint has a distillation head: use a *-distill-* config)'
    if missing and all(k.startswith('head.head_dist.') for k in missing) and not unexpected:
        return ' (the checkpoint has no distillation head: use a config without distillation)'
    return ''


def fit_checkpoint(
    model: nn.Module,
    checkpoint,
    *,
    prefix: str | None = None,
    finetune: bool = False,
    accept_fused: bool = False,
    fused_hint: str = '',
) -> Fit:
    """Convert ``checkpoint`` for ``model`` and check every key and shape; load nothing.

    Args:
        model: the receiving model (a whole classifier / detector / segmentor, or a bare backbone).
        checkpoint: a :class:`Checkpoint` or a loaded checkpoint dict.
        prefix: take only the keys under this prefix (``init_cfg=dict(prefix='backbone.')``).
        finetune: head tensors (:data:`HEAD_PREFIXES`) whose shapes differ keep the model's own values.
        accept_fused: a fused (deploy) checkpoint returns ``Fit(fused=True)`` (the caller reparameterizes
            the model first); otherwise it is refused, with ``fused_hint`` saying what to do instead.

    Raises:
        CheckpointMismatchError: the checkpoint does not fit.
    """
    ckpt = as_checkpoint(checkpoint)
    backbone = _repvit_in(model)
    # Layouts are RepViT's: any other model (a distillation teacher) takes the keys as they are.
    state, unmapped = to_repvit_mm(ckpt, backbone.arch_settings) if backbone is not None else (dict(ckpt.state), [])
    state = _select(state, prefix, model, ckpt.source)
    own = model.state_dict()
    missing, unexpected, mismatched = _compare(state, own, unmapped)
    if not (missing or unexpected or mismatched):
        return Fit(_ordered(state, own))

    if backbone is not None and not backbone.deploy:
        from .reparam import switch_to_deploy

        fused_own = switch_to_deploy(copy.deepcopy(model)).state_dict()
        if not any(_compare(state, fused_own, unmapped)):
            if accept_fused:
                return Fit(_ordered(state, fused_own), fused=True)
            raise CheckpointMismatchError(
                f'{ckpt.source} is a fused (deploy) checkpoint: it fits the reparameterized model only'
                f'{"; " + fused_hint if fused_hint else " (call repvit_mm.models.switch_to_deploy(model) first)"}'
            )

    heads = [m for m in mismatched if m[0].startswith(HEAD_PREFIXES)]
    if finetune and heads and len(heads) == len(mismatched) and not (missing or unexpected):
        for key, _, _ in heads:
            state[key] = own[key]
        names = sorted({k.rsplit('.', 1)[0] for k, _, _ in heads})
        return Fit(_ordered(state, own), reinitialised=names)

    what = type(model).__name__
    if backbone is not None:
        what += f' with RepViT arch {_arch_name(backbone)!r}'
        if any(
            k.startswith('backbone.') or isinstance(model, RepViT)
            for k in [*missing, *unexpected, *(m[0] for m in mismatched)]
        ):
            what += _fits_arch(ckpt, backbone)
    layout = '' if ckpt.layout == 'repvit-mm' or backbone is None else f' ({LAYOUTS[ckpt.layout]})'
    raise CheckpointMismatchError(
        f'{ckpt.source}{layout} does not fit the model ({what}): '
        f'{describe_mismatch(missing, unexpected, mismatched)}{_hint(missing, unexpected)}',
        missing,
        unexpected,
        mismatched,
    )


def _fits_arch(ckpt: Checkpoint, backbone: RepViT) -> str:
    """``'; the checkpoint's backbone is arch 'm1_5'`` when a zoo arch fits it, else ``''``."""

    def backbone_part(arch):
        state, unmapped = to_repvit_mm(ckpt, arch)
        if not any(k.startswith('backbone.') for k in state):  # a bare backbone
            state = {f'backbone.{k}': v for k, v in state.items()}
        return (
            {k: v for k, v in state.items() if k.startswith('backbone.')},
            [k for k in unmapped if k.startswith(('backbone.', 'features.'))],
        )

    try:
        fits = [a for a in guess_arch({}, reconvert=backbone_part) if a != _arch_name(backbone)]
    except Exception:  # noqa: BLE001 - a guess only improves the message
        return ''
    return f"; the checkpoint's backbone fits arch {' / '.join(map(repr, fits))}" if fits else ''


def load_checkpoint_into(
    model: nn.Module,
    checkpoint,
    *,
    prefix: str | None = None,
    finetune: bool = False,
    accept_fused: bool = False,
    fused_hint: str = '',
    logger='current',
) -> Fit:
    """:func:`fit_checkpoint`, then load the result strictly (reparameterizing ``model`` in place first
    when the checkpoint is fused and ``accept_fused``). ``checkpoint`` may be a file name or URL."""
    if isinstance(checkpoint, (str, os.PathLike)):
        checkpoint = read_checkpoint(checkpoint)
    fit = fit_checkpoint(
        model, checkpoint, prefix=prefix, finetune=finetune, accept_fused=accept_fused, fused_hint=fused_hint
    )
    if fit.fused:
        from .reparam import switch_to_deploy

        switch_to_deploy(model)
    model.load_state_dict(fit.state, strict=True)
    if fit.reinitialised:
        print_log(
            f'{as_checkpoint(checkpoint).source}: heads re-initialised for another number of classes '
            f'(shapes differ): {", ".join(fit.reinitialised)}',
            logger=logger,
        )
    return fit


# ----------------------------------------------------------------------------------------- conversion
#: The task each release layout belongs to (``tools/convert_checkpoint.py`` reports it).
TASK_OF_LAYOUT = {
    'authors-classification': 'classification',
    'timm': 'classification',
    'authors-coco': 'detection',
    'authors-ade20k': 'segmentation',
    'authors-backbone': 'backbone',
}


def convert_to_repvit_mm(checkpoint, arch) -> OrderedDict:
    """A release file's state dict in our layout, for saving (``tools/convert_checkpoint.py``).

    The RepViT backbone (and a classifier head) is checked against ``arch``, every key and shape; the neck
    and heads of the authors' COCO / ADE20K releases keep their mmdet / mmseg names (checked when the
    file is loaded into a config's model).

    Raises:
        CheckpointMismatchError: the backbone does not fit ``arch`` (names the arch it fits, if any).
        UserInputError: the checkpoint is already in our layout.
    """
    from .convert import check_state_dict, convert_checkpoint

    ckpt = as_checkpoint(checkpoint)
    if ckpt.layout == 'repvit-mm':
        raise UserInputError(
            f'{ckpt.source} is already a repvit-mm checkpoint (keys '
            f'{", ".join(list(ckpt.state)[:3])}, ...); nothing to convert'
        )
    if TASK_OF_LAYOUT[ckpt.layout] == 'classification':
        return convert_checkpoint(ckpt.state, arch, format='timm' if ckpt.layout == 'timm' else 'official')

    def backbone_part(a):
        state, unmapped = to_repvit_mm(ckpt, a)
        return {k: v for k, v in state.items() if k.startswith('backbone.')}, unmapped

    backbone, unmapped = backbone_part(arch)
    out = check_state_dict(
        backbone, arch, deploy=False, source=LAYOUTS[ckpt.layout], extra_unexpected=unmapped, reconvert=backbone_part
    )
    out.update((k, v) for k, v in to_repvit_mm(ckpt, arch)[0].items() if not k.startswith('backbone.'))
    return out
