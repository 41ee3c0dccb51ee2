"""The authors' released weights by URL, and our models in mmpretrain's model hub.

- :func:`load_from_release` is registered with mmengine's ``CheckpointLoader`` for the URLs of the
  authors' GitHub releases, so every mmengine loading path (``load_checkpoint``, ``load_from``,
  ``init_cfg=dict(type='Pretrained', checkpoint=URL)``, mmpretrain's ``get_model(..., pretrained=True)``)
  downloads the file once into torch.hub's cache (``$TORCH_HOME/hub/checkpoints``, as ``torch.hub`` and
  mmengine's own http loader do), unpickles it with ``weights_only=True`` and converts the authors' layout
  to ours in memory. A layout it cannot convert is an error, never a partial load.
- :func:`register_model_index` adds the classification models of ``model-index.yml`` to mmpretrain's
  ``ModelHub`` (``list_models('*repvit*')``, ``get_model(name)``); importing ``repvit_mm`` calls it.
"""
from __future__ import annotations

import os
import os.path as osp
import re
from pathlib import Path
from urllib.parse import urlparse

from mmengine.runner import CheckpointLoader

from ..utils.errors import UserInputError

__all__ = ['RELEASE_URL_PREFIXES', 'MIM_ROOT', 'hub_cache_path', 'load_from_release',
           'register_model_index']

#: Where the authors publish weights (the v1 M1/M2/M3 files are still under the authors' former account).
RELEASE_URL_PREFIXES = ('https://github.com/THU-MIG/RepViT/releases/download/',
                        'https://github.com/jameslahm/RepViT/releases/download/')
#: The package's mim layout: ``configs``, ``tools`` and ``model-index.yml`` (links into the source tree,
#: copied into wheels).
MIM_ROOT = Path(__file__).resolve().parents[1] / '.mim'
_ARCH_IN_NAME = re.compile(r'^repvit_(m\d+(?:_\d+)?)_')


def hub_cache_path(url: str) -> str:
    """Where torch.hub (and mmengine's http loader) keep the file of ``url``."""
    import torch
    return osp.join(torch.hub.get_dir(), 'checkpoints', osp.basename(urlparse(url).path))


def _fetch(url: str, cached: str) -> None:
    if not osp.isfile(cached):
        import torch
        os.makedirs(osp.dirname(cached), exist_ok=True)
        # torch.hub writes a temporary file and moves it into place: an interrupted download leaves none
        torch.hub.download_url_to_file(url, cached, progress=True)


def _download(url: str) -> str:
    """The cached file of ``url``, downloaded first if needed (by rank 0 first in a distributed run)."""
    from mmengine.dist import barrier, get_dist_info

    cached = hub_cache_path(url)
    rank, world_size = get_dist_info()
    if rank == 0:
        _fetch(url, cached)
    if world_size > 1:
        barrier()
        _fetch(url, cached)  # other nodes have caches of their own
    return cached


def load_from_release(filename: str, map_location=None) -> dict:
    """Load one of the authors' release files by URL, converted to repvit-mm's layout.

    Returns ``{'state_dict': ..., 'meta': {'converted_from': URL, 'dataset_meta': ImageNet classes}}``, the
    form mmengine's loaders expect.

    Raises:
        UserInputError: the file's name names no RepViT arch, or its weights do not convert.
    """
    from ..utils.safe_checkpoint import safe_torch_load
    from .convert import convert_checkpoint

    name = osp.basename(urlparse(filename).path)
    arch = _ARCH_IN_NAME.match(name)
    if arch is None:
        raise UserInputError(f'{filename}: cannot tell the RepViT arch from the file name {name!r}')
    checkpoint = safe_torch_load(_download(filename), map_location=map_location or 'cpu')
    try:
        state = convert_checkpoint(checkpoint, arch.group(1))
    except UserInputError as err:
        raise UserInputError(f'{filename} ({hub_cache_path(filename)}): {err}') from None
    from mmpretrain.datasets.categories import IMAGENET_CATEGORIES
    meta = {'converted_from': filename, 'dataset_meta': {'classes': IMAGENET_CATEGORIES}}
    return {'state_dict': state, 'meta': meta}


CheckpointLoader.register_scheme(RELEASE_URL_PREFIXES, load_from_release, force=True)

_registered: set[str] = set()


def register_model_index(root: str | os.PathLike = MIM_ROOT) -> None:
    """Register the classification models of ``root/model-index.yml`` with mmpretrain's ``ModelHub``
    (once per root). Detection and segmentation models are listed for mim only: mmpretrain builds
    classifiers."""
    root = Path(root)
    metafile = root / 'configs' / 'classification' / 'metafile.yml'
    if str(metafile) in _registered or not metafile.is_file():
        return
    from mmpretrain.apis import ModelHub
    ModelHub.register_model_index(metafile, config_prefix=root)
    _registered.add(str(metafile))
