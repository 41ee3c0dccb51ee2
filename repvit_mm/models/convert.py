"""Convert RepViT checkpoints (authors' release files, timm state dicts) to repvit-mm's layout.

The output is an mmpretrain ``ImageClassifier`` state dict (``backbone.*``, ``head.*``), so it loads with
``load_checkpoint`` / ``load_state_dict(strict=True)`` into ``ImageClassifier(backbone=RepViT(arch),
head=RepViTClsHead(...))`` and with ``init_cfg=dict(type='Pretrained', prefix='backbone.')`` into a bare
backbone. The converted keys and shapes are checked against the architecture: a wrong arch, a truncated or
foreign checkpoint raises :class:`CheckpointMismatchError` listing the missing, unexpected and mis-shaped
keys -- never a silent partial load.

Source layouts:

- **official** (github THU-MIG/RepViT, ``{'model': state_dict}``): ``features.0`` is the stem
  (``features.0.0`` / ``features.0.2`` ConvBN), then one entry per row of the authors' ``cfgs`` table in
  order. A row with stride 1 is a regular block (``token_mixer.0`` RepVGGDW, ``token_mixer.1`` SE,
  ``channel_mixer.m.0/2`` FFN); a stride-2 row is the reduction part of our downsampling block
  (``token_mixer.0`` depthwise s2, ``token_mixer.2`` 1x1, ``channel_mixer.m.0/2`` FFN), and the row
  before it is that block's ``pre_block``. The classifier is ``classifier.classifier.{bn,l}`` and
  ``classifier.classifier_dist.{bn,l}``.
- **timm** (``repvit_*``): our names with ``c`` for ``conv``, ``l`` for ``linear``, no ``backbone.``.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence

import torch

from ..utils.errors import UserInputError
from .backbones.repvit import RepViT, normalize_arch_name

__all__ = [
    'convert_official',
    'convert_timm',
    'convert_checkpoint',
    'detect_format',
    'check_state_dict',
    'unwrap_state_dict',
    'guess_arch',
    'describe_mismatch',
    'CheckpointMismatchError',
]

StateDict = dict[str, torch.Tensor]
_SHOW = 12  # keys listed per category in an error message


class CheckpointMismatchError(UserInputError):
    """The checkpoint does not fit the architecture; ``missing``, ``unexpected`` and ``mismatched``
    (``(key, checkpoint shape, model shape)``) hold every offending key."""

    def __init__(
        self,
        message: str,
        missing: Sequence[str] = (),
        unexpected: Sequence[str] = (),
        mismatched: Sequence[tuple[str, tuple, tuple]] = (),
    ) -> None:
        super().__init__(message)
        self.missing = list(missing)
        self.unexpected = list(unexpected)
        self.mismatched = list(mismatched)


def _listing(name: str, items: Sequence[str]) -> str:
    shown = ', '.join(items[:_SHOW])
    more = f', ... ({len(items) - _SHOW} more)' if len(items) > _SHOW else ''
    return f'{len(items)} {name} [{shown}{more}]'


def describe_mismatch(
    missing: Sequence[str] = (), unexpected: Sequence[str] = (), mismatched: Sequence[tuple[str, tuple, tuple]] = ()
) -> str:
    """The one way a key mismatch is worded: counts and the first keys of each kind, on one line."""
    parts = []
    if missing:
        parts.append(_listing('missing keys', list(missing)))
    if unexpected:
        parts.append(_listing('unexpected keys', list(unexpected)))
    if mismatched:
        parts.append(
            _listing('keys with wrong shapes', [f'{k} {tuple(a)} vs {tuple(b)} in the model' for k, a, b in mismatched])
        )
    return '; '.join(parts)


# ----------------------------------------------------------------------------- expected layout
def _backbone_shapes(arch, deploy: bool = False) -> OrderedDict[str, tuple]:
    if isinstance(arch, str):
        return OrderedDict(_zoo_backbone_shapes(arch, deploy))
    return _build_backbone_shapes(arch, deploy)


@functools.cache
def _zoo_backbone_shapes(arch: str, deploy: bool) -> tuple[tuple[str, tuple], ...]:
    return tuple(_build_backbone_shapes(arch, deploy).items())


def _build_backbone_shapes(arch, deploy: bool) -> OrderedDict[str, tuple]:
    try:
        with torch.device('meta'):
            model = RepViT(arch, deploy=deploy)
    except (RuntimeError, NotImplementedError):  # pragma: no cover - meta device unsupported
        model = RepViT(arch, deploy=deploy)
    return OrderedDict((f'backbone.{k}', tuple(v.shape)) for k, v in model.state_dict().items())


def _head_shapes(state: Mapping[str, torch.Tensor], channels: int, deploy: bool = False) -> OrderedDict[str, tuple]:
    """Expected ``head.*`` keys, given the head keys present (num_classes from the checkpoint)."""
    head_keys = [k for k in state if k.startswith('head.')]
    out: OrderedDict[str, tuple] = OrderedDict()
    if not head_keys:
        return out
    num_classes = None
    for k in ('head.head.linear.weight', 'head.head_dist.linear.weight', 'head.head.weight'):
        if k in state and state[k].dim() == 2:
            num_classes = state[k].shape[0]
            break
    if num_classes is None:
        num_classes = -1  # unknown: every head key is reported
    if deploy:
        out['head.head.weight'] = (num_classes, channels)
        out['head.head.bias'] = (num_classes,)
        return out
    heads = ['head']
    if any(k.startswith('head.head_dist.') for k in head_keys):
        heads.append('head_dist')
    for h in heads:
        for name in ('weight', 'bias', 'running_mean', 'running_var'):
            out[f'head.{h}.bn.{name}'] = (channels,)
        out[f'head.{h}.bn.num_batches_tracked'] = ()
        out[f'head.{h}.linear.weight'] = (num_classes, channels)
        out[f'head.{h}.linear.bias'] = (num_classes,)
    return out


def _mismatches(state: Mapping[str, torch.Tensor], expected: Mapping[str, tuple]):
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        (k, tuple(state[k].shape), expected[k]) for k in expected if k in state and tuple(state[k].shape) != expected[k]
    ]
    return missing, unexpected, mismatched


def check_state_dict(
    state: StateDict,
    arch,
    deploy: bool | None = None,
    source: str = 'checkpoint',
    extra_unexpected: Sequence[str] = (),
    reconvert: Callable[[str], tuple[StateDict, list[str]]] | None = None,
) -> StateDict:
    """Check a repvit-mm layout state dict against ``arch``; return it ordered as the model's.

    ``num_batches_tracked`` buffers absent from the checkpoint are filled with 0. ``deploy=None`` accepts
    either the training or the fused (deploy) structure. ``reconvert(arch_name)`` -> ``(state,
    unmapped source keys)`` redoes the conversion for another arch, to suggest the arch that fits.

    Raises:
        CheckpointMismatchError: listing missing, unexpected and wrongly shaped keys.
    """
    settings = RepViT.get_arch_settings(arch)
    if isinstance(arch, str):
        arch = normalize_arch_name(arch)
    channels = settings['channels'][-1]
    arch_name = arch if isinstance(arch, str) else 'custom'
    candidates = [False, True] if deploy is None else [bool(deploy)]
    results = []
    for dep in candidates:
        expected = _backbone_shapes(arch, deploy=dep)
        expected.update(_head_shapes(state, channels, deploy=dep))
        filled = dict(state)
        for k in expected:
            if k.endswith('num_batches_tracked') and k not in filled:
                filled[k] = torch.tensor(0, dtype=torch.long)
        missing, unexpected, mismatched = _mismatches(filled, expected)
        unexpected = list(extra_unexpected) + unexpected
        if not (missing or unexpected or mismatched):
            return OrderedDict((k, filled[k]) for k in expected)
        results.append((len(missing) + len(unexpected) + len(mismatched), missing, unexpected, mismatched))
    _, missing, unexpected, mismatched = min(results, key=lambda r: r[0])
    hint = ''
    if isinstance(arch, str):
        guesses = [g for g in guess_arch(state, extra_unexpected, reconvert) if g != arch]
        if guesses:
            hint = f' (the checkpoint fits arch {" / ".join(repr(g) for g in guesses)})'
    raise CheckpointMismatchError(
        f'{source} does not match RepViT arch {arch_name!r}{hint}: '
        + describe_mismatch(missing, unexpected, mismatched),
        missing,
        unexpected,
        mismatched,
    )


def guess_arch(
    state: Mapping[str, torch.Tensor],
    extra_unexpected: Sequence[str] = (),
    reconvert: Callable[[str], tuple[StateDict, list[str]]] | None = None,
) -> list[str]:
    """Names of the zoo archs a converted state dict fits (training or deploy structure).

    ``reconvert(name)`` redoes a layout-dependent conversion for each candidate arch; without it
    ``state`` is taken as already in repvit-mm layout.
    """
    fits = []
    for name, settings in RepViT.arch_zoo.items():
        if reconvert is not None:
            state, extra_unexpected = reconvert(name)
        if extra_unexpected:
            continue
        for dep in (False, True):
            expected = _backbone_shapes(name, deploy=dep)
            expected.update(_head_shapes(state, settings['channels'][-1], deploy=dep))
            missing, unexpected, mismatched = _mismatches(state, expected)
            missing = [k for k in missing if not k.endswith('num_batches_tracked')]
            if not (missing or unexpected or mismatched):
                fits.append(name)
                break
    return fits


# ----------------------------------------------------------------------------- input handling
def unwrap_state_dict(ckpt) -> StateDict:
    """The state dict inside a loaded checkpoint (``state_dict``/``model`` entry or the dict itself);
    a ``module.`` prefix (DataParallel) is stripped."""
    if not isinstance(ckpt, Mapping):
        raise UserInputError(f'expected a checkpoint dict, got {type(ckpt).__name__}')
    state = ckpt
    for key in ('state_dict', 'model'):
        if isinstance(ckpt.get(key), Mapping):
            state = ckpt[key]
            break
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise UserInputError(f'the checkpoint holds no tensors (keys: {", ".join(list(map(str, ckpt))[:8])})')
    if all(k.startswith('module.') for k in tensors):
        tensors = {k[len('module.') :]: v for k, v in tensors.items()}
    return tensors


def detect_format(state: Mapping[str, torch.Tensor]) -> str:
    """``'official'``, ``'timm'`` or ``'mm'`` (already repvit-mm/mmpretrain layout)."""
    keys = list(state)
    if any(k.startswith('features.') for k in keys):
        return 'official'
    if any(k.startswith(('stem.', 'stages.')) for k in keys):
        return 'timm'
    if any(k.startswith('backbone.') for k in keys):
        return 'mm'
    raise UserInputError(
        "not a RepViT checkpoint: expected authors' keys (features.*), timm keys "
        f'(stem.*, stages.*) or repvit-mm keys (backbone.*), got {", ".join(keys[:6])}'
    )


# ----------------------------------------------------------------------------- official layout
_OFFICIAL_BLOCK = (
    ('token_mixer.0.conv.c.', 'token_mixer.conv.conv.'),
    ('token_mixer.0.conv.bn.', 'token_mixer.conv.bn.'),
    ('token_mixer.0.conv1.c.', 'token_mixer.conv1.conv.'),  # legacy archs
    ('token_mixer.0.conv1.bn.', 'token_mixer.conv1.bn.'),  # legacy archs
    ('token_mixer.0.conv1.', 'token_mixer.conv1.'),
    ('token_mixer.0.bn.', 'token_mixer.bn.'),
    ('token_mixer.1.fc1.', 'se.fc1.'),
    ('token_mixer.1.fc2.', 'se.fc2.'),
    ('channel_mixer.m.0.c.', 'channel_mixer.conv1.conv.'),
    ('channel_mixer.m.0.bn.', 'channel_mixer.conv1.bn.'),
    ('channel_mixer.m.2.c.', 'channel_mixer.conv2.conv.'),
    ('channel_mixer.m.2.bn.', 'channel_mixer.conv2.bn.'),
)
_OFFICIAL_REDUCE = (
    ('token_mixer.0.c.', 'spatial_downsample.conv.'),
    ('token_mixer.0.bn.', 'spatial_downsample.bn.'),
    ('token_mixer.2.c.', 'channel_downsample.conv.'),
    ('token_mixer.2.bn.', 'channel_downsample.bn.'),
    ('channel_mixer.m.0.c.', 'ffn.conv1.conv.'),
    ('channel_mixer.m.0.bn.', 'ffn.conv1.bn.'),
    ('channel_mixer.m.2.c.', 'ffn.conv2.conv.'),
    ('channel_mixer.m.2.bn.', 'ffn.conv2.bn.'),
)
_OFFICIAL_FIXED = (
    ('features.0.0.c.', 'backbone.stem.conv1.conv.'),
    ('features.0.0.bn.', 'backbone.stem.conv1.bn.'),
    ('features.0.2.c.', 'backbone.stem.conv2.conv.'),
    ('features.0.2.bn.', 'backbone.stem.conv2.bn.'),
    ('classifier.classifier.bn.', 'head.head.bn.'),
    ('classifier.classifier.l.', 'head.head.linear.'),
    ('classifier.classifier_dist.bn.', 'head.head_dist.bn.'),
    ('classifier.classifier_dist.l.', 'head.head_dist.linear.'),
)


def official_feature_layout(arch) -> list[tuple[str, str]]:
    """``(our module prefix, kind)`` of the authors' ``features.1 ..`` entries in order; kind is
    ``'block'`` or ``'reduce'`` (the stride-2 row)."""
    settings = RepViT.get_arch_settings(arch)
    layout = []
    for i, depth in enumerate(settings['depths']):
        if i > 0:
            layout.append((f'backbone.stages.{i}.downsample.pre_block.', 'block'))
            layout.append((f'backbone.stages.{i}.downsample.', 'reduce'))
        layout += [(f'backbone.stages.{i}.blocks.{j}.', 'block') for j in range(depth)]
    return layout


def _rename(key: str, table) -> str | None:
    for src, dst in table:
        if key.startswith(src):
            return dst + key[len(src) :]
    return None


def convert_official(state_dict_or_ckpt, arch) -> StateDict:
    """Convert an authors' release checkpoint (``{'model': sd}`` or the bare ``sd``) for ``arch``.

    Returns an ``ImageClassifier`` state dict (``backbone.*``, ``head.*``).

    Raises:
        CheckpointMismatchError: the checkpoint does not fit ``arch`` (lists the keys).
    """
    state = unwrap_state_dict(state_dict_or_ckpt)
    out, unmapped = _official_to_mm(state, arch)
    return check_state_dict(
        out,
        arch,
        deploy=False,
        source="authors' checkpoint",
        extra_unexpected=unmapped,
        reconvert=lambda a: _official_to_mm(state, a),
    )


def _official_to_mm(state: Mapping[str, torch.Tensor], arch) -> tuple[StateDict, list[str]]:
    layout = official_feature_layout(arch)
    out: StateDict = OrderedDict()
    unmapped = []
    for key, value in state.items():
        new = _rename(key, _OFFICIAL_FIXED)
        if new is None and key.startswith('features.'):
            idx, _, rest = key[len('features.') :].partition('.')
            if idx.isdigit() and 1 <= int(idx) <= len(layout):
                prefix, kind = layout[int(idx) - 1]
                sub = _rename(rest, _OFFICIAL_BLOCK if kind == 'block' else _OFFICIAL_REDUCE)
                new = None if sub is None else prefix + sub
        if new is None:
            unmapped.append(key)
        else:
            out[new] = value
    return out, unmapped


# ----------------------------------------------------------------------------- timm layout
_TIMM_HEAD = (
    ('head.head.bn.', 'head.head.bn.'),
    ('head.head.l.', 'head.head.linear.'),
    ('head.head_dist.bn.', 'head.head_dist.bn.'),
    ('head.head_dist.l.', 'head.head_dist.linear.'),
)


def convert_timm(state_dict, arch) -> StateDict:
    """Convert a timm ``repvit_*`` state dict for ``arch`` (``repvit_m0_9`` -> ``'m0_9'``).

    Raises:
        CheckpointMismatchError: the state dict does not fit ``arch`` (lists the keys).
    """
    state = unwrap_state_dict(state_dict)
    out, unmapped = _timm_to_mm(state)
    return check_state_dict(out, arch, deploy=False, source='timm state dict', extra_unexpected=unmapped)


def _timm_to_mm(state: Mapping[str, torch.Tensor]) -> tuple[StateDict, list[str]]:
    out: StateDict = OrderedDict()
    unmapped = []
    for key, value in state.items():
        if key.startswith(('stem.', 'stages.')):
            out['backbone.' + '.'.join('conv' if p == 'c' else p for p in key.split('.'))] = value
        else:
            new = _rename(key, _TIMM_HEAD)
            if new is None:
                unmapped.append(key)
            else:
                out[new] = value
    return out, unmapped


# ----------------------------------------------------------------------------- auto
def convert_checkpoint(ckpt, arch, format: str = 'auto') -> StateDict:  # noqa: A002
    """Convert a loaded checkpoint of any supported layout to repvit-mm's (``backbone.*``, ``head.*``).

    Args:
        ckpt: a loaded checkpoint (``{'model': ...}``, ``{'state_dict': ...}``) or a bare state dict.
        arch: the RepViT arch (zoo name or dict) the weights belong to.
        format: ``'auto'`` (detect), ``'official'``, ``'timm'`` or ``'mm'`` (already ours: only checked;
            a fused deploy checkpoint is accepted too).

    Raises:
        CheckpointMismatchError: the weights do not fit ``arch``.
        UserInputError: unknown layout or format.
    """
    state = unwrap_state_dict(ckpt)
    fmt = detect_format(state) if format == 'auto' else format
    if fmt == 'official':
        return convert_official(state, arch)
    if fmt == 'timm':
        return convert_timm(state, arch)
    if fmt == 'mm':
        return check_state_dict(state, arch, deploy=None, source='repvit-mm checkpoint')
    raise UserInputError(f"unknown checkpoint format {format!r}; use 'auto', 'official', 'timm' or 'mm'")
