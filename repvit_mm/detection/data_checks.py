"""Pre-flight check of COCO-format datasets (``CocoDataset`` in mmdet configs).

mmdet itself reports a missing annotation file with a pycocotools traceback, a malformed one with a
``KeyError`` deep inside ``COCO.createIndex``, and a missing image only when the data loader reaches it --
possibly hours into training. The tools run this check before the Runner starts, so each of these is one
line naming the file, and nothing has been written to the work dir yet.
"""
from __future__ import annotations

import json
import os
import os.path as osp
from collections import defaultdict
from typing import Any

from ..utils.data_checks import register_data_check
from ..utils.errors import UserInputError

#: Top-level keys every COCO instance file has; ``annotations`` may be absent from image-info files
#: (e.g. ``image_info_test-dev2017.json``), which are only read in test mode.
REQUIRED_KEYS = ('images', 'categories')


def _resolve(data_root: str | None, path: str) -> str:
    """How mmengine's ``BaseDataset`` joins ``data_root`` with relative paths."""
    if data_root and not osp.isabs(path):
        return osp.join(data_root, path)
    return path


def _is_remote(*paths: str) -> bool:
    return any('://' in p for p in paths)


def _load_json(ann_file: str) -> Any:
    if not osp.isfile(ann_file):
        what = 'is a directory, not a file' if osp.isdir(ann_file) else 'not found'
        raise UserInputError(f'COCO annotation file {what}: {ann_file}')
    try:
        with open(ann_file, encoding='utf-8') as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise UserInputError(f'COCO annotation file {ann_file} is not valid JSON: {err.msg} at line '
                             f'{err.lineno} column {err.colno}') from None
    except UnicodeDecodeError:
        raise UserInputError(f'COCO annotation file {ann_file} is not valid JSON: not UTF-8 text') from None


def _check_structure(doc: Any, ann_file: str, test_mode: bool) -> None:
    if not isinstance(doc, dict):
        raise UserInputError(f'COCO annotation file {ann_file} is malformed: the top level is a '
                             f'{type(doc).__name__}, expected an object with images/annotations/categories')
    required = REQUIRED_KEYS if test_mode else (*REQUIRED_KEYS, 'annotations')
    missing = [key for key in required if key not in doc]
    if missing:
        raise UserInputError(f'COCO annotation file {ann_file} is malformed: missing key(s) '
                             f'{", ".join(repr(k) for k in missing)}')
    for key in (*REQUIRED_KEYS, 'annotations'):
        if key in doc and not isinstance(doc[key], list):
            raise UserInputError(f"COCO annotation file {ann_file} is malformed: '{key}' is a "
                                 f'{type(doc[key]).__name__}, expected a list')
    for index, image in enumerate(doc['images']):
        if not isinstance(image, dict) or 'file_name' not in image or 'id' not in image:
            raise UserInputError(f"COCO annotation file {ann_file} is malformed: images[{index}] has no "
                                 "'file_name' and 'id'")


def _missing_images(images: list[dict], img_dir: str) -> list[str]:
    """Paths of referenced images that do not exist (one ``listdir`` per folder, not a stat per file)."""
    by_folder: dict[str, list[str]] = defaultdict(list)
    for image in images:
        path = osp.join(img_dir, image['file_name'])
        by_folder[osp.dirname(path)].append(path)
    missing = []
    for folder, paths in by_folder.items():
        folder = folder or '.'
        present = set(os.listdir(folder)) if osp.isdir(folder) else set()
        missing += [p for p in paths if osp.basename(p) not in present]
    return missing


@register_data_check('CocoDataset')
def check_coco_dataset(dataset_cfg: dict) -> None:
    """Raise :class:`UserInputError` naming the file if the annotation file is missing or not COCO JSON,
    or an image it references is missing. Remote storage (``backend_args`` or a URL) is not checked."""
    data_root = dataset_cfg.get('data_root') or ''
    ann_file = _resolve(data_root, dataset_cfg.get('ann_file') or '')
    prefix = dataset_cfg.get('data_prefix') or {}
    img_dir = _resolve(data_root, prefix.get('img', '') if isinstance(prefix, dict) else '')
    if dataset_cfg.get('backend_args') or _is_remote(data_root, ann_file, img_dir):
        return
    if not ann_file:
        raise UserInputError(f"CocoDataset (data_root '{data_root}') has no ann_file")
    doc = _load_json(ann_file)
    _check_structure(doc, ann_file, bool(dataset_cfg.get('test_mode', False)))
    if img_dir and not osp.isdir(img_dir):
        raise UserInputError(f'image folder of {ann_file} not found: {img_dir}')
    missing = _missing_images(doc['images'], img_dir)
    if missing:
        more = f' (and {len(missing) - 1} more of {len(doc["images"])})' if len(missing) > 1 else ''
        raise UserInputError(f'image listed in {ann_file} not found: {missing[0]}{more}')
