"""Save a release file (the authors' ImageNet / COCO / ADE20K weights, a timm state dict) in our layout."""

from __future__ import annotations

import os
import os.path as osp

import torch

from ..models import FORMATS, LAYOUTS, TASK_OF_LAYOUT, RepViT, convert_checkpoint, read_checkpoint
from ..models.backbones.repvit import normalize_arch_name
from ..utils.errors import UserInputError
from ..utils.outputs import atomic_output, check_output

__all__ = ['convert_checkpoint_file']


def convert_checkpoint_file(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    arch: str,
    format: str = 'auto',
    force: bool = False,  # noqa: A002
) -> str:
    """Convert ``src`` (any scheme mmengine reads, weights-only) with :func:`convert_checkpoint` and save
    ``{'state_dict': ..., 'meta': ...}`` to ``dst``; return the line that says what was converted.

    ``meta`` holds ``arch``, ``task``, ``source_format``, ``converted_from``, the class names
    (``dataset_meta``) and, for a classifier, ``num_classes`` and ``distillation_head``. Nothing is
    written unless the weights fit ``arch``.

    Raises:
        UserInputError: an unknown arch, ``src`` already in our layout or not in ``format``'s layout,
            weights that do not fit ``arch``, or ``dst`` exists and ``force`` is false.
    """
    src, dst = str(src), str(dst)
    name = normalize_arch_name(arch)
    if name not in RepViT.arch_zoo:
        raise UserInputError(f'unknown --arch {arch!r}; choose from {", ".join(RepViT.arch_zoo)}')
    if osp.abspath(src) == osp.abspath(dst):
        raise UserInputError('SRC and DST are the same file')
    if not osp.exists(dst):
        os.makedirs(osp.dirname(osp.abspath(dst)), exist_ok=True)
    out = check_output(dst, force)
    ckpt = read_checkpoint(src)
    if format != 'auto' and FORMATS[format] != ckpt.layout:
        raise UserInputError(
            f'{src} is not in the --format {format} layout: its keys look like a {LAYOUTS[ckpt.layout]}'
        )
    if ckpt.layout == 'repvit-mm':
        raise UserInputError(
            f'{src} is already a repvit-mm checkpoint (keys {", ".join(list(ckpt.state)[:3])}, ...); nothing to convert'
        )
    try:
        converted = convert_checkpoint(ckpt, name)
    except UserInputError as err:
        raise UserInputError(str(err) if src in str(err) else f'{src}: {err}') from None
    task = TASK_OF_LAYOUT[ckpt.layout]
    fmt = next((short for short, layout in FORMATS.items() if layout == ckpt.layout), ckpt.layout)
    meta = dict(arch=name, task=task, source_format=fmt, converted_from=osp.basename(src))
    if task == 'classification':
        weight = converted.get('head.head.linear.weight')
        meta.update(
            distillation_head=any(k.startswith('head.head_dist.') for k in converted),
            num_classes=None if weight is None else int(weight.shape[0]),
        )
    if ckpt.dataset_meta:
        meta['dataset_meta'] = ckpt.dataset_meta
    with atomic_output(out) as tmp:  # a failed save never leaves a half-written DST
        torch.save({'state_dict': converted, 'meta': meta}, tmp)
    return (
        f'converted {fmt} checkpoint {src} ({LAYOUTS[ckpt.layout]}; {task}, arch {name}, '
        f'{len(converted)} tensors) -> {dst}'
    )
