"""Pre-flight checks of ImageNet-style classification data, run by ``tools/train.py``/``tools/test.py``.

A data root that does not exist, or an image folder without class sub-folders, stops the tools with one
line naming the path before anything is built. (Corrupt image files are caught while loading, see
:mod:`.transforms`.)
"""

from __future__ import annotations

import os
import os.path as osp

from ..utils.data_checks import register_data_check
from ..utils.errors import UserInputError
from ..utils.paths import join_data_root

__all__ = ['check_image_folder_dataset']

_IMAGENET_CLASSES = 1000


def _image_prefix(dataset_cfg: dict) -> str:
    """The image folder mmpretrain's ``ImageNet``/``CustomDataset`` will read (data_root + data_prefix)."""
    prefix = dataset_cfg.get('data_prefix', '')
    if isinstance(prefix, dict):
        prefix = prefix.get('img_path', '')
    if not prefix and dataset_cfg.get('split'):  # ImageNet(split='val') reads data_root/val
        prefix = dataset_cfg['split']
    root = dataset_cfg.get('data_root', '')
    return join_data_root(root, prefix) or root


def _ann_file(dataset_cfg: dict) -> str:
    """The annotation list mmpretrain will use ('' means: the class folders are the labels)."""
    root = dataset_cfg.get('data_root', '')
    ann_file = dataset_cfg.get('ann_file', '')
    if not ann_file and dataset_cfg.get('split'):  # ImageNet(split=...) uses meta/<split>.txt if present
        candidate = osp.join(root, 'meta', f'{dataset_cfg["split"]}.txt')
        return candidate if osp.isfile(candidate) else ''
    return join_data_root(root, ann_file) if ann_file else ann_file


def _where(dataset_cfg: dict) -> str:
    keys = [k for k in ('data_root', 'data_prefix', 'split', 'ann_file') if dataset_cfg.get(k)]
    return f"from {dataset_cfg.get('type')}'s {' + '.join(keys) or 'data_root'}"


def _class_count(dataset_cfg: dict) -> int | None:
    """How many class folders the dataset will insist on, if it says (ImageNet: 1000)."""
    classes = dataset_cfg.get('classes') or (dataset_cfg.get('metainfo') or {}).get('classes')
    if classes:
        return len(classes) if not isinstance(classes, str) else None  # a file name: not counted here
    return _IMAGENET_CLASSES if str(dataset_cfg.get('type', '')).endswith('ImageNet') else None


@register_data_check('ImageNet', 'CustomDataset')
def check_image_folder_dataset(dataset_cfg: dict) -> None:
    """Raise :class:`UserInputError` naming the path if the data cannot be read as configured."""
    root = dataset_cfg.get('data_root', '')
    if root and not osp.isdir(root):
        raise UserInputError(f'data root not found: {root} ({_where(dataset_cfg)})')
    images = _image_prefix(dataset_cfg)
    if not images or not osp.isdir(images):
        raise UserInputError(f'image folder not found: {images or "(empty)"} ({_where(dataset_cfg)})')
    ann_file = _ann_file(dataset_cfg)
    if ann_file:
        if not osp.isfile(ann_file):
            raise UserInputError(f'annotation file not found: {ann_file} ({_where(dataset_cfg)})')
        return
    if not dataset_cfg.get('with_label', True) or dataset_cfg.get('split') == 'test':
        return  # unlabelled images (ImageNet's test split has no labels)
    class_dirs = [entry.name for entry in os.scandir(images) if entry.is_dir()]
    if not class_dirs:
        raise UserInputError(
            f'no class folders in {images}: expected {images}/<class name>/<image files> ({_where(dataset_cfg)})'
        )
    expected = _class_count(dataset_cfg)
    if expected is not None and expected != len(class_dirs):
        raise UserInputError(
            f'{images} has {len(class_dirs)} class folders but the dataset expects '
            f'{expected} classes (set dataset.classes to the class names)'
        )
