"""Our models in mmpretrain's model hub.

:func:`register_model_index` adds the classification models of ``model-index.yml`` to mmpretrain's
``ModelHub`` (``list_models('*repvit*')``, ``get_model(name)``, ``inference_model(name, ...)``); importing
``repvit_mm`` calls it. Their ``Weights`` are the authors' GitHub release URLs: mmengine downloads such a
file once into torch.hub's cache and reads it weights-only (:mod:`repvit_mm.utils.safe_checkpoint`), and
the loading installed by :mod:`.mmengine_loading` converts the authors' layout in memory, strictly.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ['MIM_ROOT', 'register_model_index']

#: The package's mim layout: ``configs``, ``tools`` and ``model-index.yml`` (links into the source tree,
#: copied into wheels).
MIM_ROOT = Path(__file__).resolve().parents[1] / '.mim'

_registered: set[str] = set()


def register_model_index(root: str | os.PathLike = MIM_ROOT) -> None:
    """Register the classification models of ``root/model-index.yml`` with mmpretrain's ``ModelHub``
    (once per root). Detection and segmentation models are listed for mim only: mmpretrain's hub builds
    classifiers."""
    metafile = Path(root) / 'configs' / 'classification' / 'metafile.yml'
    if str(metafile) in _registered or not metafile.is_file():
        return
    from mmpretrain.apis import ModelHub  # imported by mmpretrain itself: costs only the yaml parse

    ModelHub.register_model_index(metafile, config_prefix=root)
    _registered.add(str(metafile))
