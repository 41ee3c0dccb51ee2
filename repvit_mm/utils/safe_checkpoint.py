"""Load checkpoints with ``torch.load(weights_only=True)``, whatever scheme names them.

Since torch 2.6, ``torch.load`` only unpickles tensors and plain containers unless told otherwise, and
mmengine 0.10.7 writes a few other objects into its checkpoints (the ``message_hub`` holds
``HistoryBuffer`` objects with numpy arrays inside). Rather than switching ``weights_only`` off -- which
would let a checkpoint run arbitrary code when loaded -- we allow-list exactly those globals.

mmengine's :class:`~mmengine.runner.CheckpointLoader` picks a loader by the name's prefix: local files,
``http(s)://``, ``torchvision://`` / ``modelzoo://``, ``open-mmlab://`` / ``openmmlab://``, ``mmcls://``,
``pavi://``, ``s3://`` / ``petrel://``. Its remote loaders call ``torch.hub.load_state_dict_from_url`` or
``torch.load`` with ``weights_only=False``. :func:`install` registers a safe loader for every one of those
prefixes: the same downloads (into torch.hub's cache, as usual), the same URL tables, then
:func:`safe_torch_load`. A refused file is one :class:`UnsafeCheckpointError` naming the file and the
refused globals. What the loaders return carries the file's name for error messages (:func:`source_of`).
"""

from __future__ import annotations

import argparse
import io
import os
import os.path as osp
import pickle
import re
from collections import OrderedDict
from collections.abc import Mapping
from urllib.error import HTTPError, URLError
from urllib.parse import urlparse

import numpy as np
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner import CheckpointLoader

from . import safe_config as _safe_config
from .errors import UserInputError

__all__ = [
    'UnsafeCheckpointError',
    'MMENGINE_CHECKPOINT_GLOBALS',
    'allow_mmengine_checkpoint_globals',
    'safe_torch_load',
    'source_of',
    'SAFE_SCHEMES',
]


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint pickles an object that is not on the allow-list, or is not a checkpoint at all."""


def _numpy_globals() -> list:
    """What numpy writes when arrays, scalars and dtypes are pickled (numpy 1.x and 2.x spellings)."""
    multiarray = np._core.multiarray if hasattr(np, '_core') else np.core.multiarray
    dtype_classes = [
        type(np.dtype(t))
        for t in 'bool int8 int16 int32 int64 uint8 uint16 uint32 uint64 float16 float32 float64'.split()
    ]
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
    raise pickle.UnpicklingError(f'GLOBAL builtins.getattr({getattr(owner, "__name__", owner)!r}, {name!r})')


def _empty_bytes(*args) -> bytes:
    """Stands in for ``builtins.bytes`` while unpickling.

    With pickle protocol 2 (``torch.save``'s), an *empty* numpy array (an empty ``HistoryBuffer``) pickles
    its data as ``bytes()`` -- non-empty data goes through ``_codecs.encode``, which torch already allows.
    The real ``bytes`` would also let a file allocate ``bytes(10**12)``; only the empty call is answered.
    """
    if args:
        raise pickle.UnpicklingError(f'GLOBAL builtins.bytes{args!r} (only bytes() is allowed)')
    return b''


#: Everything mmengine 0.10.7 (Runner checkpoints, including ``message_hub`` and ``meta``) pickles
#: beyond what ``weights_only=True`` accepts by default; plus ``argparse.Namespace``, which DeiT-style
#: training scripts (the authors' code) save their options in (``'args'``): a Namespace only holds
#: attributes, it runs nothing when unpickled.
MMENGINE_CHECKPOINT_GLOBALS: list = [
    HistoryBuffer,
    *_numpy_globals(),
    (_history_buffer_statistic, 'builtins.getattr'),
    (_empty_bytes, 'builtins.bytes'),
    argparse.Namespace,
]

_GLOBAL_IN_MESSAGE = re.compile(r'GLOBAL ([\w.]+(?:\(.*?\))?)')


def allow_mmengine_checkpoint_globals() -> None:
    """Add :data:`MMENGINE_CHECKPOINT_GLOBALS` to torch's weights-only allow-list (idempotent)."""
    torch.serialization.add_safe_globals(MMENGINE_CHECKPOINT_GLOBALS)


def safe_torch_load(filename: str | io.IOBase, map_location=None, *, name: str | None = None):
    """``torch.load(filename, weights_only=True)`` with a one-line error naming a refused global.

    ``filename`` may also be an open binary file (a download held in memory); ``name`` is what error
    messages call it then.
    """
    if isinstance(filename, (str, os.PathLike)):
        filename = osp.expanduser(str(filename))
        name = name or filename
        if not osp.isfile(filename):
            raise FileNotFoundError(f'checkpoint not found: {filename}')
    try:
        return torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        refused = _refused_globals(filename) or _GLOBAL_IN_MESSAGE.findall(str(err))
        if not refused:
            raise UnsafeCheckpointError(
                f'{name}: not a loadable checkpoint (not written by torch.save, or damaged: {_unpickler_reason(err)})'
            ) from None
        raise UnsafeCheckpointError(
            f'{name}: refused to load: it pickles {", ".join(map(repr, refused))}, which is not a tensor, '
            'a plain container or one of the mmengine/numpy types on the allow-list (repvit_mm.utils.'
            'MMENGINE_CHECKPOINT_GLOBALS); loading it could run code from the file'
        ) from None
    except Exception as err:  # truncated files, not a torch checkpoint at all, ...
        raise UnsafeCheckpointError(f'{name}: not a readable checkpoint ({type(err).__name__}: {err})') from None


def _unpickler_reason(err: BaseException) -> str:
    """What torch's weights-only unpickler found, without its advice to load with ``weights_only=False``
    (which would let the file run code)."""
    message = str(err)
    reason = message.split('WeightsUnpickler error:', 1)[1] if 'WeightsUnpickler error:' in message else message
    reason = reason.split('Check the documentation of torch.load', 1)[0]
    lines = [line.strip() for line in reason.splitlines() if line.strip() and 'weights_only' not in line]
    return lines[0] if lines else 'not a torch checkpoint'


def _refused_globals(filename) -> list[str]:
    """Fully qualified names of the globals in ``filename`` that are not allowed (empty if unknown)."""
    try:
        if not isinstance(filename, str):
            filename.seek(0)
        return torch.serialization.get_unsafe_globals_in_checkpoint(filename)
    except Exception:  # legacy (non-zip) format: fall back to torch's error message
        return []


# ----------------------------------------------------------------------------------------- scheme loaders
def _load_local(filename: str, map_location=None):
    """A local ``.pth`` (weights-only) or ``.safetensors`` file (how timm weights come from the HF hub)."""
    if not str(filename).endswith('.safetensors'):
        return safe_torch_load(filename, map_location)
    path = osp.expanduser(filename)
    if not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint not found: {path}')
    from safetensors.torch import load_file

    try:
        return load_file(path, device='cpu')
    except Exception as err:  # noqa: BLE001 - any parse failure is a bad input file
        raise UnsafeCheckpointError(f'{path}: not a readable safetensors file ({err})') from None


def _hub_cached_file(url: str, model_dir: str | None = None) -> str:
    """Download ``url`` into torch.hub's checkpoint cache unless it is there already (as
    ``torch.hub.load_state_dict_from_url`` does); return the cached file."""
    model_dir = model_dir or osp.join(torch.hub.get_dir(), 'checkpoints')
    os.makedirs(model_dir, exist_ok=True)
    cached = osp.join(model_dir, osp.basename(urlparse(url).path))
    if not osp.exists(cached):
        hash_prefix = None
        match = torch.hub.HASH_REGEX.search(osp.basename(cached))
        if match:  # torchvision-style names end with the file's sha256 prefix
            hash_prefix = match.group(1)
        try:
            torch.hub.download_url_to_file(url, cached, hash_prefix, progress=os.isatty(0))
        except (OSError, ValueError, RuntimeError) as err:  # offline, DNS, HTTP 404, refused, hash mismatch
            if isinstance(err, HTTPError):
                why = f'HTTP {err.code} {err.reason}'
            else:
                why = str(err.reason) if isinstance(err, URLError) else f'{type(err).__name__}: {err}'
            raise UserInputError(
                f'cannot download checkpoint {url} ({why}); download it elsewhere and pass the file, '
                f'or place it at {cached}'
            ) from None
    return cached


def _load_http(filename: str, map_location=None, model_dir: str | None = None):
    from mmengine.dist import get_dist_info

    rank, world_size = get_dist_info()
    if rank == 0:
        cached = _hub_cached_file(filename, model_dir)
    if world_size > 1:  # rank 0 downloads, the others wait and read its copy
        torch.distributed.barrier()
        if rank > 0:
            cached = _hub_cached_file(filename, model_dir)
    return safe_torch_load(cached, map_location, name=f'{filename} (cached as {cached})')


def _load_torchvision(filename: str, map_location=None):
    from mmengine.runner.checkpoint import get_torchvision_models

    name = filename.split('://', 1)[1]
    return _load_http(get_torchvision_models()[name], map_location)


def _load_openmmlab(filename: str, map_location=None):
    from mmengine.runner.checkpoint import _get_mmengine_home, get_deprecated_model_names, get_external_models

    name = filename.split('://', 1)[1]
    name = get_deprecated_model_names().get(name, name)
    url = get_external_models()[name]
    if url.startswith(('http://', 'https://')):
        return _load_http(url, map_location)
    return safe_torch_load(osp.join(_get_mmengine_home(), url), map_location)


def _load_mmcls(filename: str, map_location=None):
    from mmengine.runner.checkpoint import _process_mmcls_checkpoint, get_mmcls_models

    return _process_mmcls_checkpoint(_load_http(get_mmcls_models()[filename[len('mmcls://') :]], map_location))


def _load_pavi(filename: str, map_location=None):
    import tempfile

    from pavi import modelcloud

    model = modelcloud.get(filename[len('pavi://') :])
    with tempfile.TemporaryDirectory() as tmp:
        path = osp.join(tmp, model.name)
        model.download(path)
        return safe_torch_load(path, map_location, name=filename)


def _load_ceph(filename: str, map_location=None, backend: str = 'petrel'):
    from mmengine.fileio import get_file_backend

    data = get_file_backend(filename, backend_args={'backend': backend}).get(filename)
    with io.BytesIO(data) as buffer:
        return safe_torch_load(buffer, map_location, name=filename)


#: prefix -> safe loader, for every prefix mmengine 0.10.7 registers (``''`` is a local file).
SAFE_SCHEMES: dict = {
    '': _load_local,
    'http://': _load_http,
    'https://': _load_http,
    'modelzoo://': _load_torchvision,
    'torchvision://': _load_torchvision,
    'open-mmlab://': _load_openmmlab,
    'openmmlab://': _load_openmmlab,
    'mmcls://': _load_mmcls,
    'pavi://': _load_pavi,
    r'(\S+\:)?s3://': _load_ceph,
    r'(\S+\:)?petrel://': _load_ceph,
}


# ----------------------------------------------------------------------------------------- the file's name
def source_of(state) -> str | None:
    """The name the safe loaders read ``state`` from, if it is one of their state dicts (as mmengine hands
    it on to ``load_state_dict``: the ``_metadata`` of the state dict is kept, the name rides in it)."""
    return getattr(getattr(state, '_metadata', None), 'source', None)


def _with_source(obj, name: str):
    """``obj`` with ``name`` in the ``_metadata`` of the state dict mmengine takes from it (``state_dict``
    or ``obj`` itself; a plain dict becomes an OrderedDict, which can carry attributes)."""
    if not isinstance(obj, Mapping):
        return obj
    inner = 'state_dict' in obj and isinstance(obj['state_dict'], Mapping)
    state = obj['state_dict'] if inner else obj
    if not isinstance(state, OrderedDict):
        state = OrderedDict(state)
        if inner:
            obj['state_dict'] = state
        else:
            obj = state
    if not isinstance(getattr(state, '_metadata', None), OrderedDict):
        state._metadata = OrderedDict(getattr(state, '_metadata', None) or {})
    state._metadata.source = name
    return obj


def _named(loader):
    def load(filename: str, map_location=None, *args, **kwargs):
        loaded = loader(filename, map_location, *args, **kwargs)
        _safe_config.note_checkpoint(loaded, str(filename))  # error messages about its config text name the file
        return _with_source(loaded, str(filename))

    load.__name__ = f'load_from_safe_{loader.__name__.removeprefix("_load_")}'  # mmengine logs [10:]
    load.__doc__ = loader.__doc__
    return load


def install() -> None:
    """Allow-list mmengine's globals and register the safe loader of every scheme. Called when
    :mod:`repvit_mm` is imported."""
    allow_mmengine_checkpoint_globals()
    for prefix, loader in SAFE_SCHEMES.items():
        CheckpointLoader.register_scheme(prefixes=prefix, loader=_named(loader), force=True)
