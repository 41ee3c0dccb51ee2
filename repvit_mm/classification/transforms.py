"""Image loading that turns an unreadable image into one clear error naming the file.

Checking every image before training (1.28 M files for ImageNet) would take longer than an epoch, so
corrupt files are caught where they are read anyway: :class:`LoadImageFromFileOrFail` is mmcv's
``LoadImageFromFile`` whose failures (truncated or non-image bytes, an empty file, a file that vanished)
become :class:`UnreadableImageError`, a :class:`UserInputError` that ``tools/*.py`` print as one line.
"""
from __future__ import annotations

import os.path as osp

from mmcv.transforms import LoadImageFromFile
from mmpretrain.registry import TRANSFORMS

from ..utils.errors import UserInputError

__all__ = ['LoadImageFromFileOrFail', 'UnreadableImageError']


class UnreadableImageError(UserInputError):
    """An image of the data set cannot be decoded; the message names the file.

    DataLoader worker processes re-raise an exception in the main process as
    ``type(err)('Caught ... in DataLoader worker process N.\\nOriginal Traceback ...')``; this class keeps
    only the original one-line message then, so the error stays one line with or without workers.
    """

    def __init__(self, message: str) -> None:
        if 'Original Traceback' in message:
            last = message.strip().splitlines()[-1]  # "<module>.UnreadableImageError: <message>"
            message = last.split(': ', 1)[1] if ': ' in last else last
        super().__init__(message)


@TRANSFORMS.register_module()
class LoadImageFromFileOrFail(LoadImageFromFile):
    """``LoadImageFromFile`` that raises :class:`UnreadableImageError` (naming the file) instead of an
    assertion or decoder traceback. ``ignore_empty=True`` still skips unreadable files silently."""

    def transform(self, results: dict) -> dict | None:
        filename = results['img_path']
        try:
            return super().transform(results)
        except FileNotFoundError:
            raise UnreadableImageError(f'image file not found: {filename}') from None
        except Exception:  # cv2/PIL decoder errors, or mmcv's "failed to load image" assertion
            reason = 'empty file' if osp.isfile(filename) and osp.getsize(filename) == 0 else \
                'not a decodable image'
            raise UnreadableImageError(f'corrupt image file: {filename} ({reason})') from None
