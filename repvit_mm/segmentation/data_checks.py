"""Pre-flight check of mmseg folder datasets (``ADE20KDataset``, ``BaseSegDataset``).

mmseg lists the images of a split when the dataset is built and opens each annotation only when the
data loader reaches it, so a missing png stops training hours in with a bare ``FileNotFoundError``,
and a label value outside the classes is not reported at all. Before the Runner starts (nothing
written yet), the tools run :func:`check_seg_dataset` on every split:

* the data root, image folder and annotation folder exist, and every image has its annotation png
  (a folder listing: cheap even for ADE20K's 20k training images, so every pair is checked);
* every annotation has the size of its image (PIL reads only the file headers: ADE20K's 20k pairs take
  seconds), and every image and annotation header can be read (an empty or truncated-at-the-start file);
* the label values of up to :data:`LABEL_SCAN_LIMIT` annotations, spread evenly over the split,
  are class indices or ignored values. Opening every png of ADE20K would add about a minute to each
  start, so the complete value check happens at loading time instead, in the configs'
  ``CheckedLoadAnnotations`` (one ``bincount`` per image); the scan here catches a wrongly encoded
  dataset (colour pngs, 16-bit pngs, labels not shifted for ``reduce_zero_label``) up front, and on a
  small dataset such as Shapes it covers every file.
"""

from __future__ import annotations

import inspect
import os
import os.path as osp
from typing import Any

import numpy as np
from PIL import Image

from ..utils.data_checks import register_data_check
from ..utils.errors import UserInputError
from ..utils.paths import is_remote, join_data_root
from .labels import invalid_raw_labels, label_range_error

#: Annotations whose values the pre-flight reads per split (all of them when a split is smaller).
LABEL_SCAN_LIMIT = 200


def _dataset_class(type_name: str) -> type:
    from mmseg.datasets import ADE20KDataset, BaseSegDataset  # lazy: mmseg is slow to import

    return {'ADE20KDataset': ADE20KDataset, 'BaseSegDataset': BaseSegDataset}[type_name]


def _setting(cfg: dict, cls: type, key: str) -> Any:
    """The dataset's value of ``key``: the config's, else the class's default argument."""
    if key in cfg:
        return cfg[key]
    for klass in cls.__mro__:  # ADE20KDataset's __init__ takes some of its parent's args as **kwargs
        param = inspect.signature(klass.__init__).parameters.get(key)
        if param is not None and param.default is not inspect.Parameter.empty:
            return param.default
    return None


def _list_files(folder: str, suffix: str) -> list[str]:
    """Paths relative to ``folder`` of the files ending in ``suffix``, recursively (as mmseg lists)."""
    found = []
    for dirpath, _, files in os.walk(folder, followlinks=True):
        rel_dir = osp.relpath(dirpath, folder)
        found += [osp.normpath(osp.join(rel_dir, f)) for f in files if f.endswith(suffix)]
    return sorted(found)


def _image_names(cfg: dict, img_dir: str, img_suffix: str, data_root: str | None) -> list[str]:
    """Image paths relative to ``img_dir`` without the suffix: the split file's lines, else a listing."""
    ann_file = cfg.get('ann_file') or ''
    if ann_file:
        ann_file = join_data_root(data_root, ann_file)
        if not osp.isdir(ann_file):
            if not osp.isfile(ann_file):
                raise UserInputError(f'segmentation split file not found: {ann_file}')
            with open(ann_file, encoding='utf-8') as f:
                names = [line.strip() for line in f if line.strip()]
            missing = [n for n in names if not osp.isfile(osp.join(img_dir, n + img_suffix))]
            if missing:
                raise UserInputError(
                    f'image {osp.join(img_dir, missing[0] + img_suffix)} listed in '
                    f'{ann_file} not found ({len(missing)} of {len(names)} missing)'
                )
            return names
    names = [p[: -len(img_suffix)] for p in _list_files(img_dir, img_suffix)]
    if not names:
        raise UserInputError(f'no *{img_suffix} images in {img_dir}')
    return names


def _header_size(path: str, what: str) -> tuple[int, int]:
    """(width, height) from the file header; the pixels are not decoded."""
    try:
        with Image.open(path) as image:
            return image.size
    except OSError as err:
        reason = 'empty file' if osp.getsize(path) == 0 else f'not a readable image: {err}'
        raise UserInputError(f'corrupt {what} file: {path} ({reason})') from None


def _check_sizes(pairs: list[tuple[str, str]]) -> None:
    """Each annotation must be as large as its image (mmseg would fail with an IndexError at test time
    and a tensor-stacking error at training time, naming neither file)."""
    for img_path, ann_path in pairs:
        img_size, ann_size = _header_size(img_path, 'image'), _header_size(ann_path, 'annotation')
        if img_size != ann_size:
            raise UserInputError(
                f'annotation {ann_path} is {ann_size[0]}x{ann_size[1]} but its image {img_path} '
                f'is {img_size[0]}x{img_size[1]} (width x height); they must match'
            )


def _check_label_values(path: str, num_classes: int, reduce_zero_label: bool, ignore_index: int) -> None:
    try:
        with Image.open(path) as png:
            labels = np.asarray(png)
    except OSError as err:
        raise UserInputError(f'{path}: not a readable label image ({err})') from None
    if labels.ndim == 3 and labels.shape[2] == 1:
        labels = labels[..., 0]
    if labels.ndim != 2:
        raise UserInputError(
            f'{path}: label map has shape {labels.shape}; expected one channel (a '
            'grayscale or palette png of class indices, not a colour rendering)'
        )
    bad = invalid_raw_labels(labels, num_classes, reduce_zero_label, ignore_index)
    if bad.size:
        raise label_range_error(path, bad, num_classes, reduce_zero_label, ignore_index)


@register_data_check('ADE20KDataset', 'BaseSegDataset')
def check_seg_dataset(dataset_cfg: dict) -> None:
    """Raise ``UserInputError`` naming the folder or file when a split cannot be trained/evaluated."""
    type_name = str(dataset_cfg.get('type', '')).split('.')[-1]
    cls = _dataset_class(type_name)
    if dataset_cfg.get('backend_args'):
        return  # remote storage: nothing to check on the local file system
    data_root = dataset_cfg.get('data_root')
    prefix = {'img_path': '', 'seg_map_path': '', **(dataset_cfg.get('data_prefix') or {})}
    if is_remote(data_root or '', *prefix.values()):
        return
    if data_root and not osp.isdir(data_root):
        raise UserInputError(f'segmentation data root not found: {data_root}')
    img_dir = join_data_root(data_root, prefix['img_path'])
    ann_dir = join_data_root(data_root, prefix['seg_map_path'])
    for what, folder in (('image', img_dir), ('annotation', ann_dir)):
        if not osp.isdir(folder):
            raise UserInputError(f'{what} folder not found: {folder}')

    img_suffix = _setting(dataset_cfg, cls, 'img_suffix')
    seg_suffix = _setting(dataset_cfg, cls, 'seg_map_suffix')
    names = _image_names(dataset_cfg, img_dir, img_suffix, data_root)
    annotations = set(_list_files(ann_dir, seg_suffix))
    missing = [n for n in names if osp.normpath(n + seg_suffix) not in annotations]
    if missing:
        raise UserInputError(
            f'image {osp.join(img_dir, missing[0] + img_suffix)} has no annotation: '
            f'{osp.join(ann_dir, missing[0] + seg_suffix)} not found ({len(missing)} of {len(names)} '
            'images lack one)'
        )

    _check_sizes([(osp.join(img_dir, n + img_suffix), osp.join(ann_dir, n + seg_suffix)) for n in names])

    classes = cls.METAINFO.get('classes') or (dataset_cfg.get('metainfo') or {}).get('classes')
    if not classes:
        return  # class count unknown: CheckedLoadAnnotations still checks at loading time
    reduce_zero_label = bool(_setting(dataset_cfg, cls, 'reduce_zero_label'))
    ignore_index = _setting(dataset_cfg, cls, 'ignore_index')
    step = max(1, len(names) // LABEL_SCAN_LIMIT)
    for name in names[::step][:LABEL_SCAN_LIMIT]:
        _check_label_values(osp.join(ann_dir, name + seg_suffix), len(classes), reduce_zero_label, ignore_index)
