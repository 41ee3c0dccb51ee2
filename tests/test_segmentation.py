"""Semantic FPN with the RepViT backbone on mmseg 1.x: configs, AlignResize, data checks, train/test tools."""

from __future__ import annotations

import copy
import functools
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import CONFIGS, STAGE_WIDTHS, assert_one_line_error, randomize_bn_, run_tool
from PIL import Image

import repvit_mm  # noqa: F401  (registers RepViT)
import repvit_mm.segmentation  # noqa: F401  (registers our transforms and the data check)

SEG_CONFIGS = sorted((CONFIGS / 'segmentation').glob('*.py'))
ADE20K_CONFIGS = [p for p in SEG_CONFIGS if 'ade20k' in p.name]
SHAPES_CFG = CONFIGS / 'segmentation' / 'fpn_repvit-m0.9_shapes.py'
CLS_CFG = CONFIGS / 'classification' / 'repvit-m0.9_shapes-64px.py'


# Its module- and session-scoped fixtures (trained models, written files) are made once: the module runs on one
# pytest-xdist worker (`make test` distributes with --dist loadgroup).
pytestmark = pytest.mark.xdist_group('segmentation')


@pytest.fixture(scope='module', autouse=True)
def single_thread():
    """One torch thread here and in the tools: on a busy 2-core machine, OpenMP threads waiting for each
    other multiply the CPU time of these small models several times over."""
    threads, omp = torch.get_num_threads(), os.environ.get('OMP_NUM_THREADS')
    torch.set_num_threads(1)
    os.environ['OMP_NUM_THREADS'] = '1'
    yield
    torch.set_num_threads(threads)
    if omp is None:
        os.environ.pop('OMP_NUM_THREADS')
    else:
        os.environ['OMP_NUM_THREADS'] = omp


@functools.cache
def _read_cfg(path: Path):
    from mmengine.config import Config

    return Config.fromfile(str(path))


def load_cfg(path: Path, **options):
    """A fresh copy of the config (files are parsed once: resolving the ``mmseg::`` bases is slow)."""
    cfg = copy.deepcopy(_read_cfg(path))
    cfg.merge_from_dict(options)
    return cfg


def build_segmentor(cfg):
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    init_default_scope('mmseg')
    cfg.model.backbone.init_cfg = None
    return revert_sync_batchnorm(MODELS.build(cfg.model))


def shapes_options(root: Path) -> list[str]:
    """Point every split of the Shapes config at ``root`` (an ``ade20k`` layout)."""
    return [f'{split}_dataloader.dataset.data_root={root}' for split in ('train', 'val', 'test')]


def write_png(path: Path, labels: np.ndarray) -> None:
    Image.fromarray(labels).save(path)


# ----------------------------------------------------------------------------------------- configs
@pytest.mark.parametrize('path', SEG_CONFIGS, ids=lambda p: p.stem)
def test_every_config_builds_and_runs_its_model(path):
    cfg = load_cfg(path)
    arch = cfg.model.backbone.arch
    assert cfg.model.backbone.type == 'mmpretrain.RepViT'
    assert tuple(cfg.model.backbone.out_indices) == (0, 1, 2, 3)
    assert cfg.model.backbone.init_cfg.type == 'Pretrained'
    assert cfg.model.backbone.init_cfg.prefix == 'backbone.'
    assert f'repvit-{arch.replace("_", ".")}_' in path.name
    model = build_segmentor(cfg).eval()
    with torch.no_grad():
        feats = model.backbone(torch.zeros(1, 3, 64, 96))
        logits = model(torch.zeros(1, 3, 64, 96), mode='tensor')
    # the neck's in_channels are the backbone's stage widths; strides 4..32; one logit per class at 1/4
    assert [f.shape[1] for f in feats] == list(cfg.model.neck.in_channels) == STAGE_WIDTHS[arch]
    assert [f.shape[-1] for f in feats] == [24, 12, 6, 3]
    assert logits.shape == (1, cfg.model.decode_head.num_classes, 16, 24)


def test_ade20k_configs_follow_the_authors_recipe():
    for path in ADE20K_CONFIGS:
        cfg = load_cfg(path)
        assert cfg.model.decode_head.num_classes == 150 and cfg.model.neck.out_channels == 256
        assert cfg.model.neck.num_outs == 4 and cfg.model.backbone.norm_eval
        assert (
            cfg.optim_wrapper.optimizer.type,
            cfg.optim_wrapper.optimizer.lr,
            cfg.optim_wrapper.optimizer.weight_decay,
        ) == ('AdamW', 2e-4, 1e-4)
        assert 'momentum' not in cfg.optim_wrapper.optimizer
        [poly] = cfg.param_scheduler
        assert (poly.type, poly.power, poly.eta_min, poly.end) == ('PolyLR', 0.9, 1e-6, 40001)  # mmcv's poly
        assert (cfg.train_cfg.max_iters, cfg.train_cfg.val_interval) == (40000, 4000)
        assert cfg.default_hooks.checkpoint.interval == 4000
        assert cfg.train_dataloader.batch_size * 8 == cfg.auto_scale_lr.base_batch_size == 32
        train = {t.type: t for t in cfg.train_dataloader.dataset.pipeline}
        assert train['RandomResize'].scale == (2048, 512) and train['RandomResize'].ratio_range == (0.5, 2.0)
        assert train['RandomCrop'].crop_size == (512, 512) and train['RandomCrop'].cat_max_ratio == 0.75
        assert {'RandomFlip', 'PhotoMetricDistortion', 'CheckedLoadAnnotations'} <= set(train)
        for loader in (cfg.val_dataloader, cfg.test_dataloader):
            assert loader.dataset.type == 'ADE20KDataset'  # reduce_zero_label=True by default
            test = [t.type for t in loader.dataset.pipeline]
            assert test == ['LoadImageFromFile', 'AlignResize', 'CheckedLoadAnnotations', 'PackSegInputs']
            assert loader.dataset.pipeline[1].scale == (2048, 512)
        assert cfg.test_evaluator.type == 'IoUMetric'


# ----------------------------------------------------------------------------------------- AlignResize
@pytest.mark.parametrize('height,width', [(512, 683), (384, 512), (97, 131), (300, 2000), (512, 512)])
def test_align_resize_keeps_ratio_and_aligns_to_32(height, width):
    from repvit_mm.segmentation import AlignResize

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, size=(height, width), dtype=np.uint8)
    results = dict(
        img=rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8), gt_seg_map=labels, seg_fields=['gt_seg_map']
    )
    out = AlignResize(scale=(2048, 512))(results)
    new_h, new_w = out['img'].shape[:2]
    # fit in 2048x512 keeping the ratio, then each side up to the next multiple of 32
    factor = min(2048 / max(height, width), 512 / min(height, width))
    assert new_w == -(-int(width * factor + 0.5) // 32) * 32
    assert new_h == -(-int(height * factor + 0.5) // 32) * 32
    assert new_h % 32 == 0 and new_w % 32 == 0
    assert abs(new_w / new_h - width / height) <= 32 / min(new_h, new_w) * (width / height + 1)
    assert out['img_shape'] == (new_h, new_w) and out['keep_ratio'] is True
    assert out['scale_factor'] == pytest.approx((new_w / width, new_h / height))
    assert out['gt_seg_map'].shape == (new_h, new_w)
    assert set(np.unique(out['gt_seg_map'])) <= set(np.unique(labels))  # nearest: no new label values


def test_align_resize_without_keep_ratio_and_bad_arguments():
    from repvit_mm.segmentation import AlignResize

    out = AlignResize(scale=(100, 60), keep_ratio=False)(dict(img=np.zeros((97, 131, 3), np.uint8)))
    assert out['img'].shape == (64, 128, 3) and out['keep_ratio'] is False
    assert out['scale_factor'] == pytest.approx((128 / 131, 64 / 97))
    with pytest.raises(ValueError, match='scale must be two positive ints'):
        AlignResize(scale=512)
    with pytest.raises(ValueError, match='size_divisor'):
        AlignResize(scale=(64, 64), size_divisor=0)


def test_test_pipeline_aligns_image_but_scores_original_labels(tmp_path):
    from mmengine.dataset import Compose
    from mmengine.registry import init_default_scope

    init_default_scope('mmseg')
    cfg = load_cfg(SHAPES_CFG)
    Image.fromarray(np.full((97, 131, 3), 100, np.uint8)).save(tmp_path / 'a.jpg')
    write_png(tmp_path / 'a.png', np.full((97, 131), 3, np.uint8))
    inputs = dict(
        img_path=str(tmp_path / 'a.jpg'),
        seg_map_path=str(tmp_path / 'a.png'),
        reduce_zero_label=True,
        seg_fields=[],
        label_map=None,
    )
    packed = Compose(cfg.test_pipeline)(inputs)
    sample = packed['data_samples']
    # 97x131 scaled by 128/97 is 128x173, aligned 128x192; the labels stay at the original size
    assert packed['inputs'].shape == (3, 128, 192)
    assert sample.img_shape == (128, 192) and sample.ori_shape == (97, 131)
    assert sample.gt_sem_seg.data.shape == (1, 97, 131) and sample.gt_sem_seg.data.unique().tolist() == [2]


# ----------------------------------------------------------------------------------------- label checks
def load_annotation(path: Path, num_classes: int = 4) -> dict:
    from repvit_mm.segmentation import CheckedLoadAnnotations

    return CheckedLoadAnnotations(num_classes=num_classes)(
        dict(seg_map_path=str(path), reduce_zero_label=True, seg_fields=[], label_map=None)
    )


def test_checked_load_annotations_accepts_classes_and_ignored_values(tmp_path):
    write_png(tmp_path / 'ok.png', np.array([[0, 1, 2], [3, 4, 255]], np.uint8))
    labels = load_annotation(tmp_path / 'ok.png')['gt_seg_map']
    assert labels.tolist() == [[255, 0, 1], [2, 3, 255]]


def test_checked_load_annotations_names_file_and_values(tmp_path):
    from repvit_mm.utils import UserInputError

    write_png(tmp_path / 'bad.png', np.array([[1, 2], [7, 200]], np.uint8))
    with pytest.raises(UserInputError, match=r'bad\.png: label value\(s\) 7, 200 out of range for 4 classes'):
        load_annotation(tmp_path / 'bad.png')
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / 'colour.png')
    with pytest.raises(UserInputError, match=r'colour\.png: label map has shape \(4, 4, 3\)'):
        load_annotation(tmp_path / 'colour.png')


@pytest.fixture
def shapes_copy(shapes_root, tmp_path) -> Path:
    """A private copy of the Shapes ADE20K layout that a test may break."""
    return Path(shutil.copytree(shapes_root / 'ade20k', tmp_path / 'ade20k'))


def shapes_dataset_cfg(root: Path, split: str = 'train'):
    cfg = load_cfg(SHAPES_CFG, **{f'{split}_dataloader.dataset.data_root': str(root)})
    return cfg[f'{split}_dataloader'].dataset


def test_data_check_passes_shapes_and_names_missing_folders(shapes_copy):
    from repvit_mm.segmentation import check_seg_dataset
    from repvit_mm.utils import UserInputError

    check_seg_dataset(shapes_dataset_cfg(shapes_copy))
    check_seg_dataset(shapes_dataset_cfg(shapes_copy, 'val'))
    ade = dict(shapes_dataset_cfg(shapes_copy), type='ADE20KDataset', metainfo=None)
    check_seg_dataset(ade)  # ADE20K's 150 classes: 0..4 are fine

    with pytest.raises(UserInputError, match='segmentation data root not found: .*nowhere'):
        check_seg_dataset(shapes_dataset_cfg(shapes_copy / 'nowhere'))
    shutil.rmtree(shapes_copy / 'annotations' / 'validation')
    with pytest.raises(UserInputError, match='annotation folder not found: .*annotations/validation'):
        check_seg_dataset(shapes_dataset_cfg(shapes_copy, 'val'))
    shutil.rmtree(shapes_copy / 'images' / 'training')
    with pytest.raises(UserInputError, match='image folder not found: .*images/training'):
        check_seg_dataset(shapes_dataset_cfg(shapes_copy))


def test_data_check_refuses_wrong_label_encodings(shapes_copy):
    from repvit_mm.segmentation import check_seg_dataset
    from repvit_mm.utils import UserInputError

    png = shapes_copy / 'annotations' / 'training' / 'ADE_train_00000005.png'
    labels = np.asarray(Image.open(png))
    wide = labels.astype(np.uint16)
    wide[1, 0] = 300
    Image.fromarray(wide).save(png)  # mmseg would wrap 300 to 44
    with pytest.raises(UserInputError, match=r'ADE_train_00000005\.png: label value\(s\) 300 out of range'):
        check_seg_dataset(shapes_dataset_cfg(shapes_copy))
    Image.fromarray(np.stack([labels] * 3, axis=-1)).save(png)
    with pytest.raises(UserInputError, match=r'ADE_train_00000005\.png: label map has shape \(128, 128, 3\)'):
        check_seg_dataset(shapes_dataset_cfg(shapes_copy))
    ade = dict(shapes_dataset_cfg(shapes_copy), type='ADE20KDataset', metainfo=None)
    labels = labels.copy()
    labels[0, 0] = 151
    write_png(png, labels)
    with pytest.raises(UserInputError, match=r'151 out of range for 150 classes with reduce_zero_label=True'):
        check_seg_dataset(ade)


def test_labels_beyond_the_scan_limit_fail_when_loaded(shapes_copy, monkeypatch):
    """A large dataset is scanned in part before training; the loading transform checks every file."""
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS

    from repvit_mm.segmentation import data_checks
    from repvit_mm.utils import UserInputError

    monkeypatch.setattr(data_checks, 'LABEL_SCAN_LIMIT', 4)  # files 0, 16, 32, 48 of 64
    bad = shapes_copy / 'annotations' / 'training' / 'ADE_train_00000002.png'
    write_png(bad, np.full((128, 128), 9, np.uint8))
    dataset_cfg = shapes_dataset_cfg(shapes_copy)
    data_checks.check_seg_dataset(dataset_cfg)  # not among the scanned files
    init_default_scope('mmseg')
    dataset = DATASETS.build(dataset_cfg)
    dataset[0]
    with pytest.raises(UserInputError, match=r'ADE_train_00000002\.png: label value\(s\) 9 out of range'):
        dataset[1]


# ----------------------------------------------------------------------------------------- inference
@pytest.fixture(scope='module')
def segmentor():
    model = build_segmentor(load_cfg(SHAPES_CFG)).eval()
    randomize_bn_(model)
    return model


def predict(model, height: int, width: int, seed: int = 0):
    """Segment a random ``height`` x ``width`` image fed to the model as is (no resize, no padding)."""
    from mmseg.structures import SegDataSample

    image = torch.randint(0, 256, (3, height, width), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
    meta = dict(ori_shape=(height, width), img_shape=(height, width))
    data = model.data_preprocessor(dict(inputs=[image], data_samples=[SegDataSample(metainfo=meta)]))
    with torch.no_grad():
        [sample] = model.predict(data['inputs'], data['data_samples'])
    return sample.seg_logits.data, sample.pred_sem_seg.data[0]


def test_whole_and_slide_inference_on_sizes_not_divisible_by_32(segmentor):
    from mmengine.config import ConfigDict

    whole_logits, whole = predict(segmentor, 97, 131)
    assert whole.shape == (97, 131) and whole_logits.shape == (4, 97, 131)
    try:
        segmentor.test_cfg = ConfigDict(mode='slide', crop_size=(64, 64), stride=(48, 48))
        slide_logits, slide = predict(segmentor, 97, 131)
        # one window covering the image: sliding is whole-image inference
        segmentor.test_cfg = ConfigDict(mode='slide', crop_size=(128, 160), stride=(96, 128))
        single_logits, _ = predict(segmentor, 97, 131)
    finally:
        segmentor.test_cfg = ConfigDict(mode='whole')
    assert slide.shape == (97, 131) and slide_logits.shape == (4, 97, 131)
    assert torch.isfinite(slide_logits).all()
    torch.testing.assert_close(single_logits, whole_logits)


def test_fused_segmentor_gives_the_same_segmentation(segmentor):
    from repvit_mm.models.reparam import switch_to_deploy

    fused = copy.deepcopy(segmentor)
    switch_to_deploy(fused)
    n_bn = sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in fused.backbone.modules())
    assert n_bn == 0, f'{n_bn} BatchNorm layers left in the fused backbone'
    for seed, (height, width) in enumerate([(97, 131), (128, 128)]):
        logits, pred = predict(segmentor, height, width, seed)
        fused_logits, fused_pred = predict(fused, height, width, seed)
        # random BN statistics make logits of ~1e2: compare at float32 precision relative to that scale
        scale = logits.abs().max().item()
        torch.testing.assert_close(fused_logits, logits, atol=1e-5 * scale, rtol=0)
        assert torch.equal(fused_pred, pred)


# ----------------------------------------------------------------------------------------- tools
@pytest.fixture(scope='module')
def classifier_ckpt(tmp_path_factory) -> tuple[Path, dict]:
    """A Shapes classifier (mmpretrain ImageClassifier, RepViT-M0.9) saved like a Runner checkpoint."""
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS

    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(load_cfg(CLS_CFG).model)
    randomize_bn_(model.backbone, seed=1)
    state = model.state_dict()
    path = tmp_path_factory.mktemp('cls') / 'classifier.pth'
    torch.save({'state_dict': state, 'meta': {}}, path)
    return path, state


@pytest.fixture(scope='module')
def trained(shapes_root, classifier_ckpt, tmp_path_factory) -> Path:
    """Shapes segmentor fine-tuned 2 iterations from the classifier by tools/train.py."""
    work = tmp_path_factory.mktemp('seg')
    run_tool(
        'train.py',
        SHAPES_CFG,
        '--work-dir',
        work,
        '--cfg-options',
        *shapes_options(shapes_root / 'ade20k'),
        f'model.backbone.init_cfg.checkpoint={classifier_ckpt[0]}',
        'train_dataloader.batch_size=2',
        'train_cfg.max_iters=2',
        'train_cfg.val_begin=3',
        'default_hooks.checkpoint.interval=2',
        'default_hooks.logger.interval=1',
    )
    return work / 'iter_2.pth'


@pytest.mark.slow
def test_train_starts_from_the_classifier_backbone(trained, classifier_ckpt):
    from repvit_mm.utils import safe_torch_load

    seg = safe_torch_load(str(trained), map_location='cpu')
    assert seg['meta']['iter'] == 2
    _, cls_state = classifier_ckpt
    backbone = {k: v for k, v in cls_state.items() if k.startswith('backbone.')}
    assert backbone and set(backbone) <= set(seg['state_dict'])
    for key, value in backbone.items():
        if key.endswith(('running_mean', 'running_var')):
            # BN statistics stay the ImageNet (here: classifier) ones while fine-tuning (norm_eval)
            torch.testing.assert_close(seg['state_dict'][key], value, atol=0, rtol=0)
        elif value.is_floating_point():
            # two AdamW steps move a weight by about 2 x lr at most
            torch.testing.assert_close(seg['state_dict'][key], value, atol=5e-3, rtol=0)


@pytest.mark.slow
def test_test_tool_reports_miou_and_deploy_matches(trained, shapes_root):
    metrics = []
    for extra in ([], ['--deploy']):
        proc = run_tool(
            'test.py',
            SHAPES_CFG,
            trained,
            '--work-dir',
            trained.parent,
            *extra,
            '--cfg-options',
            *shapes_options(shapes_root / 'ade20k'),
        )
        log = proc.stdout + proc.stderr
        # mmseg's IoUMetric over the 16 validation images, as the test loop logs it
        found = re.search(r'Iter\(test\) \[16/16\]\s+aAcc: ([\d.]+)\s+mIoU: ([\d.]+)\s+mAcc: ([\d.]+)', log)
        assert found, log[-3000:]
        metrics.append(tuple(map(float, found.groups())))
        # its per-class table: the 4 Shapes classes, whose IoUs average to the mIoU
        ious = [
            float(re.search(rf'\|\s*{name}\s*\|\s*([\d.]+)\s*\|', log).group(1))
            for name in ('background', 'circle', 'square', 'triangle')
        ]
        assert abs(sum(ious) / 4 - metrics[-1][1]) <= 0.01
    assert all(0.0 <= value <= 100.0 for value in metrics[0])
    # the fused (--deploy) model segments the same; two iterations in, it scores the classes nearly alike,
    # so float rounding may flip a pixel's class: a metric moves by its printed precision (0.01) at most
    assert metrics[1] == pytest.approx(metrics[0], abs=0.0101), metrics


def test_missing_annotation_stops_train_with_one_line(shapes_copy, tmp_path):
    (shapes_copy / 'annotations' / 'validation' / 'ADE_val_00000003.png').unlink()
    work = tmp_path / 'work'
    proc = run_tool(
        'train.py', SHAPES_CFG, '--work-dir', work, '--cfg-options', *shapes_options(shapes_copy), check=False
    )
    assert_one_line_error(proc, 'ADE_val_00000003.jpg has no annotation', 'ADE_val_00000003.png not found')
    assert not work.exists()


def test_out_of_range_label_stops_test_with_one_line(shapes_copy, trained, tmp_path):
    png = shapes_copy / 'annotations' / 'validation' / 'ADE_val_00000007.png'
    labels = np.asarray(Image.open(png)).copy()
    labels[:4, :4] = 42
    write_png(png, labels)
    proc = run_tool(
        'test.py',
        SHAPES_CFG,
        trained,
        '--work-dir',
        tmp_path / 'work',
        '--cfg-options',
        *shapes_options(shapes_copy),
        check=False,
    )
    assert_one_line_error(proc, 'ADE_val_00000007.png', 'label value(s) 42 out of range for 4 classes')
    assert not (tmp_path / 'work').exists()
