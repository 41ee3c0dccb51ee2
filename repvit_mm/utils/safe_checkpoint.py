"""Load mmengine checkpoints with ``torch.load(weights_only=True)``.

Since torch 2.6, ``torch.load`` only unpickles tensors and plain containers unless told otherwise, and
mmengine 0.10.7 writes a few other objects into its checkpoints (the ``message_hub`` holds
``HistoryBuffer`` objects with numpy arrays inside). Rather than switching ``weights_only`` off -- which
would let a checkpoint run arbitrary code when loaded -- we allow-list exactly those globals, and make
mmengine's local-file loader report any other global with one clear error.
"""
from __future__ import annotations

import argparse
import os.path as osp
import pickle
import re

import numpy as np
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner import CheckpointLoader

__all__ = ['UnsafeCheckpointError', 'MMENGINE_CHECKPOINT_GLOBALS', 'allow_mmengine_checkpoint_globals',
           'safe_torch_load']


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint pickles an object that is not on the allow-list."""


def _numpy_globals() -> list:
    """What numpy writes when arrays, scalars and dtypes are pickled (numpy 1.x and 2.x spellings)."""
    multiarray = np._core.multiarray if hasattr(np, '_core') else np.core.multiarray
    dtype_classes = [type(np.dtype(t)) for t in (
        np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
        np.float16, np.float32, np.float64)]
    return [multiarray._reconstruct, multiarray.scalar, np.ndarray, np.dtype, *dtype_classes]


def _history_buffer_statistic(owner, name: str):
    """Stands in for ``builtins.getattr`` while unpickling.

    A ``HistoryBuffer`` pickles its statistics methods (``mean``, ``max``, ...) as
    ``getattr(HistoryBuffer, 'mean')``. Allowing the real ``getattr`` would hand any attribute of any
    allowed object to the file, so only exactly those lookups are answered.
    """
    # The built-in statistics are only added to ``_statistics_methods`` when a first buffer is created.
    if owner is HistoryBuffer and name in {'min', 'max', 'current', 'mean', *HistoryBuffer._statistics_methods}:
        return getattr(owner, name)
    raise pickle.UnpicklingError(f"GLOBAL builtins.getattr({getattr(owner, '__name__', owner)!r}, {name!r})")


#: Everything mmengine 0.10.7 (Runner checkpoints, including ``message_hub`` and ``meta``) pickles
#: beyond what ``weights_only=True`` accepts by default; plus ``argparse.Namespace``, which DeiT-style
#: training scripts (the authors' code) save their options in (``'args'``): a Namespace only holds
#: attributes, it runs nothing when unpickled.
MMENGINE_CHECKPOINT_GLOBALS: list = [HistoryBuffer, *_numpy_globals(),
                                     (_history_buffer_statistic, 'builtins.getattr'), argparse.Namespace]

_GLOBAL_IN_MESSAGE = re.compile(r'GLOBAL ([\w.]+(?:\(.*?\))?)')


def allow_mmengine_checkpoint_globals() -> None:
    """Add :data:`MMENGINE_CHECKPOINT_GLOBALS` to torch's weights-only allow-list (idempotent)."""
    torch.serialization.add_safe_globals(MMENGINE_CHECKPOINT_GLOBALS)


def safe_torch_load(filename: str, map_location=None):
    """``torch.load(filename, weights_only=True)`` with a one-line error naming a refused global."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'checkpoint not found: {filename}')
    try:
        return torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        refused = _refused_globals(filename) or _GLOBAL_IN_MESSAGE.findall(str(err))
        if not refused:
            raise UnsafeCheckpointError(f'{filename}: not a loadable checkpoint ({str(err).splitlines()[0]})') \
                from None
        raise UnsafeCheckpointError(
            f"{filename}: refused to load: it pickles {', '.join(map(repr, refused))}, which is not a tensor, "
            'a plain container or one of the mmengine/numpy types on the allow-list (repvit_mm.utils.'
            'MMENGINE_CHECKPOINT_GLOBALS); loading it could run code from the file') from None
    except Exception as err:  # truncated files, not a torch checkpoint at all, ...
        raise UnsafeCheckpointError(f'{filename}: not a readable checkpoint ({type(err).__name__}: {err})') \
            from None


def _refused_globals(filename: str) -> list[str]:
    """Fully qualified names of the globals in ``filename`` that are not allowed (empty if unknown)."""
    try:
        return torch.serialization.get_unsafe_globals_in_checkpoint(filename)
    except Exception:  # legacy (non-zip) format: fall back to torch's error message
        return []


def _load_from_local(filename: str, map_location=None):
    return safe_torch_load(filename, map_location)


def install() -> None:
    """Allow-list mmengine's globals and route mmengine's local checkpoint loading through
    :func:`safe_torch_load`. Called when :mod:`repvit_mm` is imported."""
    allow_mmengine_checkpoint_globals()
    CheckpointLoader.register_scheme(prefixes='', force=True)(_load_from_local)
