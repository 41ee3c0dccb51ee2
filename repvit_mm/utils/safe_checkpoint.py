"""Load checkpoints with ``torch.load(weights_only=True)``, whatever scheme names them.

mmengine checkpoints pickle a few objects beyond tensors: we allow-list exactly those rather than switch
``weights_only`` off (which lets a file run code). :func:`install` registers mmengine's own loader of every scheme
with each ``torch.load`` it (or torch.hub) makes done by :func:`safe_torch_load`.
"""

from __future__ import annotations

import argparse
import io
import os
import os.path as osp
import pickle
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from urllib.error import HTTPError, URLError

import mmengine.runner.checkpoint as mmengine_checkpoint
import numpy as np
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner import CheckpointLoader

from .errors import UserInputError
from .safe_config import name_config_texts, plain_str

__all__ = ['UnsafeCheckpointError', 'MMENGINE_CHECKPOINT_GLOBALS', 'safe_torch_load', 'source_of', 'SCHEMES']


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint pickles an object that is not on the allow-list, or is not a checkpoint at all."""


# how numpy arrays, scalars and dtypes pickle (numpy 2.x / 1.x spellings)
_multiarray = np._core.multiarray if hasattr(np, '_core') else np.core.multiarray
_DTYPES = 'bool int8 int16 int32 int64 uint8 uint16 uint32 uint64 float16 float32 float64'.split()
_NUMPY = [_multiarray._reconstruct, _multiarray.scalar, np.ndarray, np.dtype, *(type(np.dtype(t)) for t in _DTYPES)]


def _history_buffer_statistic(owner, name: str):
    """``builtins.getattr`` for ``HistoryBuffer``'s statistics only (pickled as ``getattr(HistoryBuffer, 'mean')``);
    the real getattr would hand the file any attribute."""
    # the built-in statistics join ``_statistics_methods`` only when a first buffer is created
    if owner is HistoryBuffer and name in {'min', 'max', 'current', 'mean', *HistoryBuffer._statistics_methods}:
        return getattr(owner, name)
    raise pickle.UnpicklingError(f'GLOBAL builtins.getattr({getattr(owner, "__name__", owner)!r}, {name!r})')


def _empty_bytes(*args) -> bytes:
    """``builtins.bytes()`` only (an empty numpy array's data): the real one lets a file allocate ``bytes(10**12)``."""
    if args:
        raise pickle.UnpicklingError(f'GLOBAL builtins.bytes{args!r} (only bytes() is allowed)')
    return b''


#: What mmengine 0.10.7 checkpoints (``message_hub``, numpy arrays, scalars and dtypes) pickle beyond torch's
#: default allow-list; ``str(text)`` (a re-saved :class:`~.safe_config.ConfigText`, of a ``str`` only); and
#: ``argparse.Namespace``, the options DeiT-style scripts (the authors') save as ``'args'``: it runs nothing.
MMENGINE_CHECKPOINT_GLOBALS: list = [
    HistoryBuffer,
    *_NUMPY,
    (_history_buffer_statistic, 'builtins.getattr'),
    (_empty_bytes, 'builtins.bytes'),
    (plain_str, 'builtins.str'),
    argparse.Namespace,
]


_torch_load = torch.load  # what safe_torch_load calls while the scheme loaders stand in for torch.load
_patching = threading.RLock()  # held while they do


def safe_torch_load(filename: str | io.IOBase, map_location=None, *, name: str | None = None):
    """``torch.load(filename, weights_only=True)``, one error line naming a refused global. ``filename`` may be
    an open binary file (a download in memory); ``name`` is what messages call it then."""
    if isinstance(filename, (str, os.PathLike)):
        filename = osp.expanduser(str(filename))
        name = name or filename
        if not osp.isfile(filename):
            raise FileNotFoundError(f'checkpoint not found: {filename}')
    try:
        return _torch_load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        refused = _refused_globals(filename) or re.findall(r'GLOBAL ([\w.]+(?:\(.*?\))?)', str(err))
        if not refused:  # torch's reason, without its advice to load with weights_only=False
            reason = str(err).split('WeightsUnpickler error:')[-1].split('Check the documentation of torch.load')[0]
            lines = [line.strip() for line in reason.splitlines() if line.strip() and 'weights_only' not in line]
            raise UnsafeCheckpointError(
                f'{name}: not a loadable checkpoint (not written by torch.save, or damaged: '
                f'{lines[0] if lines else "not a torch checkpoint"})'
            ) from None
        raise UnsafeCheckpointError(
            f'{name}: refused to load: it pickles {", ".join(map(repr, refused))}, which is not a tensor, '
            'a plain container or one of the mmengine/numpy types on the allow-list (repvit_mm.utils.'
            'MMENGINE_CHECKPOINT_GLOBALS); loading it could run code from the file'
        ) from None
    except Exception as err:  # truncated files, not a torch checkpoint at all, ...
        raise UnsafeCheckpointError(f'{name}: not a readable checkpoint ({type(err).__name__}: {err})') from None


def _refused_globals(file) -> list[str]:
    """The fully qualified names of the globals in ``file`` that are not allowed ([] for the legacy format)."""
    try:
        if not isinstance(file, str):
            file.seek(0)
        return torch.serialization.get_unsafe_globals_in_checkpoint(file)
    except Exception:  # noqa: BLE001 - not a zip file: torch's message names the first one
        return []


def _load_local(filename: str, map_location=None):
    """A local ``.pth`` (weights-only) or ``.safetensors`` file (how timm weights come from the HF hub)."""
    path = osp.expanduser(filename)
    if not (filename.endswith('.safetensors') and osp.isfile(path)):
        return safe_torch_load(filename, map_location)  # which reports a missing file
    from safetensors.torch import load_file

    try:
        return load_file(path, device='cpu')
    except Exception as err:  # noqa: BLE001 - any parse failure is a bad input file
        raise UnsafeCheckpointError(f'{path}: not a readable safetensors file ({err})') from None


def _safe(loader):
    """mmengine's ``loader`` of a scheme with its every ``torch.load`` done by :func:`safe_torch_load` (torch.hub's
    asks for ``weights_only=False``); a failed download is one :class:`UserInputError`; the result is named."""

    def load_from_safe(filename: str, map_location=None):
        def load(f, map_location=None, **_):
            at = f if isinstance(f, str) and f != osp.expanduser(filename) else ''
            return safe_torch_load(f, map_location, name=f'{filename} ({at})' if at else filename)

        with _patching:  # for the call: a torch.load elsewhere meanwhile is weights-only as well
            previous, torch.load = torch.load, load
            try:
                loaded = loader(filename, map_location)
            except URLError as err:  # offline, DNS, refused, HTTP 404
                why = f'HTTP {err.code} {err.reason}' if isinstance(err, HTTPError) else str(err.reason)
                raise UserInputError(
                    f'cannot download checkpoint {filename} ({why}); download it elsewhere and pass the file, '
                    f'or place it in {osp.join(torch.hub.get_dir(), "checkpoints")}'
                ) from None
            finally:
                torch.load = previous
        name_config_texts(loaded, filename)
        return _with_source(loaded, filename)

    load_from_safe.__name__ += '_' + loader.__name__.split('_')[-1]  # mmengine logs [10:], 'safe_http'
    return load_from_safe


#: mmengine 0.10.7's scheme prefixes and loaders (``''``: a local file).
SCHEMES = {
    ('',): _load_local,
    ('http://', 'https://'): mmengine_checkpoint.load_from_http,
    ('modelzoo://', 'torchvision://'): mmengine_checkpoint.load_from_torchvision,
    ('open-mmlab://', 'openmmlab://'): mmengine_checkpoint.load_from_openmmlab,
    ('mmcls://',): mmengine_checkpoint.load_from_mmcls,
    ('pavi://',): mmengine_checkpoint.load_from_pavi,
    (r'(\S+\:)?s3://', r'(\S+\:)?petrel://'): mmengine_checkpoint.load_from_ceph,
}


def source_of(state) -> str | None:
    """The name a safe loader read ``state`` from (it rides in the ``_metadata`` mmengine passes on), or None."""
    return getattr(getattr(state, '_metadata', None), 'source', None)


def _with_source(obj, name: str):
    """``obj`` with ``name`` in the ``_metadata`` of its state dict (made an OrderedDict, to carry attributes)."""
    if not isinstance(obj, Mapping):
        return obj
    inner = isinstance(obj.get('state_dict'), Mapping)
    state = obj['state_dict'] if inner else obj
    if not isinstance(state, OrderedDict):
        state = OrderedDict(state)
        obj = {**obj, 'state_dict': state} if inner else state
    state._metadata = OrderedDict(getattr(state, '_metadata', None) or {})
    state._metadata.source = name
    return obj


def install() -> None:
    """Allow-list mmengine's globals and register the safe loader of every scheme (when repvit_mm is imported)."""
    torch.serialization.add_safe_globals(MMENGINE_CHECKPOINT_GLOBALS)
    for prefixes, loader in SCHEMES.items():
        CheckpointLoader.register_scheme(prefixes=list(prefixes), loader=_safe(loader), force=True)
