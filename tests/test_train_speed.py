"""Training speed work: the token mixer's per-channel form, channels-last training, torch.compile of the
backbone, and the training benchmark (``tools/benchmark.py --train``)."""

from __future__ import annotations

import json
import re

import pytest
import torch
import torch.nn.functional as F
from helpers import CONFIGS, assert_one_line_error, run_tool, short_classifier_run

from repvit_mm.models.backbones.repvit import RepViT

TINY = dict(channels=[8, 16, 24, 32], depths=[1, 1, 2, 1])
CLS_SHAPES = CONFIGS / 'classification' / 'repvit-m0.9_shapes-64px.py'


@pytest.mark.parametrize(
    'kwargs',
    [dict(drop_path_rate=0.1), dict(out_at_resolution_end=True, arch=dict(TINY, legacy=True), channels_last=True)],
)
def test_backbone_compiles_without_graph_breaks(kwargs):
    """torch.compile traces the whole backbone forward (training mode) as one graph."""
    kwargs = {'arch': TINY, 'out_indices': (0, 1, 2, 3), **kwargs}
    model = RepViT(**kwargs).train()
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(model)(torch.randn(2, 3, 32, 32))
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


# ----------------------------------------------------------------------------------------- benchmark
@pytest.mark.slow
def test_train_benchmark_cli_rows_and_json(tmp_path):
    """``tools/benchmark.py --train``: every CPU row runs, the JSON has one object per row with the ratios
    to timm's model, and runner_amp names why it cannot run without CUDA."""
    out = tmp_path / 'train.json'
    proc = run_tool(
        'benchmark.py',
        CLS_SHAPES,
        '--train',
        '--batch-size',
        2,
        '--shape',
        32,
        '--iters',
        2,
        '--warmup',
        1,
        '--threads',
        1,
        '--paths',
        'timm_bare',
        'bare',
        'runner',
        'runner_channels_last',
        'runner_amp',
        '--json',
        out,
    )
    result = json.loads(out.read_text())
    rows = {r['path']: r for r in result['rows']}
    assert list(rows) == ['timm_bare', 'bare', 'runner', 'runner_channels_last', 'runner_amp']
    for path in ('timm_bare', 'bare', 'runner', 'runner_channels_last'):
        row = rows[path]
        assert row['status'] == 'ok' and row['batch'] == 2 and row['repeats'] == 2, row
        assert row['images_per_s'] == pytest.approx(2e3 / row['median_ms'])
        assert row['vs_timm_bare'] == pytest.approx(rows['timm_bare']['median_ms'] / row['median_ms'])
        assert row['vs_bare'] == pytest.approx(rows['bare']['median_ms'] / row['median_ms'])
        assert f'| {path} | {row["median_ms"]:.1f} |' in proc.stdout
    assert rows['timm_bare']['note'] == 'timm repvit_m0_9'
    assert rows['runner']['note'] in ('OptimWrapper', 'AGCOptimWrapper')  # fp32 on a CPU
    assert rows['runner_amp']['status'] == 'skipped' and 'CUDA' in rows['runner_amp']['note']
    assert {t['target'] for t in result['targets']} == {'bare >= 1.15x timm_bare', 'runner within 5% of bare'}
    assert result['settings']['batch_size'] == 2 and result['model']['arch'] == 'm0_9'


def test_train_benchmark_rows_in_process():
    """The benchmark on a tiny custom arch: bare and runner rows time, timm_bare says timm has no such arch."""
    from repvit_mm.deploy.model import read_config
    from repvit_mm.deploy.train_benchmark import format_train_table, train_benchmark

    cfg = read_config(CLS_SHAPES)
    cfg.model.backbone.arch = TINY
    cfg.model.head.in_channels = TINY['channels'][-1]
    result = train_benchmark(
        cfg,
        shape=(32, 32),
        batch_size=2,
        repeats=2,
        warmup=1,
        threads=1,
        paths=('timm_bare', 'bare', 'runner', 'runner_channels_last'),
    )
    rows = {r['path']: r for r in result['rows']}
    assert rows['timm_bare']['status'] == 'skipped' and 'no RepViT arch name' in rows['timm_bare']['note']
    for path in ('bare', 'runner', 'runner_channels_last'):
        assert rows[path]['status'] == 'ok' and rows[path]['repeats'] == 2 and rows[path]['vs_timm_bare'] is None
        assert rows[path]['vs_bare'] == pytest.approx(rows['bare']['median_ms'] / rows[path]['median_ms'])
    assert [t['target'] for t in result['targets']] == ['runner within 5% of bare']
    table = format_train_table(result)
    assert '| timm_bare | skipped |' in table and 'target runner within 5% of bare' in table


def test_train_benchmark_runner_is_the_config_training_step():
    """The runner rows use the config's own optim wrapper (AGC), data preprocessor and batch augments: the
    step changes the weights and builds the Mixup/CutMix soft targets."""
    from mmengine.optim import build_optim_wrapper

    from repvit_mm.classification.agc import AGCOptimWrapper
    from repvit_mm.deploy.model import read_config
    from repvit_mm.deploy.train_benchmark import synthetic_batch
    from repvit_mm.models.build import build_model

    cfg = read_config(CONFIGS / 'classification' / 'repvit-m0.9_8xb256-300e_in1k.py')
    cfg.model.backbone.arch = TINY
    cfg.model.head.in_channels = TINY['channels'][-1]
    model = build_model(cfg, teacher=True).train()  # as the benchmark's runner rows build it
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    assert isinstance(wrapper, AGCOptimWrapper) and wrapper.clip_grad_kwargs == {'clip_factor': 0.02}
    data = synthetic_batch(cfg, 2, (32, 32))
    assert data['inputs'][0].dtype == torch.uint8 and data['inputs'][0].shape == (3, 32, 32)
    processed = model.data_preprocessor(data, True)
    assert processed['data_samples'][0].gt_score.shape == (1000,)  # Mixup/CutMix: soft targets
    before = model.backbone.stem.conv1.conv.weight.detach().clone()
    log_vars = model.train_step(data, wrapper)
    assert torch.isfinite(log_vars['loss']) and not torch.equal(before, model.backbone.stem.conv1.conv.weight)


@pytest.mark.parametrize(
    'config', ['detection/mask-rcnn_repvit-m0.9_fpn_shapes.py', 'segmentation/fpn_repvit-m0.9_shapes.py']
)
def test_train_benchmark_dense_configs_runner_rows(config):
    """Detector and segmentor configs are timed through their runner rows, on synthetic images with boxes,
    masks or label maps; the classifier-only rows say why they are not there."""
    from repvit_mm.deploy.train_benchmark import train_benchmark

    result = train_benchmark(
        CONFIGS / config, shape=(64, 64), batch_size=2, repeats=1, warmup=0, threads=1, paths=('bare', 'runner')
    )
    rows = {r['path']: r for r in result['rows']}
    assert rows['runner']['status'] == 'ok' and rows['runner']['median_ms'] > 0, rows['runner']
    assert rows['bare']['status'] == 'skipped' and 'runner rows only' in rows['bare']['note']
    assert rows['runner']['vs_timm_bare'] is None and result['targets'] == []


@pytest.mark.parametrize(
    'args, fragment',
    [
        (['--train', '--batch-sizes', '1', '32', '--paths', 'fused'], '--batch-sizes: not an option of the training'),
        pytest.param(['--iters', '2'], '--iters: not an option of the inference benchmark', marks=pytest.mark.slow),
    ],
)
def test_train_benchmark_bad_options(args, fragment):
    assert_one_line_error(run_tool('benchmark.py', CLS_SHAPES, *args, check=False), fragment)


def test_tool_lists_the_library_paths():
    from repvit_mm.deploy.benchmark import PATHS
    from repvit_mm.deploy.train_benchmark import TRAIN_PATHS

    usage = ' '.join(run_tool('benchmark.py', '-h').stdout.split())  # argparse wraps lines at the terminal's width
    listed = re.search(r'default all: (.*?); with --train, those of (.*?) the config', usage)
    assert tuple(listed.group(1).split()) == PATHS and tuple(listed.group(2).split()) == TRAIN_PATHS


@pytest.mark.parametrize(
    'kwargs, fragment',
    [
        (dict(paths=('fused',)), 'unknown training path(s) fused'),
        (dict(shape=(16, 16)), 'training needs at least 32x32 images'),
        (dict(batch_size=0), 'batch size and repeats must be positive'),
        (dict(device='cuda'), 'no CUDA device'),
    ],
)
def test_train_benchmark_bad_arguments(kwargs, fragment):
    from repvit_mm.deploy.train_benchmark import train_benchmark
    from repvit_mm.utils.errors import UserInputError

    if kwargs.get('device') == 'cuda' and torch.cuda.is_available():
        pytest.skip('a CUDA device is present')
    with pytest.raises(UserInputError, match=re.escape(fragment)):
        train_benchmark(CLS_SHAPES, **kwargs)


def _compiled_shapes_cfg(shapes_root, work_dir):
    """The Shapes classifier on a tiny RepViT with mmengine's ``compile`` option: 2 iterations of 4 images, no
    validation (dynamo's ``eager`` backend traces what inductor would compile, in seconds)."""
    from repvit_mm.apis import load_config, prepare_train_cfg

    options = {
        **short_classifier_run(shapes_root),
        'param_scheduler.0.end': 1,
        'param_scheduler.1.begin': 1,
        'param_scheduler.1.end': 2,
        'compile.backend': 'eager',
    }
    cfg = load_config(str(CLS_SHAPES), options)
    cfg.model.backbone.arch, cfg.model.head.in_channels = TINY, TINY['channels'][-1]
    return prepare_train_cfg(cfg, work_dir=str(work_dir))


@pytest.mark.slow
def test_compile_option_trains_through_the_runner(shapes_root, tmp_path):
    """``compile=dict(...)`` in a config: mmengine compiles ``train_step`` (data preprocessor, forward, loss,
    backward, AdamW step over the config's parameter groups) and training runs; the groups keep their own
    settings."""
    import torch._dynamo

    from repvit_mm.apis import train

    torch._dynamo.reset()
    try:
        runner = train(_compiled_shapes_cfg(shapes_root, tmp_path / 'work'))
        assert 'CompileTrainStepHook' in [type(h).__name__ for h in runner.hooks]
        assert hasattr(runner.model.train_step, '_torchdynamo_orig_callable')  # compiled by the Runner
        assert runner.model.data_preprocessor.forward._torchdynamo_disable  # batch augments stay eager
        assert torch._dynamo.utils.counters['stats']['unique_graphs'] > 0
        groups = runner.optim_wrapper.optimizer.param_groups
        assert all(type(g) is dict for g in groups)
        assert {g['weight_decay'] for g in groups} == {0.0, 0.025}  # norm/bias groups kept their own decay
        assert runner.iter == 2 and (tmp_path / 'work' / 'iter_2.pth').is_file()
    finally:
        torch._dynamo.reset()


def test_compiled_step_needs_plain_param_groups():
    """Why the hook exists: an optimizer built by mmengine holds ConfigDict groups, on which dynamo fails in
    ``Optimizer.step``; after ``plain_param_groups`` the same compiled step runs and the schedulers' and the
    constructor's keys are still there."""
    import torch._dynamo
    from mmengine.config import ConfigDict
    from mmengine.optim import build_optim_wrapper

    from repvit_mm.engine import plain_param_groups

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))
    cfg = dict(optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05), paramwise_cfg=dict(norm_decay_mult=0.0))
    x = torch.randn(8, 4)

    def compiled_step(wrapper):
        torch._dynamo.reset()
        return torch.compile(lambda: wrapper.update_params(model(x).sum()), backend='eager')

    try:
        wrapper = build_optim_wrapper(model, ConfigDict(cfg))
        assert all(isinstance(g, ConfigDict) for g in wrapper.optimizer.param_groups)
        with pytest.raises(Exception, match='param_groups'):
            compiled_step(wrapper)()
        wrapper = build_optim_wrapper(model, ConfigDict(cfg))
        before = [dict(g) for g in wrapper.optimizer.param_groups]
        groups = wrapper.optimizer.param_groups
        plain_param_groups(wrapper)
        assert wrapper.optimizer.param_groups is groups and all(type(g) is dict for g in groups)
        assert [dict(g) for g in groups] == before
        weight = model[0].weight.detach().clone()
        compiled_step(wrapper)()
        assert not torch.equal(weight, model[0].weight)  # the step ran
    finally:
        torch._dynamo.reset()


# ----------------------------------------------------------------------------------------- AGC
class _AGCNet(torch.nn.Module):
    """Conv, BN, linear (4-D, 1-D, 2-D tensors), a filter of tiny weights (timm's ``eps`` floor) and a
    parameter that gets no gradient on some steps."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 6, 3)
        self.bn = torch.nn.BatchNorm2d(6)
        self.fc = torch.nn.Linear(6, 4)
        self.unused = torch.nn.Parameter(torch.randn(4, 3))
        with torch.no_grad():
            self.conv.weight[0].mul_(1e-5)

    def forward(self, x: torch.Tensor, scale: float) -> torch.Tensor:
        return self.fc(self.bn(self.conv(x)).mean((2, 3))) * scale


def _agc_run(clip, clip_factor: float, steps: int) -> list[dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    model = _AGCNet()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.025)
    gen = torch.Generator().manual_seed(1)
    states = []
    for i in range(steps):
        x = torch.randn(4, 3, 8, 8, generator=gen)
        loss = model(x, scale=10.0 ** (i % 3 - 1)).pow(2).mean()  # small and large gradients
        if i % 2:
            loss = loss + model.unused.sum() * 1e-9  # a gradient far below 1e-6 every other step
        optimizer.zero_grad()
        loss.backward()
        clip(model.parameters(), clip_factor)
        optimizer.step()
        states.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    return states


@pytest.mark.parametrize('clip_factor', [0.02, 0.3, 1e-4])
def test_agc_same_parameters_as_timm_after_steps(clip_factor):
    """Our multi-tensor AGC leaves every parameter and buffer bit-identical to timm's
    ``adaptive_clip_grad`` after several AdamW steps, with units clipped and units kept (and timm's own
    function where ``eps * clip_factor <= 1e-6``)."""
    from timm.utils import adaptive_clip_grad

    from repvit_mm.classification.agc import adaptive_clip_grad_

    ours = _agc_run(lambda p, c: adaptive_clip_grad_(p, clip_factor=c), clip_factor, steps=6)
    timm_states = _agc_run(lambda p, c: adaptive_clip_grad(p, clip_factor=c), clip_factor, steps=6)
    no_clip = _agc_run(lambda p, c: None, clip_factor, steps=6)
    for step, (a, b) in enumerate(zip(ours, timm_states, strict=True)):
        for key in a:
            assert torch.equal(a[key], b[key]), (step, key)
    assert not torch.equal(ours[-1]['conv.weight'], no_clip[-1]['conv.weight'])  # AGC acted


def test_agc_clips_some_units_and_keeps_others_exactly():
    """In one call, clipped rows are scaled to timm's values and the rows under the limit keep their exact
    gradient; a 1-D tensor is clipped as a whole."""
    from timm.utils import adaptive_clip_grad

    from repvit_mm.classification.agc import adaptive_clip_grad_

    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(5, 7))
    b = torch.nn.Parameter(torch.randn(5))
    grad = torch.randn(5, 7) * torch.tensor([1e-4, 1e-3, 0.1, 1.0, 0.0]).view(5, 1)
    w.grad, b.grad = grad.clone(), torch.full((5,), 3.0)
    twin_w, twin_b = torch.nn.Parameter(w.detach().clone()), torch.nn.Parameter(b.detach().clone())
    twin_w.grad, twin_b.grad = grad.clone(), torch.full((5,), 3.0)
    adaptive_clip_grad_([w, b], clip_factor=0.02)
    adaptive_clip_grad([twin_w, twin_b], clip_factor=0.02)
    assert torch.equal(w.grad, twin_w.grad) and torch.equal(b.grad, twin_b.grad)
    kept = (w.grad == grad).all(1)
    assert kept.tolist() == [True, True, False, False, True]
    assert not torch.equal(b.grad, torch.full((5,), 3.0))


def test_agc_fewer_operator_calls_than_timm():
    """On RepViT-M0.9 (381 parameter tensors) timm dispatches 13 operators per tensor (ten kernels, three
    ``detach``); ours two norms per tensor plus six multi-tensor calls (on CUDA the last, a broadcasting
    multiply, launches one kernel per tensor)."""
    from timm.utils import adaptive_clip_grad
    from torch.utils._python_dispatch import TorchDispatchMode

    from repvit_mm.classification.agc import adaptive_clip_grad_

    class Count(TorchDispatchMode):
        calls = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.calls += 1
            return func(*args, **(kwargs or {}))

    model = RepViT('m0_9')
    params = list(model.parameters())
    for p in params:
        p.grad = torch.randn_like(p)
    counts = []
    for clip in (adaptive_clip_grad, adaptive_clip_grad_):
        Count.calls = 0
        with Count():
            clip(params, clip_factor=0.02)
        counts.append(Count.calls)
    assert counts[0] >= 13 * len(params) and counts[1] <= 2 * len(params) + 6, counts


# ----------------------------------------------------------------------------------------- authors' loop
DISTILL_M09 = CONFIGS / 'classification' / 'repvit-m0.9_8xb256-distill-300e_in1k.py'


def test_authors_loop_is_their_distillation_step(monkeypatch):
    """The ``authors_loop`` step of a distillation config: timm's model returns the (class, distillation)
    pair, the teacher the config names sees the mixed batch the student sees, the loss is their hard
    DistillationLoss on timm's Mixup targets, NativeScaler clips by AGC 0.02, and AdamW leaves 1-D
    parameters without weight decay."""
    import timm.utils.cuda
    from timm.loss import SoftTargetCrossEntropy

    from repvit_mm.deploy.authors_loop import authors_train_step
    from repvit_mm.deploy.model import read_config
    from repvit_mm.deploy.train_benchmark import synthetic_batch

    cfg = read_config(DISTILL_M09)
    cfg.model.teacher.name = 'regnety_002'  # the real teacher's family, small; its file is absent: random weights
    clips = []
    real_clip = timm.utils.cuda.dispatch_clip_grad
    monkeypatch.setattr(
        timm.utils.cuda,
        'dispatch_clip_grad',
        lambda p, value, mode: (clips.append((value, mode)), real_clip(p, value, mode)),
    )
    step, note, parts = authors_train_step(cfg, 'm0_9', synthetic_batch(cfg, 4, (32, 32)), torch.device('cpu'))
    assert note == 'timm repvit_m0_9, Mixup/CutMix, AGC 0.02, fp32, teacher regnety_002 (hard)'
    seen = {}
    parts['model'].register_forward_hook(lambda m, args, out: seen.update(student_in=args[0], student_out=out))
    parts['teacher'].register_forward_hook(lambda m, args, out: seen.update(teacher_in=args[0], teacher_out=out))
    real_mix = type(parts['mixup']).__call__
    monkeypatch.setattr(
        type(parts['mixup']), '__call__', lambda self, x, y: seen.setdefault('mixed', real_mix(self, x, y))
    )
    first = next(parts['model'].parameters())
    before = first.detach().clone()
    loss = step()
    assert seen['teacher_in'] is seen['student_in'] is seen['mixed'][0]
    cls, dist = seen['student_out']
    expected = 0.5 * SoftTargetCrossEntropy()(cls, seen['mixed'][1]) + 0.5 * F.cross_entropy(
        dist, seen['teacher_out'].argmax(1)
    )
    assert loss == pytest.approx(expected.item(), rel=1e-6)
    assert seen['mixed'][1].shape == (4, 1000) and seen['mixed'][1].min() > 0  # smoothed soft targets
    assert clips == [(0.02, 'agc')]
    decay = {g['weight_decay']: {p.ndim for p in g['params']} for g in parts['optimizer'].param_groups}
    assert decay[0.0] == {1} and 1 not in decay[0.025]
    assert parts['optimizer'].param_groups[0]['lr'] == pytest.approx(1e-3 * 4 / 512)
    assert not torch.equal(before, first)  # the step was taken


def test_authors_loop_row_next_to_the_runner():
    """``authors_loop`` and ``runner`` rows on the Shapes config: both time, ``vs_authors_loop`` is the ratio
    of their medians and the target compares them."""
    from repvit_mm.deploy.train_benchmark import format_train_table, train_benchmark

    result = train_benchmark(
        CLS_SHAPES, shape=(32, 32), batch_size=2, repeats=2, warmup=1, threads=1, paths=('authors_loop', 'runner')
    )
    rows = {r['path']: r for r in result['rows']}
    assert rows['authors_loop']['status'] == 'ok', rows['authors_loop']
    assert rows['authors_loop']['note'] == 'timm repvit_m0_9, Mixup/CutMix, AGC 0.02, fp32'
    ratio = rows['authors_loop']['median_ms'] / rows['runner']['median_ms']
    assert rows['runner']['vs_authors_loop'] == pytest.approx(ratio)
    assert result['targets'] == [
        dict(
            target='runner >= authors_loop',
            path='runner',
            reference='authors_loop',
            ratio=pytest.approx(ratio),
            minimum=1.0,
            met=ratio >= 1.0,
        )
    ]
    assert '| vs authors_loop |' in format_train_table(result)


def test_authors_loop_odd_batch_is_skipped_with_the_reason():
    """timm's Mixup needs an even batch (it pairs each image with its mirror in the batch)."""
    from repvit_mm.deploy.train_benchmark import train_benchmark

    result = train_benchmark(
        CLS_SHAPES, shape=(32, 32), batch_size=3, repeats=1, warmup=0, threads=1, paths=('authors_loop',)
    )
    row = result['rows'][0]
    assert row['status'] == 'skipped' and 'even' in row['note'], row


# ----------------------------------------------------------------------------------------- GPU script
def _gpu_script(*args: str, check: bool = True):
    import subprocess
    import sys

    from helpers import ROOT, tool_env

    proc = subprocess.run(
        ['bash', str(ROOT / 'tools' / 'gpu_train_benchmark.sh'), *args],
        env=dict(tool_env(), PYTHON=sys.executable),
        capture_output=True,
        text=True,
        timeout=900,
    )
    if check and proc.returncode:
        raise AssertionError(f'{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}')
    return proc


@pytest.mark.slow
def test_gpu_train_script_runs_on_cpu(tmp_path):
    """``tools/gpu_train_benchmark.sh --device cpu`` at tiny sizes: the versions first, then for the
    distillation and the non-distillation ImageNet config the rows timm_bare, bare, authors_loop and
    runner, each timed (the teacher in both distillation rows)."""
    proc = _gpu_script(
        '--device', 'cpu', '--batch-sizes', '2', '--shape', '32', '--iters', '1', '--warmup', '0', '--threads', '1',
        '--json-dir', str(tmp_path),
    )  # fmt: skip
    assert re.search(r'^# python .*, torch 2\.\S+ .*timm \S+, mmengine', proc.stdout, re.M), proc.stdout
    tables = proc.stdout.split('training step of ')[1:]
    assert [t.split(' ')[0] for t in tables] == [
        'repvit-m0.9_8xb256-distill-300e_in1k.py',
        'repvit-m0.9_8xb256-300e_in1k.py',
    ]
    for name in ('repvit-m0.9_8xb256-distill-300e_in1k', 'repvit-m0.9_8xb256-300e_in1k'):
        rows = {r['path']: r for r in json.loads((tmp_path / f'{name}_b2.json').read_text())['rows']}
        assert list(rows) == ['timm_bare', 'bare', 'authors_loop', 'runner']
        assert all(r['status'] == 'ok' and r['batch'] == 2 for r in rows.values()), rows
        teacher = 'distill' in name
        assert ('teacher regnety_160' in rows['runner']['note']) == teacher
        assert ('teacher regnety_160' in rows['authors_loop']['note']) == teacher


@pytest.mark.parametrize(
    'args, fragment',
    [
        (['--bogus', '1'], 'unknown option --bogus'),
        (['--arch', 'm7'], 'no config'),
        (['--shape'], '--shape needs a value'),
    ],
)
def test_gpu_train_script_bad_options(args, fragment, tmp_path):
    proc = _gpu_script('--json-dir', str(tmp_path / 'out'), *args, check=False)
    assert proc.returncode == 2 and proc.stdout == '', proc.stdout
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and fragment in proc.stderr
    assert not (tmp_path / 'out').exists()


# ----------------------------------------------------------------------------------------- batched input
def test_imagenet_batch_stacked_with_the_same_numbers():
    """The ImageNet configs collate training batches with ``default_collate``: the synthetic batch follows
    (one uint8 tensor), and the data preprocessor gives the same images and soft labels, bit for bit, from
    the stacked batch as from the list of images mmengine's ``pseudo_collate`` gives (random erasing and
    Mixup/CutMix under the same seeds)."""
    import copy
    import random

    import numpy as np

    from repvit_mm.deploy.model import read_config
    from repvit_mm.deploy.train_benchmark import synthetic_batch
    from repvit_mm.models.build import build_model

    cfg = read_config(CONFIGS / 'classification' / 'repvit-m0.9_8xb256-300e_in1k.py')
    assert cfg.train_dataloader.collate_fn == dict(type='default_collate')
    cfg.model.backbone.arch, cfg.model.head.in_channels = TINY, TINY['channels'][-1]
    preprocessor = build_model(cfg, teacher=True).train().data_preprocessor
    stacked = synthetic_batch(cfg, 6, (48, 40))
    assert isinstance(stacked['inputs'], torch.Tensor) and stacked['inputs'].shape == (6, 3, 48, 40)
    listed = dict(stacked, inputs=list(stacked['inputs']))
    for seed in range(4):  # Mixup and CutMix both come up (numpy's draw picks one per batch)
        outs = []
        for data in (stacked, listed):
            random.seed(seed), np.random.seed(seed), torch.manual_seed(seed)
            outs.append(preprocessor(copy.deepcopy(data), True))
        assert torch.equal(outs[0]['inputs'], outs[1]['inputs'])
        for a, b in zip(outs[0]['data_samples'], outs[1]['data_samples'], strict=True):
            assert torch.equal(a.gt_score, b.gt_score)
    shapes = read_config(CLS_SHAPES)
    assert isinstance(synthetic_batch(shapes, 2, (32, 32))['inputs'], list)  # its loader: pseudo_collate
