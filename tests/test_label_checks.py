"""Labels are never silently wrong: the config's classes are compared with the dataset's own names (COCO
categories, class folders, annotation lists) before a work dir exists, and every annotation mmdet would
drop is counted by kind. The data here is written with json and PIL, not the Shapes generator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import CONFIGS, assert_one_line_error, run_tool
from PIL import Image

DET_CONFIG = CONFIGS / 'detection' / 'mask-rcnn_repvit-m0.9_fpn_shapes.py'
CLS_CONFIG = CONFIGS / 'classification' / 'repvit-m0.9_shapes-64px.py'
OWN_CLS_CONFIG = CONFIGS / 'own_data' / 'repvit-m0.9_own-classes.py'
SHAPES = ['circle', 'square', 'triangle']


def save_image(path: Path, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)


def box(ann_id: int, image_id: int, category_id: int) -> dict:
    return dict(id=ann_id, image_id=image_id, category_id=category_id, bbox=[8, 8, 24, 24], area=576, iscrowd=0)


def coco_root(root: Path, categories: list, annotations: list | None = None, images: list | None = None) -> Path:
    """``root/{train,val}2017/*.png`` and ``root/annotations/instances_{train,val}2017.json`` (the same
    content for both splits)."""
    images = images if images is not None else [dict(id=i, file_name=f'{i}.png', width=64, height=64) for i in (1, 2)]
    if annotations is None:
        annotations = [box(1, 1, categories[0]['id']), box(2, 2, categories[-1]['id'])]
    for split in ('train2017', 'val2017'):
        for image in images:
            save_image(root / split / image['file_name'], image['id'])
        doc = dict(images=images, annotations=annotations, categories=categories)
        (root / 'annotations').mkdir(parents=True, exist_ok=True)
        (root / 'annotations' / f'instances_{split}.json').write_text(json.dumps(doc))
    return root


def categories(*names: str) -> list[dict]:
    return [dict(id=i, name=name) for i, name in enumerate(names, 1)]


def det_options(root: Path) -> list[str]:
    ann = str(root / 'annotations' / 'instances_val2017.json')
    return [
        *(f'{split}_dataloader.dataset.data_root={root}/' for split in ('train', 'val', 'test')),
        f'val_evaluator.ann_file={ann}',
        f'test_evaluator.ann_file={ann}',
    ]


def train_refused(tmp_path: Path, config: Path, options: list[str], *fragments: str, strict: bool = False) -> str:
    """tools/train.py stops with one error line naming ``fragments``, and no work dir exists."""
    work = tmp_path / 'work'
    extra = ['--strict-data'] if strict else []
    proc = run_tool('train.py', config, '--work-dir', work, *extra, '--cfg-options', *options, check=False)
    assert_one_line_error(proc, *fragments)
    assert not work.exists()
    return next(line for line in proc.stderr.splitlines() if line.startswith('error:'))


@pytest.fixture(scope='module')
def det_checkpoint(tmp_path_factory) -> Path:
    from repvit_mm.deploy.model import build_model, read_config

    path = tmp_path_factory.mktemp('det') / 'det.pth'
    torch.save({'state_dict': build_model(read_config(DET_CONFIG)).state_dict()}, path)
    return path


# ----------------------------------------------------------------------------------------- COCO
def test_a_category_name_differing_in_case_is_refused_with_the_closest_name(tmp_path, det_checkpoint):
    root = coco_root(tmp_path / 'coco', categories('Circle', 'square', 'triangle'))
    line = train_refused(tmp_path, DET_CONFIG, det_options(root), 'instances_train2017.json', "'circle'", "'Circle'")
    assert 'case included' in line
    work = tmp_path / 'test_work'
    proc = run_tool(
        'test.py', DET_CONFIG, det_checkpoint, '--work-dir', work, '--cfg-options', *det_options(root), check=False
    )
    assert_one_line_error(proc, 'instances_val2017.json', "'circle'", "closest to 'circle': 'Circle'")
    assert not work.exists()


def test_the_metrics_own_annotation_file_is_checked_too(tmp_path, det_checkpoint):
    """CocoMetric reads its ann_file with the dataset's classes: a mismatch there would misname the AP."""
    root = coco_root(tmp_path / 'coco', categories(*SHAPES))
    other = coco_root(tmp_path / 'other', categories('Circle', 'square', 'triangle'))
    ann = other / 'annotations' / 'instances_val2017.json'
    options = [*det_options(root), f'test_evaluator.ann_file={ann}']
    proc = run_tool(
        'test.py', DET_CONFIG, det_checkpoint, '--work-dir', tmp_path / 'w', '--cfg-options', *options, check=False
    )
    assert_one_line_error(proc, str(ann), "closest to 'circle': 'Circle'")
    assert not (tmp_path / 'w').exists()


def test_categories_in_another_order_than_the_classes_are_refused(tmp_path):
    root = coco_root(tmp_path / 'coco', categories('triangle', 'circle', 'square'))
    train_refused(
        tmp_path, DET_CONFIG, det_options(root), "category order ['triangle', 'circle', 'square']", str(SHAPES)
    )


def test_no_matching_name_at_all_is_one_error(tmp_path):
    root = coco_root(tmp_path / 'coco', categories('coin', 'tile', 'ring'))
    train_refused(tmp_path, DET_CONFIG, det_options(root), "none of the config's classes", "['coin', 'tile', 'ring']")


def test_a_file_without_annotations_is_one_error(tmp_path, det_checkpoint):
    root = coco_root(tmp_path / 'coco', categories(*SHAPES), annotations=[])
    train_refused(tmp_path, DET_CONFIG, det_options(root), 'instances_train2017.json', 'no annotations')
    proc = run_tool('test.py', DET_CONFIG, det_checkpoint, '--cfg-options', *det_options(root), check=False)
    assert_one_line_error(proc, 'instances_val2017.json', 'no annotations')


def test_duplicate_image_ids_are_an_error(tmp_path):
    images = [dict(id=1, file_name='a.png', width=64, height=64), dict(id=1, file_name='b.png', width=64, height=64)]
    root = coco_root(tmp_path / 'coco', categories(*SHAPES), annotations=[box(1, 1, 1)], images=images)
    train_refused(tmp_path, DET_CONFIG, det_options(root), 'instances_train2017.json', 'image id 1 is used 2 times')


def test_dropped_annotations_are_counted_by_kind(tmp_path):
    """An orphan annotation, one of a category id the file lacks, one of a category the config does not
    train, one box outside the image: counted by kind (--strict-data makes the warning an error)."""
    from repvit_mm.detection.data_checks import check_coco_dataset
    from repvit_mm.utils.errors import DataWarning

    annotations = [
        box(1, 1, 1),
        box(2, 2, 3),
        box(3, 99, 1),  # image 99 is not listed
        box(4, 1, 7),  # category 7 is not listed
        box(5, 2, 4),  # 'hexagon' is not one of the config's classes
        dict(box(6, 1, 2), bbox=[100, 100, 10, 10]),  # outside the 64 x 64 image
    ]
    root = coco_root(tmp_path / 'coco', categories(*SHAPES, 'hexagon'), annotations=annotations)
    line = train_refused(tmp_path, DET_CONFIG, det_options(root), '4 of 6 annotations', strict=True)
    for kind in (
        'image id not in images: 1',
        'category id not in categories: 1',
        "category not in the config's classes: 1",
        'outside the image: 1',
    ):
        assert kind in line, line
    dataset = dict(
        type='CocoDataset',
        data_root=str(root),
        ann_file='annotations/instances_train2017.json',
        data_prefix=dict(img='train2017/'),
        metainfo=dict(classes=tuple(SHAPES)),
    )
    with pytest.raises(DataWarning, match='4 of 6 annotations'):
        check_coco_dataset(dataset)
    # the same file without the dropped ones passes
    coco_root(tmp_path / 'clean', categories(*SHAPES, 'hexagon'), annotations=annotations[:2])
    check_coco_dataset(dict(dataset, data_root=str(tmp_path / 'clean')))


def test_the_shapes_coco_data_passes(shapes_root):
    from mmengine.config import Config

    from repvit_mm.detection.data_checks import check_coco_dataset

    cfg = Config.fromfile(str(DET_CONFIG))
    for split in ('train', 'val'):
        check_coco_dataset(dict(cfg[f'{split}_dataloader'].dataset, data_root=str(shapes_root / 'coco')))


# ----------------------------------------------------------------------------------------- class folders
def class_folders(root: Path, names: list[str]) -> Path:
    for split in ('train', 'val'):
        for index, name in enumerate(names):
            save_image(root / split / name / f'{name}_0.png', index)
    return root


def cls_options(root: Path, classes: list[str] | None = None, ann_file: str = '') -> list[str]:
    options = []
    for split in ('train', 'val', 'test'):
        options += [f'{split}_dataloader.dataset.data_root={root}', f'{split}_dataloader.dataset.ann_file={ann_file}']
        if classes is not None:
            options.append(f'{split}_dataloader.dataset.classes=[{",".join(classes)}]')
    return options


def test_classes_out_of_the_folders_sorted_order_are_refused(tmp_path):
    """mmpretrain numbers folders circle/square/triangle as 0/1/2 whatever ``classes`` says."""
    root = class_folders(tmp_path / 'data', SHAPES)
    train_refused(
        tmp_path,
        CLS_CONFIG,
        cls_options(root, ['triangle', 'circle', 'square']),
        "sorted order ['circle', 'square', 'triangle']",
        "['triangle', 'circle', 'square']",
    )


def test_the_own_data_configs_default_classes_do_not_rename_the_users_folders(tmp_path):
    root = class_folders(tmp_path / 'data', ['cat', 'dog'])
    train_refused(tmp_path, OWN_CLS_CONFIG, cls_options(root), "class 'disc'", "set classes to ['cat', 'dog']")


def test_an_annotation_list_whose_labels_contradict_the_folder_names_is_refused(tmp_path):
    root = class_folders(tmp_path / 'data', SHAPES)
    (root / 'meta').mkdir()
    for split in ('train', 'val'):  # triangle's images labelled 0, circle's 2: classes in the wrong order
        (root / 'meta' / f'{split}.txt').write_text(
            'triangle/triangle_0.png 0\ncircle/circle_0.png 2\nsquare/square_0.png 1\n'
        )
    train_refused(
        tmp_path,
        CLS_CONFIG,
        [*cls_options(root, SHAPES, 'meta/train.txt')],
        'train.txt line 1',
        "'triangle/triangle_0.png' has label 0",
        "classes[0] is 'circle'",
    )


def test_matching_folders_and_lists_pass(tmp_path, shapes_root):
    from mmengine.config import Config

    from repvit_mm.classification.data_checks import check_image_folder_dataset

    root = class_folders(tmp_path / 'data', SHAPES)
    dataset = dict(type='CustomDataset', data_root=str(root), data_prefix='train', ann_file='', classes=tuple(SHAPES))
    check_image_folder_dataset(dataset)
    check_image_folder_dataset(dict(dataset, classes=None))  # no classes: the folders name them
    cfg = Config.fromfile(str(CLS_CONFIG))  # the Shapes list: labels in the classes' order
    check_image_folder_dataset(dict(cfg.train_dataloader.dataset, data_root=str(shapes_root / 'imagenet')))
