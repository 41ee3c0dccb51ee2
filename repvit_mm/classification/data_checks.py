"""Pre-flight checks of ImageNet-style classification data, run by ``tools/train.py``/``tools/test.py``.

A data root that does not exist, or an image folder without class sub-folders, stops the tools with one
line naming the path before anything is built. (Corrupt image files are caught while loading, see
:mod:`.transforms`.)

Labels: without an annotation list, mmpretrain's ``CustomDataset`` numbers the class folders in sorted
order and only checks that ``classes`` has as many names -- ``classes=('triangle', 'circle', 'square')``
over folders circle/square/triangle trains circles as label 0 and calls them "triangle". So ``classes``
must be the folder names, in sorted order (else one error with the closest names). With an annotation list
(``path label`` lines), a line whose top folder is one of the class names must carry that class's index.
"""

from __future__ import annotations

import difflib
import os
import os.path as osp

from ..utils.data_checks import register_data_check
from ..utils.errors import UserInputError
from ..utils.paths import join_data_root

__all__ = ['check_image_folder_dataset']

_IMAGENET_CLASSES = 1000
#: Lines of an annotation list read to compare folder names with labels (ImageNet's has 1.28 million).
ANN_LINES_CHECKED = 20000


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


def _config_classes(dataset_cfg: dict) -> list[str] | None:
    """``classes`` (or ``metainfo.classes``) as a list; a file name is read as mmpretrain does (a name a
    line)."""
    classes = dataset_cfg.get('classes') or (dataset_cfg.get('metainfo') or {}).get('classes')
    if isinstance(classes, str):
        path = osp.expanduser(classes)
        if not osp.isfile(path):
            return None  # mmpretrain's own error
        with open(path, encoding='utf-8') as f:
            return [line.strip() for line in f if line.strip()]
    return list(classes) if classes else None


def _closest(name: str, names: list[str]) -> str:
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    return f'closest to {name!r}: {", ".join(map(repr, close))}' if close else f'no name close to {name!r}'


def _check_folder_names(images: str, folders: list[str], classes: list[str]) -> None:
    """``classes`` must be the class folders' names in sorted order: the order mmpretrain numbers them in."""
    folders = sorted(folders)
    unknown = [name for name in classes if name not in folders]
    if unknown:
        extra = [name for name in folders if name not in classes]
        raise UserInputError(
            f'{images}: class {unknown[0]!r} of dataset.classes is not a folder name ({_closest(unknown[0], folders)}'
            f'; folders without a class: {extra}); the folders are the labels: set classes to {folders}'
        )
    if classes != folders:
        raise UserInputError(
            f'{images}: mmpretrain numbers the class folders in sorted order {folders}, but dataset.classes is '
            f'{classes}: the labels would be misnamed; list the classes in sorted order'
        )


def _check_ann_labels(ann_file: str, classes: list[str]) -> None:
    """Lines ``<class folder>/<file> <label>`` whose folder is a class name must carry its index."""
    index = {name: i for i, name in enumerate(classes)}
    with open(ann_file, encoding='utf-8', errors='replace') as f:
        for number, line in enumerate(f, 1):
            if number > ANN_LINES_CHECKED:
                return
            parts = line.rsplit(maxsplit=1)
            if len(parts) != 2 or not parts[1].lstrip('-').isdigit():
                continue
            folder = parts[0].replace('\\', '/').split('/')[0]
            if folder in index and int(parts[1]) != index[folder]:
                label = int(parts[1])
                named = f'classes[{label}] is {classes[label]!r}' if 0 <= label < len(classes) else 'no class has it'
                raise UserInputError(
                    f'{ann_file} line {number}: {parts[0]!r} has label {label}, but {named} and '
                    f'{folder!r} is classes[{index[folder]}]: the labels would be misnamed; list dataset.classes '
                    'in the order of the labels'
                )


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
        classes = _config_classes(dataset_cfg)
        if classes:
            _check_ann_labels(ann_file, classes)
        return
    if not dataset_cfg.get('with_label', True) or dataset_cfg.get('split') == 'test':
        return  # unlabelled images (ImageNet's test split has no labels)
    class_dirs = [entry.name for entry in os.scandir(images) if entry.is_dir()]
    if not class_dirs:
        raise UserInputError(
            f'no class folders in {images}: expected {images}/<class name>/<image files> ({_where(dataset_cfg)})'
        )
    classes = _config_classes(dataset_cfg)
    if classes and not str(dataset_cfg.get('type', '')).endswith('ImageNet'):  # ImageNet's are not folder names
        _check_folder_names(images, class_dirs, classes)
    expected = _class_count(dataset_cfg)
    if expected is not None and expected != len(class_dirs):
        raise UserInputError(
            f'{images} has {len(class_dirs)} class folders but the dataset expects '
            f'{expected} classes (set dataset.classes to the class names)'
        )
