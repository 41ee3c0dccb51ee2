"""Pre-flight check of COCO-format datasets (``CocoDataset`` in mmdet configs).

mmdet itself reports a missing annotation file with a pycocotools traceback, a malformed one with a
``KeyError`` deep inside ``COCO.createIndex``, and a missing image only when the data loader reaches it --
possibly hours into training. The tools run this check before the Runner starts, so each of these is one
line naming the file, and nothing has been written to the work dir yet.

mmdet numbers the labels by the *file's* category order, keeping the categories whose name is one of the
config's ``metainfo.classes`` (compared exactly): a category 'Circle' where the config says 'circle' is
dropped and every later class shifts, an image id listed twice trains one image with the other's boxes. So
the config's classes must be category names of the file, in the file's order, each once (else an error
naming the closest names); image, annotation and category ids must be unique; and a file used for training
must hold annotations of those classes.

mmdet also drops, without a word, the annotations it cannot use: a box that misses the image, has a width
or height under one pixel or a non-positive area, or a polygon mask with fewer than three points (the image
stays, with fewer or no objects); an annotation of an image or a category id the file does not list, or of
a category that is not one of the config's classes. They are counted by kind here and reported as one
warning line with a few of their ids (:class:`~repvit_mm.utils.errors.DataWarning`; an error with
``--strict-data``).
"""

from __future__ import annotations

import difflib
import json
import os
import os.path as osp
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from ..utils.data_checks import register_data_check, register_evaluator_check
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


def _config_classes(dataset_cfg: dict) -> tuple[str, ...]:
    """The class names the dataset will use: ``metainfo.classes``, else ``CocoDataset``'s 80."""
    classes = (dataset_cfg.get('metainfo') or {}).get('classes')
    if classes is None:
        from mmdet.datasets import CocoDataset  # lazy: only configs without classes need it

        classes = CocoDataset.METAINFO['classes']
    return (classes,) if isinstance(classes, str) else tuple(classes)


def _shown(names: Sequence[str], limit: int = 12) -> str:
    """A list of names for a one-line message (COCO has 80)."""
    names = list(names)
    return str(names) if len(names) <= limit else f'{str(names[:limit])[:-1]}, ... ({len(names)} names)]'


def _duplicates(values: Sequence) -> list:
    return [value for value, count in Counter(values).items() if count > 1]


def _closest(name: str, names: Sequence[str]) -> str:
    lower = {n.lower(): n for n in names}
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5) or [
        lower[n] for n in difflib.get_close_matches(name.lower(), list(lower), n=3, cutoff=0.5)
    ]
    return f'closest to {name!r}: {", ".join(map(repr, close))}' if close else f'no name close to {name!r}'


def _check_ids(doc: dict, ann_file: str) -> None:
    """Unique image, category and annotation ids (pycocotools keeps the last of an id, mmdet trains the
    image of one with the boxes of both)."""
    for key, what in (('images', 'image'), ('categories', 'category'), ('annotations', 'annotation')):
        ids = [item.get('id') for item in doc.get(key) or [] if isinstance(item, dict)]
        dups = _duplicates(ids)
        if dups:
            more = f' (and {len(dups) - 1} more)' if len(dups) > 1 else ''
            raise UserInputError(
                f'{ann_file}: {what} id {dups[0]!r} is used {ids.count(dups[0])} times{more}; ids must be unique'
            )


def _check_classes(doc: dict, ann_file: str, classes: tuple[str, ...]) -> None:
    """The config's classes are category names of the file, each once, in the file's order."""
    names = [str(c.get('name')) for c in doc['categories'] if isinstance(c, dict)]
    missing = [name for name in classes if name not in names]
    if missing:
        what = "none of the config's classes is" if len(missing) == len(classes) else f'class {missing[0]!r} is not'
        raise UserInputError(
            f'{ann_file}: {what} a category name of the file ({_closest(missing[0], names)}; names compare '
            f'exactly, case included); the file has {_shown(names)}, metainfo.classes is {_shown(classes)}'
        )
    kept = [name for name in names if name in set(classes)]
    dups = _duplicates(kept)
    if dups:
        raise UserInputError(f'{ann_file}: category name {dups[0]!r} is used by {kept.count(dups[0])} categories')
    if kept != list(classes):
        raise UserInputError(
            f"{ann_file}: mmdet numbers the labels in the file's category order {_shown(kept)}, but metainfo.classes "
            f"is {_shown(classes)}: the labels would be misnamed; list the classes in the file's order"
        )


def _invalid_annotations(doc: dict, ann_file: str, classes: tuple[str, ...]) -> DataWarning | None:
    images = {image['id']: image for image in doc['images']}
    category_names = {c.get('id'): c.get('name') for c in doc['categories'] if isinstance(c, dict)}
    problems: dict[str, int] = defaultdict(int)
    ids = []
    annotations = doc.get('annotations') or []
    for ann in annotations:
        if not isinstance(ann, dict):
            problem = 'not an object'
        elif ann.get('image_id') not in images:
            problem = 'image id not in images'
        elif ann.get('category_id') not in category_names:
            problem = 'category id not in categories'
        elif category_names[ann['category_id']] not in classes:
            problem = "category not in the config's classes"
        else:
            problem = _annotation_problem(ann, images[ann['image_id']])
        if problem:
            problems[problem] += 1
            ids.append(ann.get('id') if isinstance(ann, dict) else None)
    if annotations and len(ids) == len(annotations) and 'annotations' in doc:
        raise UserInputError(
            f'{ann_file}: none of its {len(annotations)} annotations would be used '
            f'({", ".join(f"{kind}: {count}" for kind, count in sorted(problems.items()))})'
        )
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
    """Raise :class:`UserInputError` naming the file if the annotation file is missing or not COCO JSON, its
    ids are not unique, its category names do not match the config's classes (exactly, in order), it has
    no usable annotation, or an image it references is missing; :class:`DataWarning` if annotations would
    be dropped (counted by kind). Remote storage (``backend_args`` or a URL) is not checked."""
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
    _check_ids(doc, ann_file)
    classes = _config_classes(dataset_cfg)
    _check_classes(doc, ann_file, classes)
    if 'annotations' in doc and not doc['annotations']:
        raise UserInputError(f'{ann_file}: no annotations ("annotations" is empty): nothing to train or test on')
    missing = _missing_images(doc['images'], img_dir)
    if missing:
        more = f' (and {len(missing) - 1} more of {len(doc["images"])})' if len(missing) > 1 else ''
        raise UserInputError(f'image listed in {ann_file} not found: {missing[0]}{more}')
    warning = _invalid_annotations(doc, ann_file, classes)
    if warning:
        raise warning


@register_evaluator_check('CocoMetric')
def check_coco_metric(evaluator_cfg: dict, dataset_cfg: dict) -> None:
    """A ``CocoMetric`` reading its own annotation file numbers the dataset's classes by that file's
    categories: the same exact-name, same-order check as the dataset's file."""
    ann_file = evaluator_cfg.get('ann_file')
    if not ann_file or is_remote(ann_file) or evaluator_cfg.get('backend_args') or not osp.isfile(ann_file):
        return  # a missing file is reported by the generic evaluator check
    doc = _load_json(ann_file)
    _check_structure(doc, ann_file, test_mode=True)
    _check_classes(doc, ann_file, _config_classes(dataset_cfg))
