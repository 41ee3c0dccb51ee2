"""mmcv's ops on torchvision's kernels (repvit_mm.ops): the numbers of mmcv 2.1.0's compiled ops (recorded
by tests/fixtures/record_mmcv_ops.py), properties that need no recording, every op our configs call served,
one line for an op that is not, and mmcv's ``_ext`` route whatever is imported first."""

from __future__ import annotations

import contextlib
import copy
import importlib.machinery
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from helpers import CONFIGS, ROOT, assert_one_line_error, tool_env

from repvit_mm.ops import SERVED, UnservedOpError, mmcv_op

FIXTURE = torch.load(Path(__file__).parent / 'fixtures' / 'mmcv_ops.pt', weights_only=True)
MMCV_EXT = ROOT / 'repvit_mm' / 'ops' / 'mmcv_ext.py'
DET_SHAPES = CONFIGS / 'detection' / 'mask-rcnn_repvit-m0.9_fpn_shapes.py'
SEG_SHAPES = CONFIGS / 'segmentation' / 'fpn_repvit-m0.9_shapes.py'


@contextlib.contextmanager
def served_mmcv_ops():
    """Within: every ``mmcv.ops`` module takes its kernels from :func:`repvit_mm.ops.mmcv_op`, as in an
    install of mmcv without compiled ops, whatever this one has; yields the names of the kernels called."""
    import mmcv.ops  # noqa: F401  (every op module, each with its ``ext_module``)

    called: list[str] = []

    class Served:
        def __getattr__(self, name: str):
            called.append(name)
            return mmcv_op(name)

    modules = [m for n, m in list(sys.modules.items()) if n.startswith('mmcv.') and hasattr(m, 'ext_module')]
    saved = [(m, m.ext_module) for m in modules]
    try:
        for module in modules:
            module.ext_module = Served()
        yield called
    finally:
        for module, ext in saved:
            module.ext_module = ext


def _installed_ops() -> str:
    """'compiled' or 'served': what this install's ``mmcv._ext`` is."""
    import mmcv._ext

    if mmcv._ext.__file__.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)):
        return 'compiled'
    assert Path(mmcv._ext.__file__).read_bytes() == MMCV_EXT.read_bytes(), mmcv._ext.__file__
    return 'served'


# ----------------------------------------------------------------------------------------- the recording
def _roi_align(case: dict) -> tuple[torch.Tensor, torch.Tensor]:
    from mmcv.ops import roi_align

    data = FIXTURE['roi_align_inputs'][case['inputs']]
    x = data['input'].clone().requires_grad_()
    out = roi_align(
        x, data['rois'], case['output_size'], case['spatial_scale'], case['sampling_ratio'], 'avg', case['aligned']
    )
    out.backward(data['grad_output'])
    return out.detach(), x.grad


def _case_id(case: dict) -> str:
    return f'{case["inputs"]}-aligned{case["aligned"]}-sr{case["sampling_ratio"]}'


@pytest.mark.parametrize('case', FIXTURE['roi_align'], ids=_case_id)
def test_roi_align_matches_compiled_mmcv(case):
    """Forward and input gradient equal mmcv's compiled RoIAlign bit for bit (float64 and float32), RoIs past
    the map, smaller than a pixel and of zero size included."""
    with served_mmcv_ops() as called:
        out, grad = _roi_align(case)
    assert called == ['roi_align_forward', 'roi_align_backward']
    assert out.abs().sum() > 0 and grad.abs().sum() > 0
    torch.testing.assert_close(out, case['output'], rtol=0, atol=0)
    torch.testing.assert_close(grad, case['grad_input'], rtol=0, atol=0)


@pytest.mark.parametrize('case', FIXTURE['nms'], ids=lambda c: f'iou{c["iou_threshold"]}')
def test_nms_matches_compiled_mmcv(case):
    """Same kept boxes in the same order, tied scores and duplicate boxes included."""
    from mmcv.ops import nms

    assert len(case['scores'].unique()) < len(case['scores']) / 4  # the recording has ties
    with served_mmcv_ops() as called:
        dets, keep = nms(case['boxes'], case['scores'], case['iou_threshold'])
    assert called == ['nms'] and 0 < len(keep) < len(case['boxes'])
    assert keep.tolist() == case['keep'].tolist()
    torch.testing.assert_close(dets, case['dets'], rtol=0, atol=0)


@pytest.mark.parametrize('case', FIXTURE['batched_nms'], ids=lambda c: str(sorted(c['nms_cfg'].items())))
def test_batched_nms_matches_compiled_mmcv(case):
    from mmcv.ops import batched_nms

    with served_mmcv_ops() as called:
        dets, keep = batched_nms(case['boxes'], case['scores'], case['idxs'], dict(case['nms_cfg']))
    assert set(called) == {'nms'}
    assert keep.tolist() == case['keep'].tolist()
    torch.testing.assert_close(dets, case['dets'], rtol=0, atol=0)


def test_installed_mmcv_ops_match_the_recording():
    """mmcv.ops as installed -- compiled, or our ``_ext.py`` forwarding to repvit_mm.ops -- gives the
    recorded numbers through mmcv's own API."""
    from mmcv.ops import batched_nms, nms

    assert _installed_ops() in ('compiled', 'served')
    for case in FIXTURE['roi_align']:
        out, grad = _roi_align(case)
        assert torch.equal(out, case['output']) and torch.equal(grad, case['grad_input']), _case_id(case)
    for case in FIXTURE['nms']:
        assert torch.equal(nms(case['boxes'], case['scores'], case['iou_threshold'])[1], case['keep'])
    for case in FIXTURE['batched_nms']:
        _, keep = batched_nms(case['boxes'], case['scores'], case['idxs'], dict(case['nms_cfg']))
        assert torch.equal(keep, case['keep'])


def _same(a, b) -> bool:
    """Nested dicts / lists / tuples of tensors and numbers, equal exactly."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    return a == b


def test_the_recording_script_writes_the_fixture_and_needs_compiled_ops(tmp_path):
    """With compiled mmcv the script writes exactly the committed fixture; without, it refuses in one line
    and writes nothing."""
    out = tmp_path / 'ops.pt'
    script = Path(__file__).parent / 'fixtures' / 'record_mmcv_ops.py'
    proc = subprocess.run(
        [sys.executable, str(script), str(out)], env=tool_env(), capture_output=True, text=True, timeout=300
    )
    if _installed_ops() == 'compiled':
        assert proc.returncode == 0, proc.stderr[-2000:]
        recorded = torch.load(out, weights_only=True)
        assert recorded.pop('recorded_with').startswith('mmcv 2.1.0 compiled ops')
        assert _same(recorded, {k: v for k, v in FIXTURE.items() if k != 'recorded_with'})
    else:
        assert proc.returncode == 1 and not out.exists()
        assert proc.stderr.strip().endswith('not compiled ops; record against a compiled mmcv'), proc.stderr


# ----------------------------------------------------------------------------------------- properties
def _box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    from torchvision.ops import box_iou

    return box_iou(a, b)


def test_roi_align_gradient_is_the_adjoint_and_gradcheck_passes():
    """The backward kernel is the forward's transpose: <roi_align(x), g> == <x, backward(g)> for any x, g;
    and autograd's numerical gradient check passes."""
    from mmcv.ops import roi_align

    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 9, 11, generator=gen, dtype=torch.float64)
    rois = torch.tensor([[0, 1.3, 0.7, 7.2, 8.1], [1, -2.0, 3.1, 5.5, 12.0], [1, 4.4, 4.4, 4.9, 5.0]], dtype=x.dtype)
    g = torch.randn(3, 3, 2, 3, generator=gen, dtype=torch.float64)
    with served_mmcv_ops():
        for aligned in (True, False):
            xr = x.clone().requires_grad_()
            out = roi_align(xr, rois, (2, 3), 1.0, 2, 'avg', aligned)
            out.backward(g)
            torch.testing.assert_close((out * g).sum(), (x * xr.grad).sum(), rtol=1e-12, atol=1e-12)
            assert torch.autograd.gradcheck(
                lambda t, a=aligned: roi_align(t, rois, (2, 3), 1.0, 2, 'avg', a), (x.clone().requires_grad_(),)
            )


def test_roi_align_averages_a_linear_map_at_bin_centres():
    """On a map linear in x and y, each output is the map's value at its bin's centre (bilinear sampling is
    exact there): the geometry of aligned RoIs (half-pixel shift), spatial scale and bins."""
    from mmcv.ops import roi_align

    height, width = 16, 20
    ys, xs = torch.meshgrid(*(torch.arange(n, dtype=torch.float64) for n in (height, width)), indexing='ij')
    x = (3 * xs + 0.5 * ys)[None, None]
    rois = torch.tensor([[0, 8.0, 12.0, 40.0, 36.0]], dtype=torch.float64)  # image coordinates, stride 4
    with served_mmcv_ops():
        out = roi_align(x, rois, (3, 4), 0.25, 2, 'avg', True)[0, 0]
    x1, y1, x2, y2 = (rois[0, 1:] * 0.25 - 0.5).tolist()
    cx = x1 + (torch.arange(4, dtype=torch.float64) + 0.5) * (x2 - x1) / 4
    cy = y1 + (torch.arange(3, dtype=torch.float64) + 0.5) * (y2 - y1) / 3
    torch.testing.assert_close(out, 3 * cx[None, :] + 0.5 * cy[:, None])


def test_nms_keeps_a_valid_greedy_set():
    """Kept boxes overlap each other at most the threshold, in descending score; every dropped box overlaps
    a kept box of at least its score by more than the threshold."""
    from mmcv.ops import nms

    gen = torch.Generator().manual_seed(4)
    xy = torch.rand(200, 2, generator=gen) * 100
    boxes = torch.cat([xy, xy + 5 + torch.rand(200, 2, generator=gen) * 30], 1)
    scores = torch.rand(200, generator=gen)
    for thr in (0.3, 0.5, 0.7):
        with served_mmcv_ops():
            dets, keep = nms(boxes, scores, thr)
        kept = boxes[keep]
        iou = _box_iou(kept, kept).fill_diagonal_(0)
        assert iou.max() <= thr and torch.all(scores[keep][:-1] >= scores[keep][1:])
        dropped = torch.ones(200, dtype=torch.bool)
        dropped[keep] = False
        cover = (_box_iou(boxes[dropped], kept) > thr) & (scores[keep][None] >= scores[dropped][:, None])
        assert cover.any(1).all() and 0 < len(keep) < 200


def test_batched_nms_never_suppresses_across_classes():
    from mmcv.ops import batched_nms, nms

    gen = torch.Generator().manual_seed(5)
    xy = torch.rand(90, 2, generator=gen) * 40
    boxes = torch.cat([xy, xy + 20], 1)
    scores, idxs = torch.rand(90, generator=gen), torch.randint(0, 3, (90,), generator=gen)
    with served_mmcv_ops():
        _, keep = batched_nms(boxes, scores, idxs, {'iou_threshold': 0.5})
        expected = set()
        for c in range(3):
            index = (idxs == c).nonzero()[:, 0]
            expected |= set(index[nms(boxes[index], scores[index], 0.5)[1]].tolist())
    assert set(keep.tolist()) == expected and len(expected) < 90


# ----------------------------------------------------------------------------------------- what is not served
def test_ops_not_served_stop_naming_the_op_and_the_remedy():
    from mmcv.ops import DeformConv2d, RoIAlign, nms

    x = torch.randn(1, 2, 8, 8)
    rois = torch.tensor([[0, 1.0, 1.0, 6.0, 6.0]])
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11]], dtype=torch.float32)
    cases = [
        (lambda: RoIAlign(2, 1.0, 2, 'max')(x, rois), "roi_align_forward with pool_mode='max'"),
        (lambda: nms(boxes, torch.tensor([0.9, 0.8]), 0.5, offset=1), 'nms with offset=1'),
        (lambda: DeformConv2d(2, 2, 3, padding=1)(x, torch.zeros(1, 18, 8, 8)), 'deform_conv_forward'),
    ]
    for call, op in cases:
        with served_mmcv_ops(), pytest.raises(UnservedOpError) as err:
            call()
        message = str(err.value)
        assert f'mmcv op {op} needs mmcv compiled' in message and '\n' not in message
        assert 'REPVIT_MM_COMPILED_OPS=1 bash tools/install.sh' in message and 'FORCE_CUDA=1' in message


def _with_served_ext(code: str) -> str:
    """Python code that first makes repvit_mm/ops/mmcv_ext.py this process's ``mmcv._ext`` (as the
    default install has it, whatever this environment's mmcv is), then runs ``code``."""
    return (
        'import importlib.util, sys\n'
        f'spec = importlib.util.spec_from_file_location("mmcv._ext", {str(MMCV_EXT)!r})\n'
        'sys.modules["mmcv._ext"] = ext = importlib.util.module_from_spec(spec)\n'
        'spec.loader.exec_module(ext)\n' + textwrap.dedent(code)
    )


@pytest.mark.parametrize('first', ['mmdet.models, mmseg.models', 'repvit_mm', 'mmpretrain.models'])
def test_mmcv_ext_route_works_whatever_is_imported_first(first):
    """mmcv.ops imports with our ``_ext`` (each op module checks the names it needs), whichever of mmdet,
    mmseg, mmpretrain or repvit_mm comes first, and importing repvit_mm waits for the first op call."""
    code = f"""
        import {first}
        import mmcv.ops, mmdet.models, mmseg.models
        from mmcv.ops import nms
        assert sys.modules['mmcv.ops.nms'].ext_module is ext
        print('repvit_mm' in sys.modules)
        import torch
        keep = nms(torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11.0]]), torch.tensor([0.9, 0.8]), 0.5)[1]
        print(keep.tolist(), 'repvit_mm.ops' in sys.modules)
        """
    proc = subprocess.run(
        [sys.executable, '-c', _with_served_ext(code)], env=tool_env(), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    before, after = proc.stdout.split('\n')[:2]
    assert before == str(first == 'repvit_mm') and after == '[0] True', proc.stdout


@pytest.mark.slow
def test_train_tool_stops_with_one_line_on_an_op_not_served(shapes_root, tmp_path):
    """tools/train.py with mmcv's ``_ext`` ours and a config asking for max-pooling RoIAlign: one error line."""
    argv = ['tools/train.py', str(DET_SHAPES), '--work-dir', str(tmp_path / 'work'), '--cfg-options']
    coco = shapes_root / 'coco'
    argv += [f'{split}_dataloader.dataset.data_root={coco}' for split in ('train', 'val', 'test')]
    argv += [f'{split}_evaluator.ann_file={coco}/annotations/instances_val2017.json' for split in ('val', 'test')]
    argv += [
        'train_cfg.max_iters=1',
        'model.backbone.init_cfg=None',
        'model.roi_head.bbox_roi_extractor.roi_layer.pool_mode=max',
    ]
    code = f"""
        import runpy
        sys.path.insert(0, {str(ROOT / 'tools')!r})  # as `python tools/train.py` has it
        sys.argv = {argv!r}
        runpy.run_path({str(ROOT / 'tools' / 'train.py')!r}, run_name='__main__')
        """
    proc = subprocess.run(
        [sys.executable, '-c', _with_served_ext(code)],
        cwd=tmp_path,
        env=tool_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert_one_line_error(proc, "mmcv op roi_align_forward with pool_mode='max'", 'REPVIT_MM_COMPILED_OPS=1')


# ----------------------------------------------------------------------------------------- what the configs call
def _det_step(config: Path, shapes_root: Path) -> None:
    from mmdet.registry import DATASETS, MODELS
    from mmengine.config import Config
    from mmengine.dataset import pseudo_collate
    from mmengine.model import revert_sync_batchnorm
    from mmengine.optim import OptimWrapper
    from mmengine.registry import init_default_scope

    init_default_scope('mmdet')
    cfg, shapes = Config.fromfile(str(config)), Config.fromfile(str(DET_SHAPES))
    cfg.model.backbone.init_cfg = None
    torch.manual_seed(0)
    model = revert_sync_batchnorm(MODELS.build(cfg.model))
    for split, mode in (('train', True), ('val', False)):
        dataset_cfg = copy.deepcopy(shapes[f'{split}_dataloader'].dataset)
        dataset_cfg.data_root = str(shapes_root / 'coco')
        dataset = DATASETS.build(dataset_cfg)
        data = pseudo_collate([dataset[i] for i in range(2)])
        model.train(mode)
        if mode:
            optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=1e-3))
            losses = model.train_step(data, optim)
            assert {'loss_rpn_cls', 'loss_bbox', 'loss_mask'} <= set(losses)
        else:
            with torch.no_grad():
                assert len(model.test_step(data)) == 2


def _seg_step(config: Path, shapes_root: Path) -> None:
    from mmengine.config import Config
    from mmengine.dataset import pseudo_collate
    from mmengine.model import revert_sync_batchnorm
    from mmengine.optim import OptimWrapper
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS, MODELS

    init_default_scope('mmseg')
    cfg, shapes = Config.fromfile(str(config)), Config.fromfile(str(SEG_SHAPES))
    cfg.model.backbone.init_cfg = None
    model = revert_sync_batchnorm(MODELS.build(cfg.model))
    for split, mode in (('train', True), ('val', False)):
        dataset_cfg = copy.deepcopy(shapes[f'{split}_dataloader'].dataset)
        dataset_cfg.data_root = str(shapes_root / 'ade20k')
        dataset = DATASETS.build(dataset_cfg)
        data = pseudo_collate([dataset[i] for i in range(2)])
        model.train(mode)
        if mode:
            assert 'decode.loss_ce' in model.train_step(data, OptimWrapper(torch.optim.SGD(model.parameters())))
        else:
            with torch.no_grad():
                assert len(model.test_step(data)) == 2


@pytest.mark.slow
@pytest.mark.parametrize(
    'task, config',
    [
        ('det', DET_SHAPES),
        ('det', CONFIGS / 'detection' / 'mask-rcnn_repvit-m0.6_fpn_1x_coco.py'),
        ('seg', SEG_SHAPES),
        ('seg', CONFIGS / 'segmentation' / 'fpn_repvit-m0.6_8xb4-40k_ade20k-512x512.py'),
    ],
    ids=lambda v: v.name if isinstance(v, Path) else v,
)
def test_config_train_and_test_steps_call_only_served_ops(task, config, shapes_root):
    """A train step and a test step of the Shapes and COCO / ADE20K models (on Shapes images), with every
    mmcv kernel call going through repvit_mm.ops: all are served (an unserved one raises), and Mask R-CNN
    calls exactly RoIAlign forward / backward and NMS, Semantic FPN none."""
    with served_mmcv_ops() as called:
        (_det_step if task == 'det' else _seg_step)(config, shapes_root)
    assert set(called) <= set(SERVED)
    expected = {'roi_align_forward', 'roi_align_backward', 'nms'} if task == 'det' else set()
    assert set(called) == expected, sorted(set(called))


@pytest.mark.slow
def test_gpu_dense_check_runs_on_cpu(tmp_path, monkeypatch, capsys):
    """tools/gpu_dense_check.py (the prepared CUDA check of the dense tasks) end to end as a CPU smoke run,
    its steps forked as the quick demo test runs them: AP, mIoU, step times and the benchmark's runner rows
    reported."""
    from helpers import forked_step, orchestrator_module

    monkeypatch.setattr(orchestrator_module('run_demo'), '_tool', forked_step)
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '')  # restored after the test (the check sets it for its steps)
    orchestrator_module('gpu_dense_check').main(['--device', 'cpu', '--quick', '--out', str(tmp_path)])
    summary = json.loads((tmp_path / 'summary.json').read_text())
    assert summary['device'] == 'cpu' and 'device: cpu' in capsys.readouterr().out
    metrics = summary['metrics']
    for key in ('detection coco/bbox_mAP', 'detection coco/segm_mAP', 'segmentation mIoU'):
        assert 0 <= metrics[key] <= 100, key
    for task in ('detection', 'segmentation'):
        assert metrics[f'{task} s per training step'] > 0
        assert metrics[f'{task} benchmark runner ms per step'] > 0


# ----------------------------------------------------------------------------------------- install
@pytest.mark.parametrize(
    'env, fragment',
    [
        ({'REPVIT_MM_COMPILED_OPS': '2'}, "REPVIT_MM_COMPILED_OPS must be 0 or 1, got '2'"),
        ({'FORCE_CUDA': '1'}, "FORCE_CUDA=1 compiles mmcv's CUDA ops: set REPVIT_MM_COMPILED_OPS=1 too"),
    ],
)
def test_install_refuses_bad_ops_settings_before_creating_anything(env, fragment, tmp_path):
    venv = tmp_path / 'venv'
    settings = {'VENV': str(venv), 'REPVIT_MM_COMPILED_OPS': '0', 'FORCE_CUDA': '0', **env}
    proc = subprocess.run(
        ['bash', str(ROOT / 'tools' / 'install.sh')],
        env={**os.environ, **settings},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1 and not venv.exists()
    assert proc.stderr.splitlines() == [f'[install] ERROR: {fragment}'], proc.stderr
