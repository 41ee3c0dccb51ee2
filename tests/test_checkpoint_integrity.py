"""Checkpoint integrity: one strict loading path for every route (tools, load_from, --resume, init_cfg, the
upstream APIs), weights-only loading on every scheme, crash-proof saves, and the authors' COCO / ADE20K
release layouts."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from helpers import CONFIGS, ROOT, assert_one_line_error, randomize_bn_, run_tool, tool_env
from test_convert import timm_to_official

CLS_CFG = CONFIGS / 'classification' / 'repvit-m0.9_shapes-64px.py'
DET_CFG = CONFIGS / 'detection' / 'mask-rcnn_repvit-m0.9_fpn_shapes.py'
SEG_CFG = CONFIGS / 'segmentation' / 'fpn_repvit-m0.9_shapes.py'
SHAPES_CLASSES = ('circle', 'square', 'triangle')


# Its module- and session-scoped fixtures (trained models, written files) are made once: the module runs on one
# pytest-xdist worker (`make test` distributes with --dist loadgroup).
pytestmark = pytest.mark.xdist_group('checkpoint_integrity')


def load_cfg(path: Path, **options):
    from repvit_mm.apis import load_config

    return load_config(str(path), options or None)


def cls_options(shapes_root: Path) -> dict:
    data = str(shapes_root / 'imagenet')
    return {f'{split}_dataloader.dataset.data_root': data for split in ('train', 'val', 'test')}


def build(cfg_path: Path, **options):
    from repvit_mm.models.build import build_model

    return build_model(load_cfg(cfg_path, **options))


@pytest.fixture(scope='module')
def cls_files(tmp_path_factory) -> dict[str, Path]:
    """Shapes classifiers (3 classes, RepViT-M0.9) in our layout, fused, as a 5-class and an M1.5 one."""
    from repvit_mm.models import switch_to_deploy

    root = tmp_path_factory.mktemp('cls-files')
    torch.manual_seed(0)
    model = randomize_bn_(build(CLS_CFG))
    files = {
        'ours': root / 'ours.pth',
        'fused': root / 'fused.pth',
        'five': root / 'five.pth',
        'm1_5': root / 'm1_5.pth',
    }
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, files['ours'])
    torch.save({'state_dict': switch_to_deploy(model).state_dict(), 'meta': {'deploy': True}}, files['fused'])
    five = build(CLS_CFG, **{'model.head.num_classes': 5})
    torch.save({'state_dict': five.state_dict()}, files['five'])
    m1_5 = build(CLS_CFG, **{'model.backbone.arch': 'm1_5', 'model.head.in_channels': 512})
    torch.save({'state_dict': m1_5.state_dict()}, files['m1_5'])
    return files


# ----------------------------------------------------------------------------------------- safe schemes
class _Marker:
    """Creates a file when unpickled: what a malicious checkpoint would do."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, 'w'))


def test_every_mmengine_scheme_loads_weights_only():
    from mmengine.runner import CheckpointLoader

    import repvit_mm  # noqa: F401

    upstream = {
        '',
        'http://',
        'https://',
        'pavi://',
        r'(\S+\:)?s3://',
        r'(\S+\:)?petrel://',
        'modelzoo://',
        'torchvision://',
        'open-mmlab://',
        'openmmlab://',
        'mmcls://',
    }
    assert upstream <= set(CheckpointLoader._schemes)
    for prefix, loader in CheckpointLoader._schemes.items():  # mmengine's own loaders all replaced
        assert loader.__name__.startswith('load_from_safe_'), (prefix, loader)


def _prefill_hub(torch_home: Path, name: str, marker: Path) -> None:
    cache = torch_home / 'hub' / 'checkpoints'
    cache.mkdir(parents=True, exist_ok=True)
    torch.save({'state_dict': {'w': torch.zeros(1)}, 'payload': _Marker(marker)}, cache / name)


def test_malicious_file_through_http_and_torchvision_schemes(tmp_path, monkeypatch):
    """A file in torch.hub's cache (as if downloaded) that runs code when unpickled: refused by every route,
    nothing runs, nothing is downloaded."""
    from mmengine.runner import load_checkpoint
    from mmengine.runner.checkpoint import get_torchvision_models

    from repvit_mm.models import RepViT
    from repvit_mm.utils import UnsafeCheckpointError

    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    marker = tmp_path / 'pwned'
    _prefill_hub(tmp_path / 'torch', 'evil.pth', marker)
    resnet = Path(get_torchvision_models()['resnet18']).name
    _prefill_hub(tmp_path / 'torch', resnet, marker)

    with pytest.raises(UnsafeCheckpointError, match=r"evil\.pth.*refused to load: it pickles '[\w.]*open'"):
        load_checkpoint(torch.nn.Linear(2, 2), 'https://example.invalid/models/evil.pth')
    with pytest.raises(UnsafeCheckpointError, match='refused to load'):
        load_checkpoint(torch.nn.Linear(2, 2), 'torchvision://resnet18')
    backbone = RepViT(
        'm0_9', init_cfg=dict(type='Pretrained', checkpoint='https://example.invalid/evil.pth', prefix='backbone.')
    )
    with pytest.raises(UnsafeCheckpointError, match='refused to load'):
        backbone.init_weights()
    assert not marker.exists()


@pytest.mark.slow
def test_malicious_url_given_to_tools_test_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    marker = tmp_path / 'pwned'
    _prefill_hub(tmp_path / 'torch', 'evil.pth', marker)
    proc = run_tool(
        'test.py', CLS_CFG, 'https://example.invalid/models/evil.pth', '--work-dir', tmp_path / 'w', check=False
    )
    assert_one_line_error(proc, 'https://example.invalid/models/evil.pth', 'refused to load')
    assert not marker.exists() and not (tmp_path / 'w').exists()


class _Bytes:
    def __reduce__(self):
        return (bytes, (1 << 20,))


def test_empty_numpy_arrays_load_and_bytes_stays_narrow(tmp_path):
    """An empty HistoryBuffer (its empty arrays pickle ``builtins.bytes()``) loads; ``bytes(n)`` does not."""
    import numpy as np
    from mmengine.logging import HistoryBuffer
    from mmengine.runner import CheckpointLoader

    from repvit_mm.utils import UnsafeCheckpointError

    path = tmp_path / 'hub.pth'
    torch.save(
        {
            'message_hub': {'log_scalars': {'val/loss': HistoryBuffer()}},
            'meta': {'empty': np.zeros((0, 3), dtype=np.float32)},
        },
        path,
    )
    loaded = CheckpointLoader.load_checkpoint(str(path), map_location='cpu')
    assert loaded['message_hub']['log_scalars']['val/loss'].data[0].size == 0
    assert loaded['meta']['empty'].shape == (0, 3)
    torch.save({'x': _Bytes()}, tmp_path / 'bytes.pth')
    with pytest.raises(UnsafeCheckpointError, match=r'builtins\.bytes'):
        CheckpointLoader.load_checkpoint(str(tmp_path / 'bytes.pth'), map_location='cpu')


# ----------------------------------------------------------------------------------------- strict
def test_wrong_arch_is_refused_by_every_route(cls_files, shapes_root, tmp_path):
    from mmengine.runner import load_checkpoint
    from mmpretrain.apis import ImageClassificationInferencer

    from repvit_mm.apis import prepare_test_cfg, prepare_train_cfg
    from repvit_mm.deploy import load_model
    from repvit_mm.models.checkpoints import CheckpointMismatchError

    wrong = str(cls_files['m1_5'])
    expected = ("fits arch 'm1_5'", 'keys with wrong shapes', wrong)

    def refused(call):
        with pytest.raises(CheckpointMismatchError) as info:
            call()
        for fragment in expected:
            assert fragment in str(info.value), str(info.value)

    work = tmp_path / 'w'
    refused(lambda: prepare_test_cfg(load_cfg(CLS_CFG, **cls_options(shapes_root)), wrong, work_dir=str(work)))
    refused(
        lambda: prepare_train_cfg(load_cfg(CLS_CFG, load_from=wrong, **cls_options(shapes_root)), work_dir=str(work))
    )
    init = {'model.backbone.init_cfg': dict(type='Pretrained', checkpoint=wrong, prefix='backbone.')}
    refused(lambda: prepare_train_cfg(load_cfg(CLS_CFG, **init, **cls_options(shapes_root)), work_dir=str(work)))
    assert not work.exists()  # all before the Runner made its work dir
    refused(lambda: load_checkpoint(build(CLS_CFG), wrong))
    refused(lambda: load_model(CLS_CFG, wrong))
    refused(lambda: ImageClassificationInferencer(model=str(CLS_CFG), pretrained=wrong, device='cpu'))


@pytest.mark.slow
def test_tools_refuse_wrong_checkpoints_with_one_line(cls_files, shapes_root, tmp_path):
    options = ['--cfg-options', *(f'{k}={v}' for k, v in cls_options(shapes_root).items())]
    proc = run_tool('test.py', CLS_CFG, cls_files['m1_5'], '--work-dir', tmp_path / 'w', *options, check=False)
    assert_one_line_error(proc, str(cls_files['m1_5']), "fits arch 'm1_5'")
    proc = run_tool(
        'train.py', CLS_CFG, '--resume', cls_files['ours'], '--work-dir', tmp_path / 'w', *options, check=False
    )
    assert_one_line_error(proc, 'not a training checkpoint', f'load_from={cls_files["ours"]}')
    assert not (tmp_path / 'w').exists()


def test_fused_checkpoint_is_evaluated_as_the_fused_model(cls_files, shapes_root, tmp_path):
    """tools/test.py recognises a fused checkpoint and evaluates the fused model (with or without
    --deploy); training from it is refused."""
    from repvit_mm.apis import prepare_test_cfg, prepare_train_cfg, test
    from repvit_mm.models.checkpoints import CheckpointMismatchError

    metrics = {}
    for name, deploy in (('ours', False), ('fused', False), ('fused', True)):
        cfg = prepare_test_cfg(
            load_cfg(CLS_CFG, **cls_options(shapes_root)),
            str(cls_files[name]),
            work_dir=str(tmp_path / f'{name}-{deploy}'),
            deploy=deploy,
        )
        hooks = [h for h in cfg.get('custom_hooks', []) if h['type'] == 'ReparameterizeHook']
        assert [h['before_load'] for h in hooks] == ([True] if name == 'fused' else [])
        metrics[name, deploy] = test(cfg)['accuracy/top1']
    assert metrics['ours', False] == metrics['fused', False] == metrics['fused', True]
    with pytest.raises(CheckpointMismatchError, match='fused'):
        prepare_train_cfg(
            load_cfg(CLS_CFG, load_from=str(cls_files['fused']), **cls_options(shapes_root)),
            work_dir=str(tmp_path / 'train'),
        )


def test_classifier_checkpoint_is_refused_by_a_detector(cls_files):
    from repvit_mm.models.checkpoints import CheckpointMismatchError, fit_checkpoint, read_checkpoint

    with pytest.raises(CheckpointMismatchError, match=r'missing keys \[neck\.') as info:
        fit_checkpoint(build(DET_CFG), read_checkpoint(str(cls_files['ours'])))
    assert 'unexpected keys [head.head.bn.weight' in str(info.value)


def test_distillation_head_mismatch_names_the_config_to_use(cls_files):
    from repvit_mm.models.checkpoints import CheckpointMismatchError, fit_checkpoint, read_checkpoint

    distill = build(CLS_CFG, **{'model.head.distillation': True})
    with pytest.raises(CheckpointMismatchError, match='has no distillation head'):
        fit_checkpoint(distill, read_checkpoint(str(cls_files['ours'])))


class _Collect(logging.Handler):
    def __init__(self, records: list) -> None:
        super().__init__()
        self.records = records

    def emit(self, record) -> None:
        self.records.append(record.getMessage())


def test_finetuning_to_other_classes_reinitialises_only_the_named_heads(cls_files, shapes_root, tmp_path):
    from mmengine.logging import MMLogger
    from mmengine.runner import load_checkpoint

    from repvit_mm.apis import prepare_train_cfg
    from repvit_mm.models.checkpoints import CheckpointMismatchError, allow_head_reinit, fit_checkpoint, read_checkpoint

    model = build(CLS_CFG, **{'model.head.num_classes': 5})
    ckpt = read_checkpoint(str(cls_files['ours']))
    with pytest.raises(CheckpointMismatchError, match='head.head.linear.weight'):
        fit_checkpoint(model, ckpt)  # testing / resuming: strict
    assert fit_checkpoint(model, ckpt, finetune=True).reinitialised == ['head.head.linear']
    head_before = model.head.head.linear.weight.clone()
    logger = MMLogger.get_instance('reinit-test')
    records = []
    logger.addHandler(_Collect(records))
    with allow_head_reinit():  # as tools/train.py loads load_from
        load_checkpoint(model, str(cls_files['ours']), logger=logger)
    assert [
        r
        for r in records
        if 'heads re-initialised for another number of classes (shapes differ): head.head.linear' in r
    ] == [records[-1]]
    assert torch.equal(model.head.head.linear.weight, head_before)
    saved = torch.load(cls_files['ours'], weights_only=True)['state_dict']
    assert torch.equal(model.backbone.stem.conv1.conv.weight, saved['backbone.stem.conv1.conv.weight'])
    # load_from with another number of classes passes the tool's check; other mismatches still fail
    prepare_train_cfg(
        load_cfg(CLS_CFG, load_from=str(cls_files['five']), **cls_options(shapes_root)), work_dir=str(tmp_path / 'w')
    )


def test_resume_checks_the_file_it_continues_from(cls_files, shapes_root, tmp_path):
    from repvit_mm.apis import prepare_train_cfg
    from repvit_mm.utils import UserInputError

    with pytest.raises(UserInputError, match='not a training checkpoint'):
        prepare_train_cfg(
            load_cfg(CLS_CFG, **cls_options(shapes_root)), work_dir=str(tmp_path / 'w'), resume=str(cls_files['ours'])
        )
    work = tmp_path / 'auto'
    work.mkdir()
    (work / 'last_checkpoint').write_text(str(work / 'iter_9.pth'))
    with pytest.raises(UserInputError, match='iter_9.pth, which does not exist'):
        prepare_train_cfg(load_cfg(CLS_CFG, **cls_options(shapes_root)), work_dir=str(work), resume='auto')


def test_authors_release_as_init_cfg_of_a_bare_backbone(tmp_path):
    """init_cfg=Pretrained with prefix='backbone.' reads the authors' ImageNet layout too."""
    from repvit_mm.models import RepViT, convert_checkpoint

    torch.manual_seed(0)
    net = randomize_bn_(timm.create_model('repvit_m0_9', pretrained=False))
    path = tmp_path / 'repvit_m0_9_distill_300e.pth'
    torch.save({'model': timm_to_official(net)}, path)
    backbone = RepViT('m0_9', init_cfg=dict(type='Pretrained', checkpoint=str(path), prefix='backbone.'))
    backbone.init_weights()
    expected = convert_checkpoint(net.state_dict(), 'm0_9', format='timm')
    for key, value in backbone.state_dict().items():
        assert torch.equal(value, expected[f'backbone.{key}']), key


# ----------------------------------------------------------------------------------------- authors' releases
def _authors_release(
    tmp_path: Path, cfg_path: Path, name: str, meta: dict, arch: str = 'm0_9', **options
) -> tuple[Path, dict]:
    """A file in the layout of the authors' COCO / ADE20K releases (mmdet 2.28 / mmseg 0.30): the backbone
    as ``backbone.features.<n>`` (written from timm's module tree), the neck and heads under the names
    mmdet 2.28 / mmseg 0.30 give them (the same as mmdet 3.3 / mmseg 1.2), ``meta`` with ``CLASSES``.
    Returns the file and our layout of the same weights."""
    from repvit_mm.models import convert_checkpoint

    torch.manual_seed(0)
    net = randomize_bn_(timm.create_model(f'repvit_{arch}', pretrained=False, num_classes=0))
    heads = randomize_bn_(build(cfg_path, **options)).state_dict()
    authors = {f'backbone.{k}': v for k, v in timm_to_official(net).items()}
    authors.update((k, v) for k, v in heads.items() if not k.startswith('backbone.'))
    path = tmp_path / name
    torch.save({'meta': meta, 'state_dict': authors, 'optimizer': {'state': {}, 'param_groups': []}}, path)
    ours = dict(convert_checkpoint(net.state_dict(), arch, format='timm'))
    ours.update((k, v) for k, v in heads.items() if not k.startswith('backbone.'))
    return path, ours


def _outputs(model, x: torch.Tensor) -> list[torch.Tensor]:
    """A segmentor's logits; a detector's FPN features and RPN outputs (its RoI heads need proposals)."""
    model.eval()
    with torch.no_grad():
        if hasattr(model, 'roi_head'):
            feats = model.extract_feat(x)
            scores, deltas = model.rpn_head(feats)
            return [*feats, *scores, *deltas]
        return [model(x, mode='tensor')]


def _max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a, b, strict=True))


@pytest.mark.slow
@pytest.mark.parametrize('task', ['detection', 'segmentation'])
def test_authors_dense_releases_load_convert_and_match(task, tmp_path):
    from repvit_mm.deploy import load_model
    from repvit_mm.models.checkpoints import read_checkpoint

    if task == 'detection':
        cfg_path, name = DET_CFG, 'repvit_m0_9_coco.pth'
        meta = {'CLASSES': SHAPES_CLASSES, 'mmdet_version': '2.28.2', 'epoch': 12}
    else:
        cfg_path, name = SEG_CFG, 'repvit_m0_9_ade20k.pth'
        meta = {'CLASSES': ('background', *SHAPES_CLASSES), 'PALETTE': [[0, 0, 0]] * 4, 'iter': 40000}
    release, ours = _authors_release(tmp_path, cfg_path, name, meta)
    assert read_checkpoint(str(release)).layout == ('authors-coco' if task == 'detection' else 'authors-ade20k')

    direct = load_model(cfg_path, release)
    for key, value in direct.model.state_dict().items():
        if not key.endswith('num_batches_tracked'):
            assert torch.equal(value, ours[key]), key
    assert list(direct.model.dataset_meta['classes']) == list(meta['CLASSES'])

    converted = tmp_path / 'converted.pth'
    proc = run_tool('convert_checkpoint.py', release, converted, '--arch', 'm0_9')
    assert ('coco' if task == 'detection' else 'ade20k') in proc.stdout and task in proc.stdout
    saved = torch.load(converted, weights_only=True)
    assert saved['meta']['dataset_meta']['classes'] == tuple(meta['CLASSES'])
    via_file = load_model(cfg_path, converted)
    x = torch.randn(1, 3, 128, 128)
    assert _max_diff(_outputs(direct.model, x), _outputs(via_file.model, x)) < 1e-5

    # the upstream inference APIs take the release file as it is
    if task == 'detection':
        from mmdet.apis import init_detector

        upstream = init_detector(str(cfg_path), str(release), device='cpu')
    else:
        from mmseg.apis import init_model

        upstream = init_model(str(cfg_path), str(release), device='cpu')
    assert _max_diff(_outputs(upstream, x), _outputs(direct.model, x)) < 1e-5
    assert list(upstream.dataset_meta['classes']) == list(meta['CLASSES'])


def test_convert_checks_the_arch_of_a_dense_release(tmp_path):
    release, _ = _authors_release(tmp_path, DET_CFG, 'repvit_m0_9_coco.pth', {'CLASSES': SHAPES_CLASSES})
    proc = run_tool('convert_checkpoint.py', release, tmp_path / 'out.pth', '--arch', 'm1_1', check=False)
    assert_one_line_error(proc, "fits arch 'm0_9'", str(release))
    argv = (release, tmp_path / 'out.pth', '--arch', 'm0_9', '--format', 'ade20k')
    assert_one_line_error(run_tool('convert_checkpoint.py', *argv, check=False), 'not in the --format ade20k layout')
    assert not (tmp_path / 'out.pth').exists()


def test_coco_release_fine_tunes_to_other_classes(tmp_path):
    """The authors' 80-class COCO model as load_from of a 3-class config: box, mask heads re-initialised."""
    from repvit_mm.models.checkpoints import CheckpointMismatchError, fit_checkpoint, read_checkpoint

    coco = {'model.roi_head.bbox_head.num_classes': 80, 'model.roi_head.mask_head.num_classes': 80}
    release, _ = _authors_release(tmp_path, DET_CFG, 'repvit_m0_9_coco.pth', {'CLASSES': tuple('x' * 80)}, **coco)
    ckpt = read_checkpoint(str(release))
    model = build(DET_CFG)
    assert fit_checkpoint(model, ckpt, finetune=True).reinitialised == [
        'roi_head.bbox_head.fc_cls',
        'roi_head.bbox_head.fc_reg',
        'roi_head.mask_head.conv_logits',
    ]
    with pytest.raises(CheckpointMismatchError, match='roi_head.bbox_head.fc_cls.weight'):
        fit_checkpoint(model, ckpt)


@pytest.mark.slow
@pytest.mark.parametrize('task', ['detection', 'segmentation'])
def test_tools_test_evaluates_the_authors_dense_releases(task, shapes_root, tmp_path):
    if task == 'detection':
        coco = shapes_root / 'coco'
        ann = coco / 'annotations' / 'instances_val2017.json'
        release, _ = _authors_release(tmp_path, DET_CFG, 'repvit_m0_9_coco.pth', {'CLASSES': SHAPES_CLASSES})
        options = [f'test_dataloader.dataset.data_root={coco}', f'test_evaluator.ann_file={ann}']
        cfg_path, metric = DET_CFG, 'coco/bbox_mAP'
    else:
        release, _ = _authors_release(
            tmp_path, SEG_CFG, 'repvit_m0_9_ade20k.pth', {'CLASSES': ('background', *SHAPES_CLASSES)}
        )
        options = [f'test_dataloader.dataset.data_root={shapes_root / "ade20k"}']
        cfg_path, metric = SEG_CFG, 'mIoU'
    proc = run_tool('test.py', cfg_path, release, '--work-dir', tmp_path / 'w', '--cfg-options', *options)
    assert f'"{metric}"' in proc.stdout


# ----------------------------------------------------------------------------------------- crash-proof saves
_CRASH_DRIVER = """
import os, runpy, sys
from mmengine.fileio import LocalBackend

upstream_put = LocalBackend.put


def put(self, obj, filepath):  # the process dies half-way through writing iter_2's checkpoint
    if os.path.basename(str(filepath)).startswith('iter_2.pth'):
        with open(filepath, 'wb') as f:
            f.write(obj[:len(obj) // 2])
            f.flush()
            os.fsync(f.fileno())
        os._exit(137)
    return upstream_put(self, obj, filepath)


LocalBackend.put = put
sys.argv = sys.argv[1:]
sys.path[0] = os.path.dirname(sys.argv[0])  # as `python tools/train.py` has it
runpy.run_path(sys.argv[0], run_name='__main__')
"""


@pytest.mark.slow
def test_kill_during_a_save_keeps_the_last_complete_checkpoint(shapes_root, tmp_path):
    """max_keep_ckpts=1 and a crash in the middle of writing the next checkpoint: the previous one, and
    last_checkpoint naming it, survive; --resume continues from it; no partial *.pth ever exists."""
    from repvit_mm.models.checkpoints import read_checkpoint

    work = tmp_path / 'w'
    options = [
        '--cfg-options',
        *(f'{k}={v}' for k, v in cls_options(shapes_root).items()),
        'train_dataloader.batch_size=4',
        'train_cfg.max_iters=3',
        'train_cfg.val_interval=1',
        'default_hooks.checkpoint.interval=1',
        'default_hooks.checkpoint.max_keep_ckpts=1',
    ]
    driver = tmp_path / 'crash.py'
    driver.write_text(_CRASH_DRIVER)
    proc = subprocess.run(
        [
            sys.executable,
            str(driver),
            str(ROOT / 'tools' / 'train.py'),
            str(CLS_CFG),
            '--work-dir',
            str(work),
            *options,
        ],
        env=tool_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 137, proc.stderr[-3000:]

    checkpoints = sorted(p.name for p in work.glob('*.pth'))
    assert checkpoints == ['best_accuracy_top1_iter_1.pth', 'iter_1.pth'], checkpoints
    for path in work.glob('*.pth'):
        read_checkpoint(str(path))  # complete files only
    assert (work / 'last_checkpoint').read_text() == str(work / 'iter_1.pth')

    proc = run_tool('train.py', CLS_CFG, '--work-dir', work, '--resume', *options)
    log = proc.stdout + proc.stderr
    assert 'Auto resumed from the latest checkpoint' in log and 'resumed epoch: 0, iter: 1' in log
    assert sorted(p.name for p in work.glob('*.pth'))[-1] == 'iter_3.pth'
    assert not (work / 'iter_1.pth').exists() and not list(work.glob('*.partial'))
    assert read_checkpoint(str(work / 'iter_3.pth')).meta['iter'] == 3
    assert (work / 'last_checkpoint').read_text() == str(work / 'iter_3.pth')


def test_atomic_write_never_leaves_an_empty_pointer(tmp_path, monkeypatch):
    from repvit_mm.engine.checkpoint_hook import atomic_write_text

    pointer = tmp_path / 'last_checkpoint'
    atomic_write_text(str(pointer), 'iter_1.pth')

    def crash(*args):
        raise KeyboardInterrupt  # stands for a kill between writing and renaming

    monkeypatch.setattr(os, 'replace', crash)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(str(pointer), 'iter_2.pth')
    assert pointer.read_text() == 'iter_1.pth'
