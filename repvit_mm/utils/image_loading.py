"""Image loading that turns an unreadable image into one clear error naming the file.

Checking every image before training (1.28 M files for ImageNet) would take longer than an epoch, so
corrupt files are caught where they are read anyway: :class:`LoadImageFromFileOrFail` is mmcv's
``LoadImageFromFile`` whose failures (truncated or non-image bytes, an empty file, a file that vanished)
become :class:`UnreadableImageError`, a :class:`UserInputError` that ``tools/*.py`` print as one line.

The task packages register it as ``LoadImageFromFile`` in mmpretrain's, mmdet's and mmseg's ``TRANSFORMS``
(:func:`register_checked_loading`), so every config keeps the upstream type name: the upstream
inferencers (mmpretrain's ``ImageClassificationInferencer``, mmdet's ``DetInferencer`` and
``inference_detector``, mmseg's ``MMSegInferencer`` and ``inference_model``) find the loading step by that
name to drop or replace it. Only the error raised for a bad file differs from mmcv's transform.
"""

from __future__ import annotations

import os.path as osp

from mmcv.transforms import LoadImageFromFile
from mmengine.registry import Registry

from .errors import UserInputError, original_message

__all__ = ['LoadImageFromFileOrFail', 'UnreadableImageError', 'register_checked_loading', 'unreadable']


class UnreadableImageError(UserInputError):
    """An image (or label map) of the data set cannot be decoded; the message names the file, and stays one
    line when a DataLoader worker re-raises it in the main process."""

    def __init__(self, message: str) -> None:
        super().__init__(original_message(message))


def unreadable(filename: str, what: str = 'image') -> UnreadableImageError:
    """The error for a file that exists but does not decode (or does not exist)."""
    if not osp.exists(filename):
        return UnreadableImageError(f'{what} file not found: {filename}')
    reason = 'empty file' if osp.isfile(filename) and osp.getsize(filename) == 0 else 'not a decodable image'
    return UnreadableImageError(f'corrupt {what} file: {filename} ({reason})')


class LoadImageFromFileOrFail(LoadImageFromFile):
    """``LoadImageFromFile`` that raises :class:`UnreadableImageError` (naming the file) instead of an
    assertion or decoder traceback. ``ignore_empty=True`` still skips unreadable files silently."""

    def transform(self, results: dict) -> dict | None:
        try:
            return super().transform(results)
        except Exception:  # cv2/PIL decoder errors, or mmcv's "failed to load image" assertion
            raise unreadable(results['img_path']) from None


def register_checked_loading(transforms: Registry, *, replace: bool = False) -> None:
    """Register :class:`LoadImageFromFileOrFail` as ``LoadImageFromFile`` in a scope's ``TRANSFORMS``.

    mmdet's and mmseg's registries inherit mmcv's transform from their parent, which this shadows; mmpretrain
    registers mmcv's class in its own registry, so there it is replaced (``replace=True``).
    """
    current = transforms.module_dict.get('LoadImageFromFile')
    if current is LoadImageFromFileOrFail:
        return
    if current is not None and not replace:
        raise KeyError(f'{transforms.scope} TRANSFORMS has its own LoadImageFromFile ({current})')
    transforms.register_module(name='LoadImageFromFile', module=LoadImageFromFileOrFail, force=True)
