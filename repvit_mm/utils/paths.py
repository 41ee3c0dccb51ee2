"""Dataset paths as the OpenMMLab datasets resolve them, for the checks that run before them."""

from __future__ import annotations

from mmengine.fileio import join_path
from mmengine.utils import is_abs

__all__ = ['is_remote', 'join_data_root']


def is_remote(*paths: object) -> bool:
    """Whether any path is a URI (``s3://``, ``http://``, ...) that the local checks cannot look at."""
    return any('://' in str(path) for path in paths)


def join_data_root(data_root: str | None, path: str) -> str:
    """``path`` joined to ``data_root`` exactly as mmengine's ``BaseDataset`` joins its ``data_prefix`` values
    (its ``ann_file`` is joined the same way when it is not empty)."""
    return join_path(data_root, path) if data_root and not is_abs(path) else path
