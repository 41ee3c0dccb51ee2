"""Checkpoint layouts: which one a state dict is in (:func:`detect_layout`), its keys in ours (:func:`to_repvit_mm`).

- **authors-classification** (THU-MIG/RepViT ``{'model': ...}``): ``features.0`` the stem, then one entry per
  ``cfgs`` row: a block, or (stride 2) our downsampling block's reduction part, its ``pre_block`` the row before.
- **authors-coco / -ade20k / -backbone** (mmdet 2.28 / mmseg 0.30 releases): ``backbone.features.<n>`` as above;
  the neck and heads have the same names in mmdet 3.3 / mmseg 1.2.
- **timm** (``repvit_*``): our names with ``c`` for ``conv``, ``l`` for ``linear``, no ``backbone.``.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Mapping

import torch

from .backbones.repvit import RepViT

__all__ = ['LAYOUTS', 'FORMATS', 'TASK_OF_LAYOUT', 'detect_layout', 'to_repvit_mm', 'official_feature_layout']

#: The layouts :func:`detect_layout` tells apart: ``(format name, task, how messages name it)``; hence
#: LAYOUTS (layout -> its name in messages), FORMATS (``convert_checkpoint(format=...)`` -> layout) and
#: TASK_OF_LAYOUT (release layout -> its task).
_TABLE = {
    'authors-classification': ('official', 'classification', "authors' ImageNet release (features.*, classifier.*)"),
    'authors-coco': ('coco', 'detection', "authors' COCO Mask R-CNN release (mmdet 2.28, backbone.features.*)"),
    'authors-ade20k': (
        'ade20k',
        'segmentation',
        "authors' ADE20K Semantic FPN release (mmseg 0.30, backbone.features.*)",
    ),
    'authors-backbone': (None, 'backbone', "authors' detection/segmentation backbone (backbone.features.*)"),
    'timm': ('timm', 'classification', 'timm repvit_* state dict (stem.*, stages.*)'),
    'repvit-mm': ('mm', None, 'repvit-mm checkpoint'),
}
LAYOUTS = {layout: text for layout, (_, _, text) in _TABLE.items()}
FORMATS = {fmt: layout for layout, (fmt, _, _) in _TABLE.items() if fmt}
TASK_OF_LAYOUT = {layout: task for layout, (_, task, _) in _TABLE.items() if task}


def detect_layout(state: Mapping[str, torch.Tensor]) -> str:
    """One of :data:`LAYOUTS`, from the keys (``'repvit-mm'`` for anything else)."""
    has = lambda *prefixes: any(k.startswith(prefixes) for k in state)  # noqa: E731
    if has('backbone.features.'):
        if has('rpn_head.', 'roi_head.'):
            return 'authors-coco'
        return 'authors-ade20k' if has('decode_head.', 'auxiliary_head.') else 'authors-backbone'
    if has('features.'):
        return 'authors-classification'
    return 'timm' if any(k.startswith(('stem.', 'stages.')) and '.c.' in k for k in state) else 'repvit-mm'


def _convbn(*pairs: tuple[str, str]) -> tuple[tuple[str, str], ...]:
    """The renames of ConvBNs ``(theirs, ours)``: ``c.`` -> ``conv.``, ``bn.`` -> ``bn.``."""
    return tuple(r for src, dst in pairs for r in ((src + 'c.', dst + 'conv.'), (src + 'bn.', dst + 'bn.')))


_OFFICIAL_BLOCK = (
    *_convbn(('token_mixer.0.conv.', 'token_mixer.conv.'), ('token_mixer.0.conv1.', 'token_mixer.conv1.')),
    ('token_mixer.0.conv1.', 'token_mixer.conv1.'),  # a plain conv (a ConvBN in legacy archs)
    ('token_mixer.0.bn.', 'token_mixer.bn.'),
    ('token_mixer.1.fc1.', 'se.fc1.'),
    ('token_mixer.1.fc2.', 'se.fc2.'),
    *_convbn(('channel_mixer.m.0.', 'channel_mixer.conv1.'), ('channel_mixer.m.2.', 'channel_mixer.conv2.')),
)
_OFFICIAL_REDUCE = _convbn(
    ('token_mixer.0.', 'spatial_downsample.'),
    ('token_mixer.2.', 'channel_downsample.'),
    ('channel_mixer.m.0.', 'ffn.conv1.'),
    ('channel_mixer.m.2.', 'ffn.conv2.'),
)
_OFFICIAL_FIXED = (
    *_convbn(('features.0.0.', 'backbone.stem.conv1.'), ('features.0.2.', 'backbone.stem.conv2.')),
    ('classifier.classifier.bn.', 'head.head.bn.'),
    ('classifier.classifier.l.', 'head.head.linear.'),
    ('classifier.classifier_dist.bn.', 'head.head_dist.bn.'),
    ('classifier.classifier_dist.l.', 'head.head_dist.linear.'),
)
_TIMM_HEAD = (
    ('head.head.bn.', 'head.head.bn.'),
    ('head.head.l.', 'head.head.linear.'),
    ('head.head_dist.bn.', 'head.head_dist.bn.'),
    ('head.head_dist.l.', 'head.head_dist.linear.'),
)


def official_feature_layout(arch) -> list[tuple[str, str]]:
    """``(our module prefix, 'block' or 'reduce')`` of the authors' ``features.1 ..`` entries in order."""
    layout = []
    for i, depth in enumerate(RepViT.get_arch_settings(arch)['depths']):
        stage = f'backbone.stages.{i}.'
        if i > 0:
            layout += [(stage + 'downsample.pre_block.', 'block'), (stage + 'downsample.', 'reduce')]
        layout += [(f'{stage}blocks.{j}.', 'block') for j in range(depth)]
    return layout


def _rename(key: str, table) -> str | None:
    return next((dst + key[len(src) :] for src, dst in table if key.startswith(src)), None)


def _official_key(key: str, layout: list[tuple[str, str]]) -> str | None:
    new = _rename(key, _OFFICIAL_FIXED)
    if new is None and key.startswith('features.'):
        idx, _, rest = key[len('features.') :].partition('.')
        if idx.isdigit() and 1 <= int(idx) <= len(layout):
            prefix, kind = layout[int(idx) - 1]
            sub = _rename(rest, _OFFICIAL_BLOCK if kind == 'block' else _OFFICIAL_REDUCE)
            new = None if sub is None else prefix + sub
    return new


def _timm_key(key: str) -> str | None:
    if key.startswith(('stem.', 'stages.')):
        return 'backbone.' + '.'.join('conv' if p == 'c' else p for p in key.split('.'))
    return _rename(key, _TIMM_HEAD)


def to_repvit_mm(state: Mapping[str, torch.Tensor], layout: str, arch) -> tuple[dict[str, torch.Tensor], list[str]]:
    """``(state in our keys, keys that map to nothing)`` of a ``layout`` state dict for RepViT ``arch``."""
    if layout == 'repvit-mm':
        return dict(state), []
    rename = _timm_key if layout == 'timm' else functools.partial(_official_key, layout=official_feature_layout(arch))
    dense = layout != 'authors-classification' and layout.startswith('authors-')
    out = OrderedDict()
    unmapped = []
    for key, value in state.items():
        # the neck and heads of the COCO / ADE20K releases keep their names
        new = key if dense and not key.startswith('backbone.') else rename(key[len('backbone.') :] if dense else key)
        if new is None:
            unmapped.append(key)
        else:
            out[new] = value
    return out, unmapped
