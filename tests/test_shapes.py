"""The Shapes dataset: determinism, safe writing, CLI, loading with the real OpenMMLab datasets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_one_line_error, run_tool
from PIL import Image

from repvit_mm.datasets import shapes
from repvit_mm.datasets.shapes import (
    SHAPES_CLASSES,
    SHAPES_METAINFO,
    SHAPES_SEG_CLASSES,
    classification_scene,
    instance_scene,
    make_shapes,
)

# Its module- and session-scoped fixtures (trained models, written files) are made once: the module runs on one
# pytest-xdist worker (`make test` distributes with --dist loadgroup).
pytestmark = [
    pytest.mark.xdist_group('shapes'),
    pytest.mark.filterwarnings('ignore:__array__ implementation:DeprecationWarning'),  # pycocotools under numpy 2
]
# Small but complete: every format, both splits, default image sizes.
SMALL = dict(num_train={'imagenet': 4, 'coco': 8, 'ade20k': 8}, num_val={'imagenet': 2, 'coco': 3, 'ade20k': 3})


@pytest.fixture(scope='module')
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp('shapes')
    make_shapes(out, seed=0, **SMALL)
    return out


def read_tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob('*')) if p.is_file()}


def polygon_mask(segmentation: list[list[float]], height: int, width: int) -> np.ndarray:
    from pycocotools import mask as mask_utils  # the rasteriser CocoMetric uses

    rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    return mask_utils.decode(rle).astype(bool)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


# ----------------------------------------------------------------------------- generation
def test_same_seed_is_byte_identical_and_other_seed_differs(root: Path, tmp_path: Path) -> None:
    make_shapes(tmp_path / 'again', seed=0, **SMALL)
    make_shapes(tmp_path / 'other', seed=1, **SMALL)
    reference = read_tree(root)
    assert read_tree(tmp_path / 'again') == reference
    other = read_tree(tmp_path / 'other')
    assert other.keys() == reference.keys()
    images = [name for name in reference if name.lower().endswith(('.jpg', '.jpeg'))]
    assert all(other[name] != reference[name] for name in images)


def test_layout_and_counts(root: Path) -> None:
    inet = root / 'imagenet'
    assert (inet / 'meta' / 'classes.txt').read_text().split() == list(SHAPES_CLASSES)
    for split, per_class in (('train', 4), ('val', 2)):
        lines = (inet / 'meta' / f'{split}.txt').read_text().splitlines()
        assert len(lines) == 3 * per_class
        # classes interleaved, as in ImageNet's lists: the first images of a split show every class
        assert [line.split()[1] for line in lines[:4]] == ['0', '1', '2', '0']
        for line in lines:
            relative, label = line.split()
            assert relative.split('/')[0] == SHAPES_CLASSES[int(label)]
            assert (inet / split / relative).is_file()
    assert Image.open(inet / 'train' / 'circle' / 'circle_00000.JPEG').size == (64, 64)
    assert len(list((root / 'coco' / 'train2017').glob('*.jpg'))) == 8
    assert len(list((root / 'coco' / 'val2017').glob('*.jpg'))) == 3
    for folder, count in (('training', 8), ('validation', 3)):
        images = sorted(p.stem for p in (root / 'ade20k' / 'images' / folder).glob('*.jpg'))
        maps = sorted(p.stem for p in (root / 'ade20k' / 'annotations' / folder).glob('*.png'))
        assert images == maps and len(images) == count
        label = Image.open(root / 'ade20k' / 'annotations' / folder / f'{maps[0]}.png')
        assert label.mode == 'L' and label.size == (128, 128)
    assert not [p for p in root.iterdir() if p.name.startswith('.')], 'temp dirs left behind'


def test_classification_scene_has_one_clearly_dominant_shape() -> None:
    distractor_count = 0
    for label in range(3):
        for index in range(20):
            scene = classification_scene(0, 'train', label, index, 64)
            dominant, *distractors = scene.shapes
            assert dominant.label == label
            area = shapes.polygon_area(dominant.polygon())
            assert all(shapes.polygon_area(s.polygon()) < area / 9 for s in distractors)
            distractor_count += len(distractors)
    assert distractor_count > 20  # most images carry distractors


def test_polygons_stay_inside_and_match_the_rendered_shapes() -> None:
    pytest.importorskip('pycocotools')
    size, ious = 128, []
    for index in range(12):
        scene = instance_scene(0, 'train', index, size)
        assert 1 <= len(scene.shapes) <= 5
        for shape, coverage in zip(scene.shapes, scene.coverages, strict=True):
            polygon = shape.polygon()
            assert polygon.min() >= 0 and polygon.max() <= size
            mask = polygon_mask([polygon.ravel().tolist()], size, size)
            ious.append(iou(mask, coverage >= 0.5))
            # The pixels fully inside carry the shape's colour (noise averages out).
            colour = scene.image[coverage == 1].mean(axis=0)
            assert np.abs(colour - shape.color).max() < 6
    # pycocotools samples pixel centres on a 1/5-pixel grid: small shapes lose a few edge pixels.
    assert min(ious) > 0.9 and np.mean(ious) > 0.97


def test_refuses_non_empty_target_and_replaces_with_overwrite(tmp_path: Path) -> None:
    make_shapes(tmp_path, formats=['coco'], num_train=1, num_val=1, image_size=32)
    (tmp_path / 'ade20k').mkdir()  # empty directories are fine to fill
    with pytest.raises(FileExistsError, match=str(tmp_path / 'coco')):
        make_shapes(tmp_path, formats=['ade20k', 'coco'], num_train=1, num_val=1, image_size=32)
    assert not any((tmp_path / 'ade20k').iterdir()), 'nothing is written when one target refuses'
    make_shapes(tmp_path, formats=['coco'], num_train=2, num_val=1, image_size=32, overwrite=True)
    assert len(list((tmp_path / 'coco' / 'train2017').glob('*.jpg'))) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ['ade20k', 'coco']


def test_interrupted_write_leaves_no_half_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(root: Path, spec: shapes.FormatSpec, seed: int) -> None:
        (root / 'train2017').mkdir()
        raise KeyboardInterrupt

    monkeypatch.setitem(shapes.WRITERS, 'coco', crash)
    with pytest.raises(KeyboardInterrupt):
        make_shapes(tmp_path, formats=['coco'])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    'kwargs',
    [
        dict(formats=['mnist']),
        dict(num_train=0),
        dict(num_val={'coco': -1}),
        dict(image_size=8),
        dict(num_train={'cifar': 3}),
        dict(seed=-1),
    ],
)
def test_rejects_bad_arguments(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(ValueError):
        make_shapes(tmp_path / 'out', **kwargs)
    assert not (tmp_path / 'out').exists()


@pytest.mark.slow
def test_cli_writes_then_refuses_to_overwrite(tmp_path: Path) -> None:
    small = ['--formats', 'coco', 'ade20k', '--num-train', '2', '--num-val', '1', '--size', '48']
    first = run_tool('make_shapes.py', tmp_path, *small)
    assert str(tmp_path / 'coco') in first.stdout and str(tmp_path / 'ade20k') in first.stdout
    refused = run_tool('make_shapes.py', tmp_path, *small, check=False)
    assert_one_line_error(refused, str(tmp_path / 'coco'), '--force')


def test_cli_force_and_bad_input(tmp_path: Path) -> None:
    small = ['--formats', 'imagenet', '--num-train', '1', '--num-val', '1', '--size', '32']
    run_tool('make_shapes.py', tmp_path, *small)
    run_tool('make_shapes.py', tmp_path, *small, '--seed', '3', '--force')
    for bad, fragment in (
        (['--num-train', '0'], 'num_train'),
        (['--size', '8'], 'image_size'),
        (['--seed', '-1'], 'seed'),
        (['--formats', 'mnist'], 'mnist'),
        (['--num-val', 'two'], 'two'),
    ):
        proc = run_tool('make_shapes.py', tmp_path / 'new', *bad, check=False)
        assert proc.returncode != 0
        assert proc.stderr.startswith('error: ') and proc.stderr.count('\n') == 1 and fragment in proc.stderr, (
            proc.stderr
        )
    assert not (tmp_path / 'new').exists()


# ----------------------------------------------------------------------------- OpenMMLab loaders
def test_imagenet_loads_with_mmpretrain_custom_dataset(root: Path) -> None:
    pytest.importorskip('mmpretrain')
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import DATASETS

    common = dict(
        type='CustomDataset',
        data_root=str(root / 'imagenet'),
        metainfo=SHAPES_METAINFO['imagenet'],
        pipeline=[dict(type='LoadImageFromFile')],
    )
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        scanned = DATASETS.build(dict(common, data_prefix='train'))
        listed = DATASETS.build(dict(common, data_prefix='val', ann_file='meta/val.txt'))
        sample = scanned[0]
        # mmpretrain's ImageNet class also works once the classes are given (it asserts 1000 else).
        imagenet_type = DATASETS.build(dict(common, type='ImageNet', data_prefix='val', ann_file='meta/val.txt'))
    assert len(imagenet_type) == 6 and tuple(imagenet_type.CLASSES) == SHAPES_CLASSES
    assert len(scanned) == 12 and len(listed) == 6
    assert tuple(scanned.CLASSES) == tuple(listed.CLASSES) == SHAPES_CLASSES
    for dataset in (scanned, listed):
        for i in range(len(dataset)):
            info = dataset.get_data_info(i)
            assert Path(info['img_path']).parent.name == SHAPES_CLASSES[info['gt_label']]
    assert sample['img'].shape == (64, 64, 3)


def test_coco_loads_with_mmdet_and_ground_truth_scores_full_ap(root: Path) -> None:
    pytest.importorskip('mmdet')
    pytest.importorskip('pycocotools')
    import torch
    from mmdet.evaluation import CocoMetric
    from mmdet.registry import DATASETS
    from mmengine.registry import DefaultScope

    ann_file = root / 'coco' / 'annotations' / 'instances_val2017.json'
    with DefaultScope.overwrite_default_scope('mmdet'):
        dataset = DATASETS.build(
            dict(
                type='CocoDataset',
                data_root=str(root / 'coco'),
                ann_file='annotations/instances_val2017.json',
                data_prefix=dict(img='val2017/'),
                metainfo=SHAPES_METAINFO['coco'],
                test_mode=True,
                pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True, with_mask=True)],
            )
        )
        first = dataset[0]
    document = json.loads(ann_file.read_text())
    assert len(dataset) == 3 and tuple(dataset.metainfo['classes']) == SHAPES_CLASSES
    assert sum(len(dataset.get_data_info(i)['instances']) for i in range(3)) == len(document['annotations'])
    assert first['gt_masks'].masks.shape[1:] == (128, 128) and first['img'].shape == (128, 128, 3)

    metric = CocoMetric(ann_file=str(ann_file), metric=['bbox', 'segm'])
    metric.dataset_meta = dataset.metainfo
    for i in range(len(dataset)):
        info = dataset.get_data_info(i)
        instances = info['instances']
        h, w = info['height'], info['width']
        prediction = dict(
            bboxes=torch.tensor([inst['bbox'] for inst in instances]).reshape(-1, 4),
            scores=torch.ones(len(instances)),
            labels=torch.tensor([inst['bbox_label'] for inst in instances]),
            masks=torch.from_numpy(np.stack([polygon_mask(inst['mask'], h, w) for inst in instances])),
        )
        metric.process({}, [dict(img_id=info['img_id'], ori_shape=(h, w), pred_instances=prediction)])
    scores = metric.evaluate(size=len(dataset))
    assert scores['coco/bbox_mAP'] == pytest.approx(1.0)
    assert scores['coco/segm_mAP'] == pytest.approx(1.0)


def test_ade20k_loads_with_mmseg_and_reduce_zero_label(root: Path) -> None:
    pytest.importorskip('mmseg')
    from mmengine.registry import DefaultScope
    from mmseg.registry import DATASETS

    with DefaultScope.overwrite_default_scope('mmseg'):
        dataset = DATASETS.build(
            dict(
                type='BaseSegDataset',
                data_root=str(root / 'ade20k'),
                data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation'),
                img_suffix='.jpg',
                seg_map_suffix='.png',
                reduce_zero_label=True,
                metainfo=SHAPES_METAINFO['ade20k'],
                pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations')],
            )
        )
        samples = [dataset[i] for i in range(len(dataset))]
    assert len(dataset) == 3 and tuple(dataset.metainfo['classes']) == SHAPES_SEG_CLASSES
    values = set()
    for sample in samples:
        on_disk = np.array(Image.open(sample['seg_map_path']))
        expected = np.where(on_disk == 0, 255, on_disk.astype(int) - 1)
        assert np.array_equal(sample['gt_seg_map'], expected)
        values |= set(np.unique(sample['gt_seg_map']).tolist())
    assert {0, 255} <= values <= {0, 1, 2, 3, 255}


def test_coco_polygons_agree_with_ade20k_label_maps(root: Path) -> None:
    """Equal sizes share scenes: the polygons must cover the same pixels as the label maps."""
    pytest.importorskip('pycocotools')
    document = json.loads((root / 'coco' / 'annotations' / 'instances_train2017.json').read_text())
    images = {image['id']: image for image in document['images']}
    for ann in document['annotations']:
        image = images[ann['image_id']]
        labels = np.array(
            Image.open(root / 'ade20k' / 'annotations' / 'training' / f'ADE_train_{ann["image_id"]:08d}.png')
        )
        mask = polygon_mask(ann['segmentation'], image['height'], image['width'])
        x, y, w, h = ann['bbox']
        assert 0 <= x and 0 <= y and x + w <= image['width'] and y + h <= image['height']
        assert ann['area'] == pytest.approx(mask.sum(), rel=0.1)
        shape_pixels = labels == ann['category_id'] + 1
        edge_pixels = labels == shapes.ADE20K_UNLABELED
        near = np.zeros_like(mask)
        near[int(y) : int(np.ceil(y + h)), int(x) : int(np.ceil(x + w))] = True
        # Surely-inside pixels lie in the polygon, which adds only ambiguous edge pixels (up to
        # pycocotools' 1/5-pixel rounding and the odd sliver at a sharp corner).
        assert mask[shape_pixels & near].mean() > 0.97
        assert (shape_pixels | edge_pixels)[mask].mean() > 0.97
        assert iou(mask, shape_pixels & near) > 0.75
