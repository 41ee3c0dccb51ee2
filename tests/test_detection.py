"""Mask R-CNN + FPN with the RepViT backbone (mmdet 3): configs, pretrained init, fusion, tools, bad input."""

from __future__ import annotations

import copy
import json
import pickle
import re
import shutil
import socket
from pathlib import Path

import pytest
import torch
from helpers import CONFIGS, STAGE_WIDTHS, assert_one_line_error, randomize_bn_, run_tool
from mmengine.config import Config
from mmengine.registry import DefaultScope

import repvit_mm.detection  # noqa: F401  (registers the COCO data check)

DET_CONFIGS = CONFIGS / 'detection'
SHAPES_CFG = DET_CONFIGS / 'mask-rcnn_repvit-m0.9_fpn_shapes.py'
COCO_CFGS = sorted(DET_CONFIGS.glob('mask-rcnn_repvit-*_fpn_1x_coco.py'))
COCO_SUMMARY_LINE = 'Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]'


# ----------------------------------------------------------------------------------------- helpers
# Its module- and session-scoped fixtures (trained models, written files) are made once: the module runs on one
# pytest-xdist worker (`make test` distributes with --dist loadgroup).
pytestmark = pytest.mark.xdist_group('detection')


def _build(cfg_model: dict):
    """Build a detector (or any mmdet model) from a config dict, in mmdet's registry scope."""
    import mmdet.models  # noqa: F401  (registration)
    from mmdet.registry import MODELS

    with DefaultScope.overwrite_default_scope('mmdet'):
        return MODELS.build(copy.deepcopy(cfg_model))


def _shapes_cfg(checkpoint: Path | None = None) -> Config:
    cfg = Config.fromfile(str(SHAPES_CFG))
    if checkpoint is None:
        cfg.model.backbone.init_cfg = None
    else:
        cfg.model.backbone.init_cfg.checkpoint = str(checkpoint)
    return cfg


def _batch(cfg: Config, coco_root: Path, split: str, num: int) -> dict:
    """``num`` samples of a Shapes COCO split through the config's own pipeline, collated."""
    import mmdet.datasets  # noqa: F401  (registration)
    from mmdet.registry import DATASETS
    from mmengine.dataset import pseudo_collate

    dataset_cfg = copy.deepcopy(cfg[f'{split}_dataloader'].dataset)
    dataset_cfg.data_root = str(coco_root)
    with DefaultScope.overwrite_default_scope('mmdet'):
        dataset = DATASETS.build(dataset_cfg)
    return pseudo_collate([dataset[i] for i in range(num)])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def _metrics(proc) -> dict:
    return json.loads(re.search(r'^metrics: (.*)$', proc.stdout, re.M).group(1))


@pytest.fixture(scope='module')
def cls_checkpoint(tmp_path_factory) -> Path:
    """A RepViT-M0.9 ImageClassifier checkpoint ('backbone.*', 'head.*') whose weights and BN statistics
    differ from a fresh init; the statistics are measured on the perturbed network, as training would, so
    the features stay in a sane range."""
    from mmpretrain.registry import MODELS

    torch.manual_seed(1)
    classifier = MODELS.build(
        dict(
            type='ImageClassifier',
            backbone=dict(type='RepViT', arch='m0_9'),
            head=dict(type='RepViTClsHead', num_classes=3, in_channels=384, distillation=False),
        )
    )
    with torch.no_grad():
        for param in classifier.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    norms = [m for m in classifier.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the calibration batches
    classifier.train()
    with torch.no_grad():
        for _ in range(3):
            classifier.backbone(torch.randn(4, 3, 64, 64))
    for norm in norms:
        norm.momentum = 0.1
    path = tmp_path_factory.mktemp('cls') / 'repvit-m0.9_shapes.pth'
    torch.save({'state_dict': classifier.state_dict(), 'meta': {}}, path)
    return path


# ----------------------------------------------------------------------------------------- configs
@pytest.mark.parametrize('config', [*COCO_CFGS, SHAPES_CFG], ids=lambda p: p.stem)
def test_config_backbone_feeds_fpn(config):
    """Every detection config builds; its backbone's four outputs have FPN's in_channels at strides
    4/8/16/32, and the backbone is RepViT from mmpretrain with SyncBN and a prefixed Pretrained init."""
    cfg = Config.fromfile(str(config))
    backbone_cfg = cfg.model.backbone
    assert backbone_cfg.type == 'mmpretrain.RepViT'
    assert tuple(backbone_cfg.out_indices) == (0, 1, 2, 3)
    assert backbone_cfg.norm_cfg.type == 'SyncBN' and backbone_cfg.norm_eval  # as the authors
    assert backbone_cfg.init_cfg.type == 'Pretrained' and backbone_cfg.init_cfg.prefix == 'backbone.'
    assert list(cfg.model.neck.in_channels) == STAGE_WIDTHS[backbone_cfg.arch]
    width = 256 if config in COCO_CFGS else 128  # the Shapes detector's lighter FPN
    assert (cfg.model.neck.out_channels, cfg.model.neck.num_outs) == (width, 5)

    detector = _build(cfg.model)  # builds, does not load the (absent) ImageNet checkpoint
    assert type(detector.backbone).__name__ == 'RepViT'
    assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in detector.backbone.modules())
    detector.eval()
    with torch.no_grad():
        feats = detector.backbone(torch.randn(1, 3, 64, 96))
    assert [f.shape[1] for f in feats] == list(cfg.model.neck.in_channels)
    assert [(64 // f.shape[2], 96 // f.shape[3]) for f in feats] == [(4, 4), (8, 8), (16, 16), (32, 32)]
    with torch.no_grad():
        pyramid = detector.neck(feats)
    assert len(pyramid) == 5 and all(p.shape[1] == width for p in pyramid)


@pytest.mark.parametrize('config', COCO_CFGS, ids=lambda p: p.stem)
def test_coco_config_has_authors_recipe(config):
    cfg = Config.fromfile(str(config))
    assert f'repvit-m{cfg.model.backbone.arch[1:].replace("_", ".")}_' in config.name
    assert cfg.optim_wrapper.optimizer == dict(type='AdamW', lr=2e-4, weight_decay=0.05)
    assert cfg.optim_wrapper.get('clip_grad') is None
    assert cfg.train_cfg.max_epochs == 12
    warmup, steps = cfg.param_scheduler
    # the authors' 500-iteration warm-up from 1e-6 (every iteration's rate: tests/test_recipe.py)
    assert (warmup.type, warmup.by_epoch, warmup.start_factor, warmup.end) == ('LinearLR', False, 1e-6, 501)
    assert cfg.randomness.seed == 0
    assert (steps.type, list(steps.milestones)) == ('MultiStepLR', [8, 11])
    assert cfg.train_dataloader.batch_size == 2 and cfg.auto_scale_lr.base_batch_size == 16
    resize = [t for t in cfg.train_dataloader.dataset.pipeline if t.type == 'Resize'][0]
    assert tuple(resize.scale) == (1333, 800) and resize.keep_ratio
    assert any(t.type == 'RandomFlip' for t in cfg.train_dataloader.dataset.pipeline)
    assert cfg.val_evaluator.type == 'CocoMetric' and list(cfg.val_evaluator.metric) == ['bbox', 'segm']
    assert cfg.model.roi_head.bbox_head.num_classes == 80


def test_one_coco_config_per_arch():
    assert {p.name for p in COCO_CFGS} == {
        f'mask-rcnn_repvit-m{arch[1:].replace("_", ".")}_fpn_1x_coco.py' for arch in STAGE_WIDTHS
    }


# ----------------------------------------------------------------------------------------- pretrained init
def test_backbone_init_from_classifier_checkpoint(cls_checkpoint):
    """init_cfg Pretrained with prefix 'backbone.': every backbone tensor comes from the classifier, no key
    is missing on either side (mmengine would only warn about it)."""
    from repvit_mm.utils import safe_torch_load

    detector = _build(_shapes_cfg(cls_checkpoint).model)
    before = {k: v.clone() for k, v in detector.backbone.state_dict().items()}
    detector.init_weights()

    source = safe_torch_load(str(cls_checkpoint), map_location='cpu')['state_dict']
    expected = {k[len('backbone.') :]: v for k, v in source.items() if k.startswith('backbone.')}
    loaded = detector.backbone.state_dict()
    assert set(loaded) == set(expected)
    for key, value in loaded.items():
        torch.testing.assert_close(value, expected[key], rtol=0, atol=0, msg=key)
    changed = [k for k in loaded if k.endswith('.weight') and not torch.equal(before[k], loaded[k])]
    assert len(changed) > 0.9 * len([k for k in loaded if k.endswith('.weight')])


def test_missing_init_checkpoint_names_it(tmp_path):
    detector = _build(_shapes_cfg(tmp_path / 'no-such-classifier.pth').model)
    with pytest.raises(FileNotFoundError, match='no-such-classifier.pth'):
        detector.init_weights()


# ----------------------------------------------------------------------------------------- SyncBN on CPU
def test_syncbn_detector_trains_in_cpu_ddp(shapes_root):
    """SyncBN cannot run on CPU tensors in a process group; the CPU DDP wrapper reverts it to BN and a
    training step of the SyncBN config (with BN in training mode) runs."""
    import torch.distributed as dist
    from mmengine.optim import OptimWrapper

    from repvit_mm.engine import CPUDistributedDataParallel

    cfg = _shapes_cfg()
    cfg.model.backbone.norm_eval = False  # BN in training mode: the case that needs synchronisation
    detector = _build(cfg.model)
    data = _batch(cfg, shapes_root / 'coco', 'train', 2)
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{_free_port()}', rank=0, world_size=1)
    try:
        detector.train()
        with pytest.raises(ValueError, match='SyncBatchNorm expected input tensor to be on GPU'):
            detector(**detector.data_preprocessor(data, True), mode='loss')
        wrapped = CPUDistributedDataParallel(detector)
        assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in wrapped.module.modules())
        optim = OptimWrapper(torch.optim.SGD(wrapped.parameters(), lr=1e-3))
        losses = wrapped.train_step(data, optim)
    finally:
        dist.destroy_process_group()
    assert {'loss_rpn_cls', 'loss_cls', 'loss_mask'} <= set(losses)
    assert all(torch.isfinite(v).all() for v in losses.values())


def test_roi_features_in_training_match_inference(shapes_root):
    """The RoI head sees the same features while training as in inference: with its BN frozen
    (``norm_eval``), the detector's RoIAlign features of the same boxes agree in both modes. (The backbone
    computes channels-last while training on a CPU; mmcv's RoIAlign reads channels-last input as NCHW, so
    features passed on in that layout were scrambled and the RoI heads could not learn.)"""
    cfg = _shapes_cfg()
    torch.manual_seed(0)
    detector = _build(cfg.model)
    randomize_bn_(detector, seed=5)
    data = detector.data_preprocessor(_batch(cfg, shapes_root / 'coco', 'train', 2), True)
    rois = torch.cat(
        [
            torch.cat([torch.full((len(s.gt_instances), 1), float(i)), s.gt_instances.bboxes], 1)
            for i, s in enumerate(data['data_samples'])
        ]
    )
    extractor = detector.roi_head.bbox_roi_extractor
    features = {}
    for mode in (True, False):
        detector.train(mode)
        with torch.no_grad():
            feats = detector.extract_feat(data['inputs'])
            assert all(f.is_contiguous() for f in feats)
            features[mode] = extractor(feats[: extractor.num_inputs], rois)
    assert len(rois) > 0 and features[True].abs().sum() > 0
    torch.testing.assert_close(features[True], features[False], rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------------------- fusion
def test_fused_detector_gives_same_detections(shapes_root):
    """switch_to_deploy folds the backbone's BN and RepVGG branches; in eval mode the detections (boxes,
    scores, labels, masks) stay the same up to float rounding."""
    from repvit_mm.models.reparam import switch_to_deploy

    cfg = _shapes_cfg()
    torch.manual_seed(0)
    detector = _build(cfg.model)
    randomize_bn_(detector, seed=3)
    detector.eval()
    data = _batch(cfg, shapes_root / 'coco', 'val', 2)
    with torch.no_grad():
        data = detector.data_preprocessor(data, False)
        reference = detector.predict(data['inputs'], copy.deepcopy(data['data_samples']))
        feats_ref = detector.extract_feat(data['inputs'])
        switch_to_deploy(detector)
        fused = detector.predict(data['inputs'], copy.deepcopy(data['data_samples']))
        feats_fused = detector.extract_feat(data['inputs'])
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in detector.backbone.modules())
    for a, b in zip(feats_ref, feats_fused, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-4)
    for ref, out in zip(reference, fused, strict=True):
        ref, out = ref.pred_instances, out.pred_instances
        assert len(ref) > 0 and len(ref) == len(out)
        assert torch.equal(out.labels, ref.labels)
        torch.testing.assert_close(out.bboxes, ref.bboxes, rtol=0, atol=1e-3)  # pixels
        torch.testing.assert_close(out.scores, ref.scores, rtol=0, atol=1e-5)
        # a mask pixel whose probability sits at the 0.5 threshold may flip
        assert (out.masks != ref.masks).float().mean() < 1e-3


# ----------------------------------------------------------------------------------------- tools end to end
def shapes_options(coco: Path, checkpoint: Path | None = None, max_iters: int = 2) -> list[str]:
    """``--cfg-options`` pointing the Shapes detector at the test's data, with a tiny schedule."""
    ann = coco / 'annotations' / 'instances_val2017.json'
    options = [f'{split}_dataloader.dataset.data_root={coco}' for split in ('train', 'val', 'test')]
    options += [
        f'val_evaluator.ann_file={ann}',
        f'test_evaluator.ann_file={ann}',
        'train_dataloader.batch_size=2',
        f'train_cfg.max_iters={max_iters}',
        f'train_cfg.val_interval={max_iters}',
        f'default_hooks.checkpoint.interval={max_iters}',
        'default_hooks.checkpoint.save_best=None',
        'default_hooks.logger.interval=1',
    ]
    if checkpoint is not None:
        options.append(f'model.backbone.init_cfg.checkpoint={checkpoint}')
    return ['--cfg-options', *options]


@pytest.fixture(scope='module')
def trained(shapes_root, cls_checkpoint, tmp_path_factory) -> Path:
    """The Shapes Mask R-CNN (SyncBN config) trained 2 iterations by tools/train.py in one CPU process,
    its backbone initialised from the classifier checkpoint."""
    work = tmp_path_factory.mktemp('det-train')
    proc = run_tool('train.py', SHAPES_CFG, '--work-dir', work, *shapes_options(shapes_root / 'coco', cls_checkpoint))
    log = proc.stdout + proc.stderr
    assert f'load backbone. in model from: {cls_checkpoint}' in log
    # a single process: the Runner turns the config's SyncBN into BN
    assert 'SyncBatchNorm (SyncBN) layers in the model will be automatically reverted' in log
    assert re.search(r'Iter\(train\) \[2/2\].*loss_mask', log), log[-3000:]
    assert (work / 'iter_2.pth').is_file()
    return work


@pytest.mark.slow
def test_train_then_test_reports_coco_bbox_and_segm_ap(trained, shapes_root):
    """tools/test.py evaluates the trained detector with pycocotools (bbox and segm), and --deploy (the
    BN-fused detector) gives the same detections."""
    outs = {}
    for mode, extra in (('plain', []), ('deploy', ['--deploy'])):
        outs[mode] = trained / f'{mode}.pkl'
        proc = run_tool(
            'test.py',
            SHAPES_CFG,
            trained / 'iter_2.pth',
            '--work-dir',
            trained,
            *extra,
            '--out',
            outs[mode],
            *shapes_options(shapes_root / 'coco')[:6],
        )
        metrics = _metrics(proc)
        for kind in ('bbox', 'segm'):
            for name in ('mAP', 'mAP_50', 'mAP_75', 'mAP_s', 'mAP_m'):
                assert 0.0 <= metrics[f'coco/{kind}_{name}'] <= 1.0
        # pycocotools' own summary table was printed for both kinds
        assert proc.stdout.count(COCO_SUMMARY_LINE) == 2
    assert 'model reparameterized for deployment' in proc.stdout + proc.stderr

    with open(outs['plain'], 'rb') as f:
        plain = pickle.load(f)
    with open(outs['deploy'], 'rb') as f:
        deploy = pickle.load(f)
    assert len(plain) == len(deploy) == 16  # every val image
    for ref, out in zip(plain, deploy, strict=True):
        ref, out = ref['pred_instances'], out['pred_instances']
        assert torch.equal(ref['labels'], out['labels'])
        torch.testing.assert_close(out['bboxes'], ref['bboxes'], rtol=0, atol=1e-2)  # pixels
        torch.testing.assert_close(out['scores'], ref['scores'], rtol=0, atol=1e-4)


# ----------------------------------------------------------------------------------------- bad input
@pytest.fixture()
def coco_copy(shapes_root, tmp_path) -> Path:
    target = tmp_path / 'coco'
    shutil.copytree(shapes_root / 'coco', target)
    return target


def _train_fails(coco: Path, checkpoint: Path, work: Path, *fragments: str) -> None:
    work.mkdir()
    proc = run_tool('train.py', SHAPES_CFG, '--work-dir', work, *shapes_options(coco, checkpoint), check=False)
    assert_one_line_error(proc, *fragments)
    assert not any(work.iterdir())  # failed before the Runner wrote anything


def test_missing_annotation_file_is_one_line(coco_copy, cls_checkpoint, tmp_path):
    ann = coco_copy / 'annotations' / 'instances_train2017.json'
    ann.unlink()
    _train_fails(coco_copy, cls_checkpoint, tmp_path / 'work', 'not found', str(ann))


def test_malformed_annotation_file_is_one_line(coco_copy, cls_checkpoint, tmp_path):
    ann = coco_copy / 'annotations' / 'instances_train2017.json'
    ann.write_text('{"images": [')
    _train_fails(coco_copy, cls_checkpoint, tmp_path / 'work', str(ann), 'not valid JSON')


def test_missing_image_is_one_line(coco_copy, cls_checkpoint, tmp_path):
    image = sorted((coco_copy / 'val2017').iterdir())[3]
    image.unlink()
    _train_fails(coco_copy, cls_checkpoint, tmp_path / 'work', 'not found', str(image))


def _dataset_cfg(coco: Path, split: str = 'train') -> dict:
    test_mode = split != 'train'
    return dict(
        type='CocoDataset',
        data_root=str(coco),
        ann_file=f'annotations/instances_{split}2017.json',
        data_prefix=dict(img=f'{split}2017/'),
        test_mode=test_mode,
        metainfo=dict(classes=('circle', 'square', 'triangle')),  # as the Shapes config (default: COCO's 80)
    )


@pytest.mark.parametrize(
    'content, fragment',
    [
        ('[1, 2]', 'top level is a list'),
        ('{"images": [], "categories": []}', "missing key(s) 'annotations'"),
        ('{"images": {}, "annotations": [], "categories": []}', "'images' is a dict, expected a list"),
        ('{"images": [{"id": 1}], "annotations": [], "categories": []}', "images[0] has no 'file_name'"),
    ],
)
def test_malformed_coco_structure_named(coco_copy, content, fragment):
    from repvit_mm.detection import check_coco_dataset
    from repvit_mm.utils import UserInputError

    ann = coco_copy / 'annotations' / 'instances_train2017.json'
    ann.write_text(content)
    with pytest.raises(UserInputError) as err:
        check_coco_dataset(_dataset_cfg(coco_copy))
    assert str(ann) in str(err.value) and fragment in str(err.value)


def test_coco_check_passes_good_data_and_image_info_files(coco_copy):
    """The real Shapes files pass; a test-mode image-info file (like COCO test-dev) needs no annotations."""
    from repvit_mm.detection import check_coco_dataset

    check_coco_dataset(_dataset_cfg(coco_copy, 'train'))
    check_coco_dataset(_dataset_cfg(coco_copy, 'val'))
    ann = coco_copy / 'annotations' / 'instances_val2017.json'
    doc = json.loads(ann.read_text())
    del doc['annotations']
    ann.write_text(json.dumps(doc))
    check_coco_dataset(_dataset_cfg(coco_copy, 'val'))
