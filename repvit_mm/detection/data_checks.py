"""Pre-flight check of COCO-format datasets (``CocoDataset`` in mmdet configs).

mmdet itself reports a missing annotation file with a pycocotools traceback, a malformed one with a
``KeyError`` deep inside ``COCO.createIndex``, and a missing image only when the data loader reaches it --
possibly hours into training. The tools run this check before the Runner starts, so each of these is one
line naming the file, and nothing has been written to the work dir yet.

mmdet also drops, without a word, the annotations it cannot use: a box that misses the image, has a width
or height under one pixel or a non-positive area, or a polygon mask with fewer than three points (the image
stays, with fewer or no objects). They are counted here and reported as one warning line with a few of their
ids (:class:`~repvit_mm.utils.errors.DataWarning`; an error with ``--strict-data``).
"""

from __future__ import annotations

import json
import os
import os.path as osp
from collections import defaultdict
from typing import Any

from ..utils.data_checks import register_data_check
from ..utils.errors import DataWarning, UserInputError
from ..utils.paths import is_remote, join_data_root

#: Annotation ids quoted in the invalid-annotation warning.
SHOWN_IDS = 5
#: Top-level keys every COCO instance file has; ``annotations`` may be absent from image-info files
#: (e.g. ``image_info_test-dev2017.json``), which are only read in test mode.
REQUIRED_KEYS = ('images', 'categories')


def _load_json(ann_file: str) -> Any:
    if not osp.isfile(ann_file):
        what = 'is a directory, not a file' if osp.isdir(ann_file) else 'not found'
        raise UserInputError(f'COCO annotation file {what}: {ann_file}')
    try:
        with open(ann_file, encoding='utf-8') as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise UserInputError(
            f'COCO annotation file {ann_file} is not valid JSON: {err.msg} at line {err.lineno} column {err.colno}'
        ) from None
    except UnicodeDecodeError:
        raise UserInputError(f'COCO annotation file {ann_file} is not valid JSON: not UTF-8 text') from None


def _check_structure(doc: Any, ann_file: str, test_mode: bool) -> None:
    if not isinstance(doc, dict):
        raise UserInputError(
            f'COCO annotation file {ann_file} is malformed: the top level is a '
            f'{type(doc).__name__}, expected an object with images/annotations/categories'
        )
    required = REQUIRED_KEYS if test_mode else (*REQUIRED_KEYS, 'annotations')
    missing = [key for key in required if key not in doc]
    if missing:
        raise UserInputError(
            f'COCO annotation file {ann_file} is malformed: missing key(s) {", ".join(repr(k) for k in missing)}'
        )
    for key in (*REQUIRED_KEYS, 'annotations'):
        if key in doc and not isinstance(doc[key], list):
            raise UserInputError(
                f"COCO annotation file {ann_file} is malformed: '{key}' is a {type(doc[key]).__name__}, expected a list"
            )
    for index, image in enumerate(doc['images']):
        if not isinstance(image, dict) or 'file_name' not in image or 'id' not in image:
            raise UserInputError(
                f"COCO annotation file {ann_file} is malformed: images[{index}] has no 'file_name' and 'id'"
            )


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


def _annotation_problem(ann: dict, image: dict | None) -> str | None:
    """Why mmdet's ``CocoDataset``/``LoadAnnotations`` would drop this annotation, if they would."""
    if ann.get('iscrowd', 0):
        return None  # crowd regions are ignored by design
    try:
        x, y, w, h = (float(v) for v in ann['bbox'])
    except (KeyError, TypeError, ValueError):
        return 'no [x, y, w, h] bbox'
    if w < 1 or h < 1 or float(ann.get('area', w * h)) <= 0:
        return 'non-positive size'
    if image is not None and 'width' in image and 'height' in image:
        inter_w = min(x + w, image['width']) - max(x, 0)
        inter_h = min(y + h, image['height']) - max(y, 0)
        if inter_w <= 0 or inter_h <= 0:
            return 'outside the image'
    polygons = ann.get('segmentation')
    if isinstance(polygons, list) and not any(len(p) >= 6 and len(p) % 2 == 0 for p in polygons):
        return 'empty polygon'
    return None


def _invalid_annotations(doc: dict, ann_file: str) -> DataWarning | None:
    images = {image['id']: image for image in doc['images']}
    problems: dict[str, int] = defaultdict(int)
    ids = []
    annotations = doc.get('annotations') or []
    for ann in annotations:
        problem = (
            _annotation_problem(ann, images.get(ann.get('image_id'))) if isinstance(ann, dict) else 'not an object'
        )
        if problem:
            problems[problem] += 1
            ids.append(ann.get('id') if isinstance(ann, dict) else None)
    if not ids:
        return None
    kinds = ', '.join(f'{kind}: {count}' for kind, count in sorted(problems.items()))
    more = ', ...' if len(ids) > SHOWN_IDS else ''
    return DataWarning(
        f'{ann_file}: {len(ids)} of {len(annotations)} annotations are invalid and would be dropped '
        f'by mmdet ({kinds}); ids {", ".join(map(str, ids[:SHOWN_IDS]))}{more}'
    )


@register_data_check('CocoDataset')
def check_coco_dataset(dataset_cfg: dict) -> None:
    """Raise :class:`UserInputError` naming the file if the annotation file is missing or not COCO JSON,
    or an image it references is missing; :class:`DataWarning` if annotations would be dropped. Remote
    storage (``backend_args`` or a URL) is not checked."""
    data_root = dataset_cfg.get('data_root') or ''
    ann_file = join_data_root(data_root, dataset_cfg.get('ann_file') or '')
    prefix = dataset_cfg.get('data_prefix') or {}
    img_dir = join_data_root(data_root, prefix.get('img', '') if isinstance(prefix, dict) else '')
    if dataset_cfg.get('backend_args') or is_remote(data_root, ann_file, img_dir):
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
    warning = _invalid_annotations(doc, ann_file)
    if warning:
        raise warning
