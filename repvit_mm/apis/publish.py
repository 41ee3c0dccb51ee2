"""Turn a training checkpoint into a release file: weights and metadata only, its hash in the name."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import torch

from ..utils.errors import UserInputError
from ..utils.outputs import atomic_output, check_output
from ..utils.safe_checkpoint import safe_torch_load
from ..utils.safe_config import check_checkpoint_configs

__all__ = ['publish_checkpoint', 'TRAINING_STATE_KEYS']

#: What a training checkpoint carries only to resume training.
TRAINING_STATE_KEYS = (
    'optimizer',
    'message_hub',
    'param_schedulers',
    'scheduler',
    'lr_scheduler',
    'amp',
    'loss_scaler',
    'ema_state_dict',
)


def publish_checkpoint(src: str | os.PathLike, out: str | os.PathLike, *, force: bool = False) -> Path:
    """Write ``src`` without its training state as ``<out stem>-<first 8 hex digits of its sha256>.pth``.

    ``meta`` (dataset classes, config, epoch/iter) and ``state_dict`` are kept.

    Raises:
        UserInputError: ``src`` has no ``state_dict``, its config text is not plain data
            (:class:`~repvit_mm.utils.safe_config.UnsafeConfigError`), ``out`` is not a ``.pth`` name, or the published
            file exists and ``force`` is false.
    """
    out = Path(out).expanduser()
    if out.suffix != '.pth':
        raise UserInputError(f'output {out}: expected a .pth file name')
    check_output(out.parent / f'{out.stem}-00000000.pth', force=True)  # the directory can be written to
    checkpoint = safe_torch_load(str(src), map_location='cpu')
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get('state_dict'), dict):
        raise UserInputError(f'{src}: not a training checkpoint (no state_dict in it)')
    # A release is read by people without repvit_mm, whose mmengine would run its config text.
    check_checkpoint_configs(checkpoint, str(src))
    kept = {k: v for k, v in checkpoint.items() if k not in TRAINING_STATE_KEYS}
    buffer = io.BytesIO()
    torch.save(kept, buffer)
    data = buffer.getvalue()
    final = check_output(out.parent / f'{out.stem}-{hashlib.sha256(data).hexdigest()[:8]}.pth', force=force)
    with atomic_output(final) as tmp:
        tmp.write_bytes(data)
    return final
