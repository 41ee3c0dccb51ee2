"""The authors' training recipe, checked against what their code does: the ImageNet learning rate of every
epoch (timm's scheduler stepped as their main.py steps it), mixed precision with adaptive clipping of the
unscaled gradients, random erasing on normalised images before Mixup/CutMix, the COCO warm-up and seed,
the ADE20K poly decay, and the optional model EMA."""

from __future__ import annotations

import argparse
import logging
import math
import random
from pathlib import Path

import pytest
import torch
from helpers import CONFIGS, assert_one_line_error, run_tool, short_classifier_run
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from torch import nn

import repvit_mm  # noqa: F401  (registration)

CLS = CONFIGS / 'classification'
COCO_CFG = CONFIGS / 'detection' / 'mask-rcnn_repvit-m1.1_fpn_1x_coco.py'
ADE20K_CFG = CONFIGS / 'segmentation' / 'fpn_repvit-m1.1_8xb4-40k_ade20k-512x512.py'
SHAPES_CFG = CLS / 'repvit-m0.9_shapes-64px.py'
EMA_FRAGMENT = CONFIGS / '_base_' / 'repvit_ema.py'
MEAN = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)  # RGB, 0-255
STD = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)


def rel_diff(ours: list[float], theirs: list[float]) -> float:
    assert len(ours) == len(theirs)
    return max(abs(a - b) / abs(b) for a, b in zip(ours, theirs, strict=True))


# ------------------------------------------------------------------------------------------ ImageNet lr
def authors_epoch_lrs(epochs: int, total_batch: int) -> list[float]:
    """The learning rate of every epoch in the authors' main.py: ``args.lr = 1e-3 * batch / 512``, timm's
    ``create_scheduler(args, optimizer)`` with their defaults, ``lr_scheduler.step(epoch)`` after each epoch."""
    from timm.scheduler import create_scheduler

    args = argparse.Namespace(
        sched='cosine',
        epochs=epochs,
        lr=1e-3 * total_batch / 512,
        lr_noise=None,
        lr_noise_pct=0.67,
        lr_noise_std=1.0,
        warmup_lr=1e-6,
        min_lr=1e-5,
        decay_epochs=30,
        warmup_epochs=5,
        cooldown_epochs=10,
        patience_epochs=10,
        decay_rate=0.1,
        seed=0,
    )
    optimizer = torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=args.lr)
    lr_scheduler, _ = create_scheduler(args, optimizer)
    lrs = []
    for epoch in range(epochs):
        lrs.append(optimizer.param_groups[0]['lr'])  # what train_one_epoch uses throughout the epoch
        lr_scheduler.step(epoch)
    return lrs


class _Toy(BaseModel):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, inputs, data_samples=None, mode='loss'):
        return dict(loss=self.linear(inputs).pow(2).mean())


class _RecordLR(Hook):
    def __init__(self) -> None:
        self.lrs: list[tuple[int, float]] = []

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        lrs = runner.optim_wrapper.get_lr()['lr']
        assert len(set(lrs)) == 1  # every parameter group (decay / no decay) at the same rate
        self.lrs.append((runner.epoch, lrs[0]))


def runner_epoch_lrs(config: Path, total_batch: int, tmp_path: Path, iters_per_epoch: int = 2) -> list[float]:
    """Train a toy model with the config's optimizer, schedule, epochs and ``auto_scale_lr`` (enabled, as
    ``--auto-scale-lr`` does) in mmengine's Runner; the rate of every epoch, checked constant within it."""
    from mmengine.runner import Runner

    cfg = Config.fromfile(str(config))
    loader = torch.utils.data.DataLoader(
        range(iters_per_epoch * total_batch), batch_size=total_batch, collate_fn=lambda _: dict(inputs=torch.ones(1, 2))
    )
    recorder = _RecordLR()
    runner = Runner(
        model=_Toy(),
        work_dir=str(tmp_path),
        experiment_name=f'{config.stem}-{total_batch}',
        train_dataloader=loader,
        optim_wrapper=cfg.optim_wrapper,
        param_scheduler=cfg.param_scheduler,
        train_cfg=dict(by_epoch=True, max_epochs=cfg.train_cfg.max_epochs, val_interval=10**6),
        auto_scale_lr=dict(cfg.auto_scale_lr, enable=True),
        default_hooks=dict(checkpoint=None, logger=dict(type='LoggerHook', interval=10**6)),
        custom_hooks=[recorder],
    )
    runner.train()
    epochs = cfg.train_cfg.max_epochs
    assert len(recorder.lrs) == epochs * iters_per_epoch
    per_epoch = [[lr for e, lr in recorder.lrs if e == epoch] for epoch in range(epochs)]
    assert all(len(set(lrs)) == 1 for lrs in per_epoch)  # constant within each epoch
    return [lrs[0] for lrs in per_epoch]


@pytest.mark.parametrize('epochs,total_batch', [(300, 2048), (450, 2048), (300, 256), (450, 4096)])
def test_imagenet_lr_of_every_epoch_is_the_authors(epochs, total_batch, tmp_path):
    """Both schedules, at the configs' batch and through --auto-scale-lr at others: the base rate scales
    with the batch, the warm-up start (1e-6) and the floor (1e-5) do not, as in main.py."""
    ours = runner_epoch_lrs(CLS / f'repvit-m1.1_8xb256-distill-{epochs}e_in1k.py', total_batch, tmp_path)
    theirs = authors_epoch_lrs(epochs, total_batch)
    assert rel_diff(ours, theirs) < 1e-6
    assert ours[0] == ours[1] == pytest.approx(1e-6)  # epoch 1 runs at timm's value for epoch 0
    peak = 1e-3 * total_batch / 512
    assert ours[2] == pytest.approx(1e-6 + (peak - 1e-6) / 5)
    assert ours[-1] == pytest.approx(1e-5 + (peak - 1e-5) / 2 * (1 + math.cos(math.pi * (epochs - 2) / epochs)))


def test_imagenet_warmup_values_named_in_the_recipe():
    """The 300-epoch schedule at 8 x 256 images, epochs 0-6: 1e-6, 1e-6, 8.0e-4, 1.6e-3, 2.4e-3, 3.2e-3,
    then the cosine at its fifth epoch (just under the 4e-3 peak)."""
    from mmengine.optim.scheduler import CosineAnnealingLR  # noqa: F401  (mmengine's schedulers registered)
    from mmengine.registry import PARAM_SCHEDULERS

    cfg = Config.fromfile(str(CLS / 'repvit-m1.1_8xb256-distill-300e_in1k.py'))
    optimizer = torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=cfg.optim_wrapper.optimizer.lr)
    [scheduler] = [
        PARAM_SCHEDULERS.build(dict(s, optimizer=optimizer, end=cfg.train_cfg.max_epochs)) for s in cfg.param_scheduler
    ]
    lrs = []
    for _ in range(7):
        lrs.append(optimizer.param_groups[0]['lr'])
        scheduler.step()
    expected = [
        1e-6,
        1e-6,
        8.008e-4,
        1.6006e-3,
        2.4004e-3,
        3.2002e-3,
        1e-5 + 0.5 * (4e-3 - 1e-5) * (1 + math.cos(math.pi * 5 / 300)),
    ]
    assert lrs == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize('warmup_t', [0, 3])
def test_epoch_end_cosine_matches_timm_for_other_settings(warmup_t):
    """The scheduler itself against timm's, for settings the configs do not use (no warm-up, 3 epochs)."""
    from timm.scheduler import CosineLRScheduler

    from repvit_mm.engine import EpochEndCosineLR

    theirs_opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    ours_opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    timm_sched = CosineLRScheduler(theirs_opt, t_initial=20, lr_min=1e-4, warmup_t=warmup_t, warmup_lr_init=1e-3)
    ours_sched = EpochEndCosineLR(ours_opt, t_initial=20, warmup_t=warmup_t, warmup_lr_init=1e-3, lr_min=1e-4)
    for epoch in range(20):
        assert ours_opt.param_groups[0]['lr'] == pytest.approx(theirs_opt.param_groups[0]['lr'], rel=1e-12)
        timm_sched.step(epoch)
        ours_sched.step()


# ------------------------------------------------------------------------------------------ mixed precision
def test_imagenet_configs_ask_for_mixed_precision_and_fall_back_to_fp32_on_cpu(monkeypatch):
    from mmengine.logging import MMLogger
    from mmengine.optim import build_optim_wrapper

    from repvit_mm.classification import AGCOptimWrapper, AmpAGCOptimWrapper

    cfg = Config.fromfile(str(CLS / 'repvit-m0.9_8xb256-distill-450e_in1k.py'))
    opt = cfg.optim_wrapper
    assert (opt.type, opt.loss_scale, opt.dtype) == ('AmpAGCOptimWrapper', 'dynamic', 'float16')
    assert opt.constructor == 'AmpWhereCUDAOptimWrapperConstructor'

    logger = MMLogger.get_current_instance()  # where the Runner's log goes while it trains
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    try:
        wrapper = build_optim_wrapper(_Toy(), cfg.optim_wrapper)
    finally:
        logger.removeHandler(handler)
    assert type(wrapper) is AGCOptimWrapper and wrapper.clip_grad_kwargs == {'clip_factor': 0.02}
    lines = [r.getMessage() for r in records if 'fp32' in r.getMessage()]
    assert len(lines) == 1 and 'AmpAGCOptimWrapper' in lines[0], lines
    assert [r.levelno for r in records if 'fp32' in r.getMessage()] == [logging.WARNING]

    # where CUDA is present the same config builds the mixed-precision wrapper (mmengine's CUDA check and
    # torch's are both answered yes here; nothing runs on the device)
    import mmengine.optim.optimizer.amp_optimizer_wrapper as amp_module

    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(amp_module, 'is_cuda_available', lambda: True)
    wrapper = build_optim_wrapper(_Toy(), cfg.optim_wrapper)
    assert type(wrapper) is AmpAGCOptimWrapper and wrapper.cast_dtype == torch.float16
    assert wrapper.clip_grad_kwargs == {'clip_factor': 0.02}


@pytest.mark.parametrize('foreach', [False, True])
def test_parameters_of_equal_settings_share_one_group_and_train_the_same(foreach):
    """The ImageNet configs' constructor: two groups (weight decay 0.025; none on 1-D parameters) where
    mmengine's default makes one per tensor (AdamW's multi-tensor kernels then run once per tensor: 72 ms of
    host time per step on an H100, 14 ms merged). Every parameter trains the same (AGC + AdamW, single-tensor
    and foreach kernels), and an optimizer state saved with one group per parameter loads and continues the
    same."""
    import copy

    from mmengine.optim import build_optim_wrapper
    from mmpretrain.registry import MODELS

    from repvit_mm.engine import fp32_optim_wrapper

    cfg = Config.fromfile(str(CLS / 'repvit-m0.9_8xb256-300e_in1k.py'))
    ours_cfg = copy.deepcopy(fp32_optim_wrapper(cfg.optim_wrapper))  # this CPU's twin, without the log line
    ours_cfg['optimizer']['foreach'] = foreach
    legacy_cfg = dict(copy.deepcopy(ours_cfg), constructor='DefaultOptimWrapperConstructor')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    models = {'ours': model, 'legacy': copy.deepcopy(model)}
    wrappers = {
        'ours': build_optim_wrapper(models['ours'], ours_cfg),
        'legacy': build_optim_wrapper(models['legacy'], legacy_cfg),
    }
    tensors = list(model.parameters())
    assert len(wrappers['legacy'].optimizer.param_groups) == len(tensors) > 300
    groups = wrappers['ours'].optimizer.param_groups
    assert [g['weight_decay'] for g in groups] == [0.025, 0.0]
    assert {id(p) for p in groups[1]['params']} == {id(p) for p in tensors if p.ndim <= 1}
    assert sum(len(g['params']) for g in groups) == len(tensors)

    gen = torch.Generator().manual_seed(1)
    batches = [(torch.randn(2, 3, 64, 64, generator=gen), torch.randint(1000, (2,), generator=gen)) for _ in range(3)]

    def step(name, batch):
        x, y = batch
        wrappers[name].update_params(nn.functional.cross_entropy(models[name](x, mode='tensor'), y))

    for batch in batches[:2]:
        step('ours', batch)
        step('legacy', batch)
    # resume: the legacy run's model and optimizer state, into a model built with our constructor
    models['resumed'] = copy.deepcopy(models['legacy'])
    wrappers['resumed'] = build_optim_wrapper(models['resumed'], ours_cfg)
    wrappers['resumed'].load_state_dict(copy.deepcopy(wrappers['legacy'].state_dict()))
    for name in models:
        step(name, batches[2])
    for name in ('legacy', 'resumed'):
        theirs = dict(models[name].named_parameters())
        differ = [n for n, p in model.named_parameters() if not torch.equal(p, theirs[n])]
        assert not differ, (name, differ[:3])


@pytest.mark.slow
def test_resume_from_a_run_saved_with_one_group_per_parameter(shapes_root, tmp_path):
    """A run saved by mmengine's default constructor (one group per parameter, as this project's earlier
    versions did for the ImageNet configs) resumes with the merged groups through the Runner: every AdamW
    state and the lr schedule carry on."""
    from repvit_mm.apis import load_config, prepare_train_cfg, train

    work = str(tmp_path / 'work')
    legacy_options = {
        **short_classifier_run(shapes_root),
        'optim_wrapper.constructor': 'DefaultOptimWrapperConstructor',
    }
    legacy = train(prepare_train_cfg(load_config(str(SHAPES_CFG), legacy_options), work_dir=work))
    assert len(legacy.optim_wrapper.optimizer.param_groups) > 300
    warmup = list(legacy.message_hub.get_scalar('train/lr').data[0])  # iterations 1 and 2 (linear warm-up)

    resumed = load_config(str(SHAPES_CFG), short_classifier_run(shapes_root, iters=3))  # its own constructor
    runner = train(prepare_train_cfg(resumed, work_dir=work, resume=str(tmp_path / 'work' / 'iter_2.pth')))
    optimizer = runner.optim_wrapper.optimizer
    assert [g['weight_decay'] for g in optimizer.param_groups] == [0.025, 0.0] and runner.iter == 3
    assert all(float(optimizer.state[p]['step']) == 3 for g in optimizer.param_groups for p in g['params'])
    lrs = list(runner.message_hub.get_scalar('train/lr').data[0])
    assert lrs[:2] == warmup and lrs[2] > warmup[1], (warmup, lrs)  # the warm-up goes on, not over again


def test_no_amp_and_amp_options(tmp_path):
    from repvit_mm.engine.precision import fp32_optim_wrapper

    config = CLS / 'repvit-m0.9_8xb256-distill-300e_in1k.py'
    # what prepare_train_cfg(amp=False), i.e. tools/train.py --no-amp, does
    wrapper = fp32_optim_wrapper(Config.fromfile(str(config)).optim_wrapper)
    assert wrapper['type'] == 'AGCOptimWrapper'
    assert not {'loss_scale', 'dtype'} & set(wrapper)
    assert wrapper['clip_grad']['clip_factor'] == 0.02 and wrapper['optimizer']['lr'] == 4e-3

    proc = run_tool('train.py', config, '--amp', '--no-amp', check=False)
    assert proc.returncode == 2 and 'not allowed with argument' in proc.stderr, proc.stderr
    if not torch.cuda.is_available():  # --amp reaches prepare_train_cfg(amp=True), which needs a GPU
        proc = run_tool('train.py', config, '--amp', '--work-dir', tmp_path / 'w', check=False)
        assert_one_line_error(proc, '--amp needs a CUDA GPU')
    assert not (tmp_path / 'w').exists()


def _amp_agc_wrapper(monkeypatch, model: nn.Module, scale: float):
    """The config's ``AmpAGCOptimWrapper`` driven on a CPU. mmengine refuses to build it without a GPU and
    its default scaler is CUDA's; both are device checks, not arithmetic: the wrapper's backward (scale the
    loss) and step (unscale, clip, step, update) are what runs on a GPU. So the check is bypassed and the
    scaler replaced by torch's CPU GradScaler, the same class and algorithm on another device."""
    import mmengine.optim.optimizer.amp_optimizer_wrapper as amp_module

    from repvit_mm.classification import AmpAGCOptimWrapper

    monkeypatch.setattr(amp_module, 'is_cuda_available', lambda: True)
    wrapper = AmpAGCOptimWrapper(
        optimizer=torch.optim.SGD(model.parameters(), lr=1.0),
        clip_grad=dict(type='agc', clip_factor=0.02),
        loss_scale='dynamic',
    )
    wrapper.loss_scaler = torch.amp.GradScaler('cpu', init_scale=scale)
    return wrapper


def test_agc_clips_the_unscaled_gradients_under_mixed_precision(monkeypatch):
    """One step with a loss scaled by 2**12 ends where an fp32 step with AGC on the true gradients ends
    (what timm's NativeScaler does: unscale_, clip, step); clipping the scaled gradients would not."""
    from timm.utils import adaptive_clip_grad

    torch.manual_seed(0)
    x = torch.randn(8, 4)
    target = torch.randn(8, 3) * 50  # large gradients: AGC clips most rows

    def loss_of(model):
        return (model(x) - target).pow(2).mean()

    reference = nn.Linear(4, 3)
    scaled = nn.Linear(4, 3)
    scaled.load_state_dict(reference.state_dict())
    start = {k: v.clone() for k, v in reference.state_dict().items()}

    loss_of(reference).backward()
    true_grad = reference.weight.grad.clone()
    adaptive_clip_grad(list(reference.parameters()), clip_factor=0.02)
    assert not torch.allclose(reference.weight.grad, true_grad)  # the test needs AGC to act
    with torch.no_grad():
        for p in reference.parameters():
            p -= p.grad

    scale = 2.0**12
    wrapper = _amp_agc_wrapper(monkeypatch, scaled, scale)
    wrapper.backward(loss_of(scaled))
    torch.testing.assert_close(scaled.weight.grad, true_grad * scale)  # the backward pass saw the scaled loss
    wrapper.step()
    for name, param in scaled.named_parameters():
        torch.testing.assert_close(param.detach(), reference.state_dict()[name], rtol=1e-5, atol=1e-7)
    assert wrapper.loss_scaler.get_scale() == scale  # finite gradients: the step was taken, scale kept

    # What clipping before unscaling would give: every clipped row lands 2**12 times closer to its start.
    wrong = true_grad * scale
    wrong_weight = nn.Parameter(start['weight'].clone())
    wrong_weight.grad = wrong
    adaptive_clip_grad([wrong_weight], clip_factor=0.02)
    assert not torch.allclose(start['weight'] - wrong_weight.grad / scale, scaled.weight.detach(), atol=1e-4)


# ------------------------------------------------------------------------------------------ random erasing
def _preprocessor(**overrides):
    from mmengine.registry import DefaultScope
    from mmpretrain.registry import MODELS

    cfg = Config.fromfile(str(CLS / 'repvit-m0.9_8xb256-distill-300e_in1k.py'))
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        return MODELS.build(dict(cfg.data_preprocessor, num_classes=3, **overrides))


def _batch(n: int, size: int, seed: int = 0) -> dict:
    from mmpretrain.structures import DataSample

    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), generator=gen, dtype=torch.uint8)
    return dict(inputs=images, data_samples=[DataSample().set_gt_label(i % 3) for i in range(n)])


def _normalised(batch: dict) -> torch.Tensor:
    return (batch['inputs'].flip(1).float() - MEAN) / STD  # BGR uint8 -> RGB, normalised


def test_random_erasing_config_is_the_authors():
    from repvit_mm.classification import ErasingClsDataPreprocessor

    cfg = Config.fromfile(str(CLS / 'repvit-m0.9_8xb256-distill-300e_in1k.py'))
    assert cfg.data_preprocessor.random_erasing == dict(probability=0.25, mode='pixel', max_count=1)
    assert not any(t.type == 'RandomErasing' for t in cfg.train_dataloader.dataset.pipeline)
    preprocessor = _preprocessor()
    assert isinstance(preprocessor, ErasingClsDataPreprocessor)
    eraser = preprocessor.batch_augments._eraser(torch.device('cpu'))
    assert (eraser.probability, eraser.mode, eraser.min_count, eraser.max_count) == (0.25, 'pixel', 1, 1)
    assert (eraser.min_area, eraser.max_area) == (0.02, 1 / 3)


def test_random_erasing_fills_normalised_pixels_with_unclipped_standard_normals():
    random.seed(0), torch.manual_seed(0)  # timm draws boxes with `random`, fills with torch
    preprocessor = _preprocessor(random_erasing=dict(probability=1.0, mode='pixel', max_count=1))
    batch = _batch(64, 48)
    plain = _normalised(batch)
    erased = preprocessor(dict(batch, inputs=batch['inputs'].clone()), training=True)['inputs']
    changed = (erased != plain).any(1)  # (N, H, W): pixels replaced by the erasing
    fills = []
    for image, mask in zip(erased, changed, strict=True):
        rows, cols = mask.any(1).nonzero()[:, 0], mask.any(0).nonzero()[:, 0]
        box = mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        assert box.all() and box.sum() == mask.sum()  # one rectangle per image
        assert 0.01 < box.numel() / mask.numel() < 0.4  # 2-33 % of the image, up to rounding
        fills.append(image[:, mask].flatten())
    fills = torch.cat(fills)
    assert fills.numel() > 20000
    assert abs(fills.mean()) < 0.03 and abs(fills.std() - 1) < 0.03  # N(0, 1) in normalised units
    # not clipped to what a uint8 pixel can express ((0 - mean) / std .. (255 - mean) / std, about +-2.1):
    lowest, highest = float(((0 - MEAN) / STD).max()), float(((255 - MEAN) / STD).min())
    outside = ((fills < lowest) | (fills > highest)).float().mean()
    assert 0.02 < outside < 0.06  # N(0, 1) puts ~3.6 % of values beyond -2.1 / +2.2
    assert fills.abs().max() > 3
    # validation and test batches are left alone
    torch.testing.assert_close(preprocessor(batch, training=False)['inputs'], plain)


def test_random_erasing_probability_is_per_image():
    random.seed(1), torch.manual_seed(1)
    preprocessor = _preprocessor()  # the config's probability 0.25
    batch = _batch(800, 16, seed=1)
    erased = preprocessor(batch, training=True)['inputs']
    share = (erased != _normalised(batch)).flatten(1).any(1).float().mean()
    assert 0.19 < share < 0.31  # 0.25 +- 3.9 standard deviations


def test_random_erasing_comes_before_mixup(monkeypatch):
    """The mix receives the erased, normalised batch, and its output is what the model gets."""
    from mmpretrain.models.utils.batch_augments import Mixup

    seen = {}
    original = Mixup.__call__

    def spy(self, inputs, batch_score):
        seen['inputs'] = inputs.clone()
        seen['output'] = original(self, inputs, batch_score)
        return seen['output']

    monkeypatch.setattr(Mixup, '__call__', spy)
    random.seed(2), torch.manual_seed(2)
    preprocessor = _preprocessor(
        random_erasing=dict(probability=1.0, mode='pixel', max_count=1),
        batch_augments=dict(augments=[dict(type='Mixup', alpha=0.8)]),
    )
    batch = _batch(16, 32, seed=2)
    plain = _normalised(batch)
    out = preprocessor(batch, training=True)
    mixed_input = seen['inputs']
    erased = (mixed_input != plain).any(1)  # (N, H, W)
    assert erased.flatten(1).any(1).all()  # every image was erased before the mix saw it
    fills = mixed_input.permute(1, 0, 2, 3)[:, erased]
    assert abs(fills.mean()) < 0.1 and abs(fills.std() - 1) < 0.1  # N(0, 1) on the normalised images
    torch.testing.assert_close(out['inputs'], seen['output'][0])  # nothing happens after the mix
    assert all(s.gt_score.shape == (3,) for s in out['data_samples'])  # mixed soft labels


# ------------------------------------------------------------------------------------------ COCO, ADE20K
def drive_iter_schedule(cfg: Config, iters_per_epoch: int, epochs: int, base_lr: float) -> list[float]:
    """Build the config's param schedulers on an optimizer and step them as mmengine's ParamSchedulerHook
    does (iteration schedules after every iteration, epoch schedules after every epoch); the rate of every
    training iteration."""
    from types import SimpleNamespace

    from mmengine.hooks import ParamSchedulerHook
    from mmengine.registry import PARAM_SCHEDULERS

    optimizer = torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=base_lr)
    schedulers = [PARAM_SCHEDULERS.build(dict(s, optimizer=optimizer)) for s in cfg.param_scheduler]
    hook, runner = ParamSchedulerHook(), SimpleNamespace(param_schedulers=schedulers)
    lrs = []
    for _ in range(epochs):
        for i in range(iters_per_epoch):
            lrs.append(optimizer.param_groups[0]['lr'])
            hook.after_train_iter(runner, i)
        hook.after_train_epoch(runner)
    return lrs


@pytest.mark.parametrize('iters_per_epoch', [7330, 45])  # COCO at 16 images; a warm-up across the steps
def test_coco_schedule_is_the_authors_schedule_1x(iters_per_epoch):
    """mmdet 2's schedule_1x as mmcv runs it: lr x 0.1 ** (steps passed: 8, 11), times
    1e-6 + (1 - 1e-6) * i / 500 during the first 500 iterations."""
    cfg = Config.fromfile(str(COCO_CFG))
    base = cfg.optim_wrapper.optimizer.lr
    ours = drive_iter_schedule(cfg, iters_per_epoch, cfg.train_cfg.max_epochs, base)
    theirs = []
    for it in range(iters_per_epoch * 12):
        regular = base * 0.1 ** sum(it // iters_per_epoch >= s for s in (8, 11))
        theirs.append(regular * (1 - (1 - it / 500) * (1 - 1e-6)) if it < 500 else regular)
    assert rel_diff(ours, theirs) < 1e-6
    assert ours[0] == pytest.approx(2e-10)
    assert cfg.randomness.seed == 0 and not cfg.randomness.get('diff_rank_seed', False)


def test_ade20k_schedule_is_the_authors_poly():
    """mmcv's poly: (lr - 1e-6) * (1 - i / 40000) ** 0.9 + 1e-6 at every one of the 40k iterations."""
    cfg = Config.fromfile(str(ADE20K_CFG))
    base = cfg.optim_wrapper.optimizer.lr
    ours = drive_iter_schedule(cfg, cfg.train_cfg.max_iters, 1, base)
    theirs = [(base - 1e-6) * (1 - i / 40000) ** 0.9 + 1e-6 for i in range(40000)]
    assert rel_diff(ours, theirs) < 1e-6
    assert cfg.get('randomness') is None or cfg.randomness.get('seed') is None  # theirs: no --seed either


# ------------------------------------------------------------------------------------------ model EMA
def test_ema_is_off_by_default():
    for config in (
        CLS / 'repvit-m0.9_8xb256-distill-300e_in1k.py',
        CLS / 'repvit-m0.9_8xb256-300e_in1k.py',
        COCO_CFG,
        ADE20K_CFG,
    ):
        hooks = Config.fromfile(str(config)).get('custom_hooks') or []
        assert not any(h.type == 'EMAHook' for h in hooks), config


@pytest.mark.slow
def test_ema_fragment_trains_and_is_kept_in_the_checkpoint(shapes_root, tmp_path):
    """The Shapes classifier with the EMA fragment in its _base_: 3 iterations, then the checkpoint holds
    the averaged weights as its state_dict (what load_checkpoint reads) and the raw ones beside them."""
    from mmengine.hooks import EMAHook
    from mmengine.runner import load_checkpoint

    from repvit_mm.apis import load_config, prepare_train_cfg, train
    from repvit_mm.utils import safe_torch_load

    config = tmp_path / 'shapes_ema.py'
    config.write_text(f'_base_ = [{str(SHAPES_CFG)!r}, {str(EMA_FRAGMENT)!r}]\n')
    data = str(shapes_root / 'imagenet')
    cfg = load_config(
        str(config),
        {
            'train_dataloader.dataset.data_root': data,
            'val_dataloader.dataset.data_root': data,
            'train_dataloader.batch_size': 4,
            'train_cfg.max_iters': 3,
            'train_cfg.val_interval': 10,
            'default_hooks.checkpoint.interval': 3,
            'param_scheduler.0.end': 2,
            'param_scheduler.1.begin': 2,
            'param_scheduler.1.end': 3,
        },
    )
    runner = train(prepare_train_cfg(cfg, work_dir=str(tmp_path / 'work')))
    [ema_hook] = [h for h in runner.hooks if isinstance(h, EMAHook)]
    assert ema_hook.ema_model.momentum == pytest.approx(1 - 0.99996) and ema_hook.ema_model.update_buffers

    ckpt = safe_torch_load(str(tmp_path / 'work' / 'iter_3.pth'))
    ema = {k.removeprefix('module.'): v for k, v in ckpt['ema_state_dict'].items() if k != 'steps'}
    assert int(ckpt['ema_state_dict']['steps']) == 3
    model_state = runner.model.state_dict()
    assert ema.keys() == ckpt['state_dict'].keys() == model_state.keys()
    moved = 0
    for key, raw in model_state.items():
        # mmengine's layout: 'state_dict' holds the averaged weights, 'ema_state_dict' the trained ones
        torch.testing.assert_close(ema[key], raw)
        torch.testing.assert_close(ckpt['state_dict'][key], ema_hook.ema_model.module.state_dict()[key])
        moved += raw.is_floating_point() and not torch.equal(ckpt['state_dict'][key], raw)
    assert moved > 10  # three steps moved the weights; the average (decay 0.99996) barely followed
    model = runner.model
    load_checkpoint(model, str(tmp_path / 'work' / 'iter_3.pth'), map_location='cpu')
    for key, value in model.state_dict().items():  # a plain load gets the averaged weights
        torch.testing.assert_close(value, ckpt['state_dict'][key])
