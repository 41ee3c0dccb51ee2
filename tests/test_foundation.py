"""The installed stack, safe checkpoint loading, and the generic train/test tools."""

from __future__ import annotations

import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import CONFIGS, ROOT, assert_one_line_error, run_tool, tool_env

SHAPES_CFG = CONFIGS / 'classification' / 'repvit-m0.9_shapes-64px.py'


# Its module- and session-scoped fixtures (trained models, written files) are made once: the module runs on one
# pytest-xdist worker (`make test` distributes with --dist loadgroup).
pytestmark = pytest.mark.xdist_group('foundation')


def shapes_options(shapes_root: Path, max_iters: int, interval: int | None = None) -> list[str]:
    """``--cfg-options`` that point the Shapes classifier at the test's data and shrink its schedule."""
    interval = interval or max_iters
    data = shapes_root / 'imagenet'
    return [
        '--cfg-options',
        f'train_dataloader.dataset.data_root={data}',
        f'val_dataloader.dataset.data_root={data}',
        f'test_dataloader.dataset.data_root={data}',
        'train_dataloader.batch_size=8',
        f'train_cfg.max_iters={max_iters}',
        f'train_cfg.val_interval={interval}',
        f'default_hooks.checkpoint.interval={interval}',
        'default_hooks.logger.interval=1',
    ]


# ----------------------------------------------------------------------------------------- the stack
def test_stack_imports_with_pinned_versions():
    import mmcv
    import mmdet
    import mmengine
    import mmpretrain
    import mmseg
    import torchvision

    import repvit_mm

    assert torch.__version__.startswith('2.14.1')
    assert torchvision.__version__.startswith('0.29.1')
    assert (mmcv.__version__, mmengine.__version__) == ('2.1.0', '0.10.7')
    assert (mmdet.__version__, mmseg.__version__, mmpretrain.__version__) == ('3.3.0', '1.2.2', '1.2.0')
    assert repvit_mm.__version__


def test_mmcv_ops_run_on_cpu():
    """mmcv's RoIAlign and NMS as installed: compiled, or served from torchvision (docs/install.md)."""
    from mmcv.ops import RoIAlign, nms

    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.8, 0.7])
    dets, keep = nms(boxes, scores, iou_threshold=0.5)
    assert keep.tolist() == [0, 2]
    assert dets.shape == (2, 5)

    feats = torch.arange(64, dtype=torch.float32).reshape(1, 1, 8, 8)
    rois = torch.tensor([[0, 0, 0, 4, 4]], dtype=torch.float32)
    out = RoIAlign(output_size=2, spatial_scale=1.0, sampling_ratio=2, aligned=True)(feats, rois)
    assert out.shape == (1, 1, 2, 2)
    # bilinear sampling of a linear ramp: bin centres at (1, 1), (1, 3), (3, 1), (3, 3) minus the half-pixel
    expected = torch.tensor([[0.5 * 8 + 0.5, 0.5 * 8 + 2.5], [2.5 * 8 + 0.5, 2.5 * 8 + 2.5]])
    torch.testing.assert_close(out[0, 0], expected)


# ----------------------------------------------------------------------------------------- checkpoints
class _Payload:
    """Something that is neither a tensor nor on the allow-list."""

    def __reduce__(self):
        return (print, ('this must never run',))


def test_default_torch_load_stays_weights_only(tmp_path):
    import repvit_mm  # noqa: F401

    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'payload': _Payload()}, path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path)  # the global default is untouched


def test_foreign_global_refused_with_its_name(tmp_path, capsys):
    from mmengine.runner import CheckpointLoader

    from repvit_mm.utils import UnsafeCheckpointError

    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {'w': torch.ones(1)}, 'payload': _Payload()}, path)
    with pytest.raises(UnsafeCheckpointError, match=r"pickles 'builtins\.print'"):
        CheckpointLoader.load_checkpoint(str(path), map_location='cpu')
    assert 'this must never run' not in capsys.readouterr().out


class _AttributeGrab:
    """Reaches for an attribute through getattr, which HistoryBuffer pickles need for its own methods."""

    def __reduce__(self):
        import numpy as np

        return (getattr, (np.ndarray, 'tofile'))


def test_getattr_only_answers_history_buffer_statistics(tmp_path):
    from repvit_mm.utils import UnsafeCheckpointError, safe_torch_load

    torch.save({'x': _AttributeGrab()}, tmp_path / 'grab.pth')
    with pytest.raises(UnsafeCheckpointError, match=r"getattr\('ndarray', 'tofile'\)"):
        safe_torch_load(str(tmp_path / 'grab.pth'))


def test_numpy_and_history_buffer_round_trip(tmp_path):
    import numpy as np
    from mmengine.logging import HistoryBuffer, MessageHub
    from mmengine.runner import CheckpointLoader

    import repvit_mm  # noqa: F401

    hub = MessageHub.get_instance('safe-ckpt-test')
    hub.update_scalar('train/loss', 1.5)
    hub.update_info('iter', 7)
    ckpt = {'message_hub': hub.state_dict(), 'meta': {'arr': np.arange(3), 'f': np.float32(2.0), 'i': np.int64(4)}}
    torch.save(ckpt, tmp_path / 'ok.pth')
    loaded = CheckpointLoader.load_checkpoint(str(tmp_path / 'ok.pth'), map_location='cpu')
    assert isinstance(loaded['message_hub']['log_scalars']['train/loss'], HistoryBuffer)
    assert loaded['meta']['arr'].tolist() == [0, 1, 2] and loaded['meta']['i'] == 4


# ----------------------------------------------------------------------------------------- tools
@pytest.fixture(scope='module')
def trained(shapes_root, tmp_path_factory) -> Path:
    """A Shapes classifier trained 4 iterations by tools/train.py, checkpoints at 2 and 4."""
    work = tmp_path_factory.mktemp('train')
    options = [*shapes_options(shapes_root, 4, 2), 'default_hooks.checkpoint.max_keep_ckpts=2']
    proc = run_tool('train.py', SHAPES_CFG, '--work-dir', work, *options)
    assert f'work dir: {work}' in proc.stdout
    return work


def _ckpt_iter(path: Path) -> int:
    from repvit_mm.utils import safe_torch_load

    return safe_torch_load(str(path), map_location='cpu')['meta']['iter']


@pytest.mark.slow
def test_train_writes_runner_checkpoints(trained):
    assert _ckpt_iter(trained / 'iter_4.pth') == 4
    assert (trained / 'last_checkpoint').read_text().strip().endswith('iter_4.pth')


@pytest.mark.slow
def test_resume_continues_from_checkpoint_iteration(trained, shapes_root, tmp_path):
    work = tmp_path / 'resumed'
    work.mkdir()
    shutil.copy(trained / 'iter_2.pth', work / 'iter_2.pth')
    proc = run_tool(
        'train.py', SHAPES_CFG, '--work-dir', work, '--resume', work / 'iter_2.pth', *shapes_options(shapes_root, 6, 2)
    )
    log = proc.stdout + proc.stderr
    assert 'resumed epoch: 0, iter: 2' in log
    # the first iteration logged after resuming is iteration 3, not 1
    logged = [int(m) for m in re.findall(r'Iter\(train\) \[\s*(\d+)/6\]', log)]
    assert logged and logged[0] == 3 and logged[-1] == 6, logged
    assert _ckpt_iter(work / 'iter_6.pth') == 6


@pytest.mark.slow
def test_test_tool_reports_accuracy(trained, shapes_root):
    proc = run_tool(
        'test.py', SHAPES_CFG, trained / 'iter_4.pth', '--work-dir', trained, *shapes_options(shapes_root, 4)[:4]
    )
    top1 = float(re.search(r'"accuracy/top1": ([\d.]+)', proc.stdout).group(1))
    assert 0.0 <= top1 <= 100.0


@pytest.mark.slow
def test_test_tool_deploy_gives_same_accuracy(trained, shapes_root):
    metrics = []
    for extra in ([], ['--deploy']):
        proc = run_tool(
            'test.py',
            SHAPES_CFG,
            trained / 'iter_4.pth',
            '--work-dir',
            trained,
            *extra,
            *shapes_options(shapes_root, 4)[:4],
        )
        metrics.append(re.search(r'metrics: (.*)', proc.stdout).group(1))
    assert metrics[0] == metrics[1]


@pytest.mark.slow
def test_two_cpu_processes_train_with_gloo(shapes_root, tmp_path):
    work = tmp_path / 'ddp'
    launcher = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2', '--master_port=29531']
    # torchrun starts its own interpreters (a forked tool run cannot be launched by it)
    proc = subprocess.run(
        [*launcher, str(ROOT / 'tools' / 'train.py'), SHAPES_CFG, '--launcher', 'pytorch', '--work-dir', work]
        + [str(a) for a in shapes_options(shapes_root, 2)],
        cwd=ROOT,
        env=tool_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-6000:]
    log = proc.stdout + proc.stderr
    assert 'Distributed training: True' in log and 'CPUDistributedDataParallel' in log, log[-3000:]
    assert proc.stdout.count(f'work dir: {work}') == 2  # both ranks finished training
    assert _ckpt_iter(work / 'iter_2.pth') == 2


# ----------------------------------------------------------------------------------------- bad input
def test_missing_config_is_one_line(tmp_path):
    proc = run_tool('train.py', tmp_path / 'nope.py', check=False)
    assert_one_line_error(proc, 'config file not found', 'nope.py')


def test_unknown_cfg_option_is_one_line(tmp_path):
    proc = run_tool(
        'train.py', SHAPES_CFG, '--work-dir', tmp_path, '--cfg-options', 'model.bakbone.arch=m1_1', check=False
    )
    assert_one_line_error(proc, 'model.bakbone.arch', "takes no 'bakbone'", "did you mean 'backbone'")
    assert not any(tmp_path.iterdir())


def test_cfg_option_new_argument_of_built_object_is_accepted():
    from mmengine.config import Config

    from repvit_mm.utils.config import check_cfg_options

    cfg = Config.fromfile(str(SHAPES_CFG))
    check_cfg_options(
        cfg, {'model.backbone.with_cp': True, 'train_cfg.max_iters': 3, 'train_dataloader.dataset.pipeline.1.scale': 32}
    )
    with pytest.raises(ValueError, match='not an index'):
        check_cfg_options(cfg, {'train_dataloader.dataset.pipeline.9.scale': 32})


def test_unreadable_checkpoint_is_one_line_and_overwrites_nothing(tmp_path):
    bad = tmp_path / 'broken.pth'
    bad.write_bytes(b'not a checkpoint')
    work = tmp_path / 'work'
    work.mkdir()
    (work / 'keep.txt').write_text('precious')
    # a fresh interpreter: no import-time noise (e.g. pkg_resources' notice) before the error line either
    proc = subprocess.run(
        [sys.executable, str(ROOT / 'tools' / 'test.py'), SHAPES_CFG, bad, '--work-dir', work],
        cwd=ROOT,
        env=tool_env(),
        capture_output=True,
        text=True,
    )
    assert_one_line_error(proc, 'broken.pth')
    assert sorted(p.name for p in work.iterdir()) == ['keep.txt']
    assert (work / 'keep.txt').read_text() == 'precious'

    proc = run_tool('train.py', SHAPES_CFG, '--work-dir', work, '--resume', tmp_path / 'missing.pth', check=False)
    assert_one_line_error(proc, 'checkpoint not found', 'missing.pth')
    assert sorted(p.name for p in work.iterdir()) == ['keep.txt']


def test_checkpoint_with_foreign_object_refused_by_test_tool(tmp_path):
    evil = tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'payload': _Payload()}, evil)
    proc = run_tool('test.py', SHAPES_CFG, evil, '--work-dir', tmp_path / 'w', check=False)
    assert_one_line_error(proc, 'evil.pth', 'builtins.print')
    assert 'this must never run' not in proc.stdout


def test_missing_pretrained_backbone_stops_before_the_runner(shapes_root, tmp_path):
    from repvit_mm.apis import load_config, prepare_train_cfg
    from repvit_mm.utils import UserInputError

    cfg = load_config(
        str(CONFIGS / 'segmentation' / 'fpn_repvit-m0.9_shapes.py'),
        {
            'model.backbone.init_cfg.checkpoint': str(tmp_path / 'no-classifier.pth'),
            **{f'{split}_dataloader.dataset.data_root': str(shapes_root / 'ade20k') for split in ('train', 'val')},
        },
    )
    with pytest.raises(UserInputError, match='pretrained checkpoint not found: .*no-classifier.pth'):
        prepare_train_cfg(cfg, work_dir=str(tmp_path / 'work'))
    assert not (tmp_path / 'work').exists()


def test_amp_swaps_in_the_mixed_precision_wrapper(shapes_root, tmp_path, monkeypatch):
    from mmengine.config import Config

    from repvit_mm.apis import load_config, prepare_train_cfg
    from repvit_mm.utils import UserInputError

    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    with pytest.raises(UserInputError, match='--amp needs a CUDA GPU'):
        prepare_train_cfg(Config.fromfile(str(SHAPES_CFG)), amp=True)
    from mmengine.logging import MMLogger

    MMLogger.get_current_instance()  # made now: creating a logger on a fake GPU machine would look for the GPU
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)  # as on a GPU machine
    data = shapes_options(shapes_root, 2)[1:4]  # the data roots
    for wrapper, expected in (('OptimWrapper', 'AmpOptimWrapper'), ('AGCOptimWrapper', 'AmpAGCOptimWrapper')):
        options = dict(item.split('=', 1) for item in data)
        cfg = load_config(str(SHAPES_CFG), {**options, 'optim_wrapper.type': wrapper})
        cfg = prepare_train_cfg(cfg, work_dir=str(tmp_path / wrapper), amp=True)
        assert cfg.optim_wrapper.type == expected and cfg.optim_wrapper.loss_scale == 'dynamic'
