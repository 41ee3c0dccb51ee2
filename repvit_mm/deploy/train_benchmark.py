"""Training speed of a repvit-mm config: one step (forward, backward, optimizer step) per timed run.

Paths (rows), all on the same synthetic batch:

- ``timm_bare``: ``timm.create_model('repvit_<arch>')`` in a bare torch loop (cross-entropy on the logits,
  AdamW): the reference every ratio is taken against; classification configs of an arch timm has;
- ``bare``: our classifier (the config's model, class logits) in the same bare loop;
- ``authors_loop``: the RepViT authors' own training step (their ``main.py`` / ``engine.py`` /
  ``losses.py``: timm's model, Mixup/CutMix, soft-target cross-entropy, their DistillationLoss with the
  config's teacher for a distillation config, AdamW, timm's NativeScaler with AGC 0.02, autocast on CUDA),
  :mod:`repvit_mm.deploy.authors_loop`; classification configs of an arch timm has;
- ``runner``: what ``tools/train.py`` runs per iteration: the config's model, its data preprocessor (batch
  augments such as Mixup/CutMix included) and its ``optim_wrapper`` (AGC where the config has it), built
  with mmengine's builders, one ``model.train_step(data, optim_wrapper)`` per step, on uint8 images and
  ground truth as the data loader would give them (class labels; boxes, labels and masks; label maps);
- ``runner_channels_last``: ``runner`` with ``model.backbone.channels_last=True``;
- ``runner_compile``: ``runner`` with ``compile=True`` as the Runner applies it (plain-dict parameter groups
  and an eager data preprocessor, :mod:`repvit_mm.engine.compile`, then
  ``model.train_step = torch.compile(model.train_step)``); warm-up absorbs the compilation;
- ``runner_amp``: ``runner`` with ``tools/train.py --amp`` (mixed precision; CUDA only).

A distillation config's teacher runs in the ``runner`` rows as in training; without its weights file it
gets random weights (the same cost). Data loading is not timed (see the data-loader settings of a config).
Timing reuses :mod:`repvit_mm.deploy.benchmark`: warm-up steps, then ``repeats`` interleaved rounds, one
timed step per path and round; median, 25th-75th percentile, images/s, and ``vs_timm_bare`` (time of
``timm_bare`` / time of the row), ``vs_bare`` and ``vs_authors_loop``.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import torch
import torch.nn.functional as F
from mmengine.config import Config
from torch import nn

from ..engine.compile import prepare_compiled_train_step
from ..engine.precision import amp_twin
from ..models.build import build_model
from ..utils.errors import UserInputError
from .authors_loop import authors_train_step
from .benchmark import Row, _machine, _time_batch
from .model import read_config, task_of

__all__ = ['TRAIN_PATHS', 'TRAIN_TARGETS', 'train_benchmark', 'format_train_table', 'synthetic_batch']

TRAIN_PATHS = (
    'timm_bare',
    'bare',
    'authors_loop',
    'runner',
    'runner_channels_last',
    'runner_compile',
    'runner_amp',
)
#: Rows that exist for classification configs only.
CLASSIFIER_PATHS = ('timm_bare', 'bare', 'authors_loop')
#: The reference rows every row gets a ``vs_<reference>`` ratio to.
REFERENCES = ('timm_bare', 'bare', 'authors_loop')
#: (description, path, minimum speed relative to ``reference``, reference path).
TRAIN_TARGETS = (
    ('bare >= 1.15x timm_bare', 'bare', 1.15, 'timm_bare'),
    ('runner within 5% of bare', 'runner', 0.95, 'bare'),
    ('runner >= authors_loop', 'runner', 1.0, 'authors_loop'),
    ('runner_compile >= 1.3x bare', 'runner_compile', 1.3, 'bare'),
)


# ----------------------------------------------------------------------------------------- synthetic data
def _num_classes(cfg: Config, task: str) -> int:
    model = cfg.model
    if task == 'classification':
        return int(model.head.num_classes)
    if task == 'detection':
        return int(model.roi_head.bbox_head.num_classes)
    return int(model.decode_head.num_classes)


def synthetic_batch(cfg: Config, batch_size: int, shape: tuple[int, int], seed: int = 0) -> dict[str, Any]:
    """A training batch as the config's data loader would give it to ``model.train_step``: uint8 BGR images
    ``(3, H, W)``, as a list (mmengine's ``pseudo_collate``) or stacked ``(N, 3, H, W)`` where the config's
    ``train_dataloader.collate_fn`` is ``default_collate``, and data samples with random ground truth (class
    labels; three boxes with labels and box masks per image; label maps with ``ignore_index`` 255 borders)."""
    task = task_of(cfg)
    h, w = shape
    gen = torch.Generator().manual_seed(seed)
    num_classes = _num_classes(cfg, task)
    inputs = [torch.randint(0, 256, (3, h, w), generator=gen, dtype=torch.uint8) for _ in range(batch_size)]
    meta = dict(img_shape=(h, w), ori_shape=(h, w), scale_factor=(1.0, 1.0), flip=False, flip_direction=None)
    samples: list[Any] = []
    for _ in range(batch_size):
        if task == 'classification':
            from mmpretrain.structures import DataSample

            samples.append(DataSample(metainfo=meta).set_gt_label(int(torch.randint(num_classes, (1,), generator=gen))))
        elif task == 'detection':
            samples.append(_det_sample(meta, num_classes, gen))
        else:
            from mmengine.structures import PixelData
            from mmseg.structures import SegDataSample

            labels = torch.randint(num_classes, (1, h, w), generator=gen)
            labels[..., : max(h // 16, 1), :] = 255  # an ignored border, as padding gives
            sample = SegDataSample(metainfo=meta)
            sample.gt_sem_seg = PixelData(data=labels)
            samples.append(sample)
    collate = (cfg.get('train_dataloader') or {}).get('collate_fn') or {}
    if collate.get('type') in ('default_collate', 'mmengine.default_collate'):
        return dict(inputs=torch.stack(inputs), data_samples=samples)
    return dict(inputs=inputs, data_samples=samples)


def _det_sample(meta: dict, num_classes: int, gen: torch.Generator, num_boxes: int = 3):
    import numpy as np
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData

    h, w = meta['img_shape']
    xy = torch.rand(num_boxes, 2, generator=gen) * torch.tensor([w * 0.6, h * 0.6])
    size = (0.2 + 0.2 * torch.rand(num_boxes, 2, generator=gen)) * torch.tensor([w, h])
    boxes = torch.cat([xy, xy + size], dim=1).round()
    masks = np.zeros((num_boxes, h, w), dtype=np.uint8)
    for i, (x1, y1, x2, y2) in enumerate(boxes.int().tolist()):
        masks[i, y1:y2, x1:x2] = 1
    sample = DetDataSample(metainfo=meta)
    sample.gt_instances = InstanceData(
        bboxes=boxes, labels=torch.randint(num_classes, (num_boxes,), generator=gen), masks=BitmapMasks(masks, h, w)
    )
    sample.ignored_instances = InstanceData(bboxes=torch.zeros(0, 4), labels=torch.zeros(0, dtype=torch.long))
    return sample


# ----------------------------------------------------------------------------------------- models
def _build_train_model(cfg: Config, channels_last: bool = False) -> nn.Module:
    """``cfg.model`` as the Runner builds it for training (data preprocessor, teacher, SyncBN reverted to
    BN as mmengine does outside distributed runs), in train mode."""
    cfg = copy.deepcopy(cfg)
    teacher = cfg.model.get('teacher')
    if teacher and not teacher.get('random_init') and not os.path.isfile(str(teacher.get('checkpoint'))):
        teacher.random_init, teacher.checkpoint = True, None  # the same cost without the weights file
    if channels_last:
        cfg.model.backbone.channels_last = True
    return build_model(cfg, teacher=True).train()


def _timm_model(arch: str, num_classes: int, distillation: bool) -> nn.Module:
    import timm

    name = f'repvit_{arch}'
    if name not in timm.list_models('repvit_*'):
        raise LookupError(f'timm has no {name}')
    return timm.create_model(name, pretrained=False, num_classes=num_classes, distillation=distillation).train()


class _Logits(nn.Module):
    """Our classifier as a tensor model: images -> class logits (two heads averaged, as timm's model)."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.classifier(x, mode='tensor')
        return (out[0] + out[1]) / 2 if isinstance(out, tuple) else out


def _bare_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    """One step of a plain torch training loop: cross-entropy, backward, AdamW."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.025)

    def step() -> None:
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def _runner_step(
    model: nn.Module, cfg: Config, data: dict[str, Any], compile: bool = False
) -> tuple[Callable[[], None], str]:
    """``model.train_step(data, optim_wrapper)`` with the config's optim wrapper, as the Runner's train loop
    calls it; ``compile`` applies mmengine's ``compile=True`` (``Runner._maybe_compile('train_step')``)."""
    from mmengine.logging import MMLogger
    from mmengine.optim import build_optim_wrapper

    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel('WARNING')  # not one line per parameter group for every row
    try:
        optim_wrapper = build_optim_wrapper(model, copy.deepcopy(cfg.optim_wrapper))
    finally:
        logger.setLevel(level)
    if compile:  # as the Runner does it (repvit_mm.apis.build_runner adds CompileTrainStepHook)
        prepare_compiled_train_step(model, optim_wrapper)
        model.train_step = torch.compile(model.train_step)

    def step() -> None:
        model.train_step(data, optim_wrapper)

    return step, type(optim_wrapper).__name__


def _amp_cfg(cfg: Config) -> Config:
    """The config with its optim wrapper's mixed-precision twin, as ``tools/train.py --amp`` sets it."""
    cfg = copy.deepcopy(cfg)
    cfg.optim_wrapper.type = amp_twin(cfg.optim_wrapper.get('type', 'OptimWrapper'))
    cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    return cfg


def _path_runner(
    path: str, cfg: Config, arch: str | None, shape: tuple[int, int], dev: torch.device
) -> Callable[[int], tuple[Callable[[], None], str]]:
    """``batch_size -> (zero-argument function running one training step, note)`` for ``path``."""

    def make(bs: int) -> tuple[Callable[[], None], str]:
        task = task_of(cfg)
        if path in CLASSIFIER_PATHS and task != 'classification':
            raise RuntimeError(f'a {task} config is timed through its runner rows only')
        gen = torch.Generator().manual_seed(bs)
        if path == 'authors_loop':
            if arch is None:
                raise RuntimeError('the config gives no RepViT arch name to look up in timm')
            step, note, _ = authors_train_step(cfg, arch, synthetic_batch(cfg, bs, shape, seed=bs), dev)
            return step, note
        if path in CLASSIFIER_PATHS:
            num_classes = _num_classes(cfg, task)
            x = torch.randn(bs, 3, *shape, generator=gen).to(dev)
            y = torch.randint(num_classes, (bs,), generator=gen).to(dev)
            if path == 'timm_bare':
                if arch is None:
                    raise RuntimeError('the config gives no RepViT arch name to look up in timm')
                distill = bool(cfg.model.head.get('distillation', False))
                return _bare_step(_timm_model(arch, num_classes, distill).to(dev), x, y), f'timm repvit_{arch}'
            model = _Logits(_build_train_model(cfg)).to(dev)
            return _bare_step(model, x, y), ''
        if path == 'runner_amp' and dev.type != 'cuda':
            raise RuntimeError('mixed precision (AmpOptimWrapper) needs a CUDA device')
        run_cfg = _amp_cfg(cfg) if path == 'runner_amp' else cfg
        model = _build_train_model(run_cfg, channels_last=path == 'runner_channels_last').to(dev)
        data = synthetic_batch(cfg, bs, shape, seed=bs)
        step, wrapper = _runner_step(model, run_cfg, data, compile=path == 'runner_compile')
        notes = [wrapper]
        if getattr(model, 'teacher', None) is not None:
            notes.append(f'teacher {cfg.model.teacher.name} included')
        return step, ', '.join(notes)

    return make


# ----------------------------------------------------------------------------------------- benchmark
def train_benchmark(
    config: str | os.PathLike | Config,
    *,
    shape: tuple[int, int] = (224, 224),
    batch_size: int = 32,
    repeats: int = 10,
    warmup: int = 2,
    device: str = 'cpu',
    threads: int | None = None,
    paths: tuple[str, ...] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Time one training step of every path in ``paths`` (default: every path the config and device
    allow); see the module docstring.

    Returns:
        ``{'machine', 'settings', 'model', 'rows': [{'path', 'batch', 'median_ms', 'images_per_s',
        'vs_timm_bare', 'vs_bare', ...}, ...], 'targets': [...]}``.
    """
    say = progress or (lambda message: None)
    cfg = read_config(config)
    task = task_of(cfg)
    if paths is None:
        paths = tuple(
            p
            for p in TRAIN_PATHS
            if (task == 'classification' or p not in CLASSIFIER_PATHS)
            and (p != 'runner_amp' or device.startswith('cuda'))
        )
    unknown = [p for p in paths if p not in TRAIN_PATHS]
    if unknown:
        raise UserInputError(f'unknown training path(s) {", ".join(unknown)}; choose from {", ".join(TRAIN_PATHS)}')
    if batch_size < 1 or repeats < 1 or warmup < 0:
        raise UserInputError('batch size and repeats must be positive, warm-up not negative')
    if min(shape) < 32:
        raise UserInputError(f'--shape {shape[0]} {shape[1]}: training needs at least 32x32 images')
    if device.startswith('cuda') and not torch.cuda.is_available():
        raise UserInputError('--device cuda: no CUDA device is available')
    threads = threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    from ..models.backbones.repvit import normalize_arch_name

    arch = cfg.model.get('backbone', {}).get('arch')
    arch = normalize_arch_name(arch) if isinstance(arch, str) else None

    dev = torch.device(device)
    if dev.type == 'cuda':  # as the authors' main.py and the configs' env_cfg (cudnn_benchmark=True)
        torch.backends.cudnn.benchmark = True
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == 'cuda' else (lambda: None)
    runners = {path: _path_runner(path, cfg, arch, shape, dev) for path in paths}
    rows = _time_batch(runners, batch_size, warmup, repeats, sync, None, say, inference=False, untimed_runs=0)
    table = [_train_row(r, rows) for r in rows]
    return {
        'machine': _machine(device, threads),
        'settings': {
            'shape': list(shape),
            'batch_size': batch_size,
            'repeats': repeats,
            'warmup': warmup,
            'device': device,
            'threads': threads,
        },
        'model': {
            'config': str(cfg.filename),
            'arch': arch,
            'task': task,
            'optim_wrapper': cfg.optim_wrapper.get('type', 'OptimWrapper'),
        },
        'rows': table,
        'targets': _targets(table),
    }


def _train_row(row: Row, rows: list[Row]) -> dict[str, Any]:
    speed = {r.path: r.median_ms for r in rows if r.status == 'ok'}
    out = {k: v for k, v in asdict(row).items() if k not in ('batch_size', 'gflops_per_s', 'vs_timm')}
    out = {'path': out.pop('path'), 'batch': row.batch_size, **out}
    for ref in REFERENCES:
        out[f'vs_{ref}'] = speed[ref] / row.median_ms if row.status == 'ok' and speed.get(ref) else None
    return out


def _targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ms = {r['path']: r['median_ms'] for r in rows if r['status'] == 'ok'}
    return [
        {
            'target': name,
            'path': path,
            'reference': ref,
            'ratio': ms[ref] / ms[path],
            'minimum': minimum,
            'met': ms[ref] / ms[path] >= minimum,
        }
        for name, path, minimum, ref in TRAIN_TARGETS
        if path in ms and ref in ms
    ]


def format_train_table(result: dict[str, Any]) -> str:
    """The training benchmark as a Markdown table, with the machine, the model and the targets."""
    m, s, model = result['machine'], result['settings'], result['model']
    h, w = s['shape']
    lines = [
        f'training step of {os.path.basename(model["config"])} ({model["task"]}, RepViT-{model["arch"]}), '
        f'batch {s["batch_size"]} at {h}x{w}; device {s["device"]}, {s["threads"]} threads, '
        f'{s["repeats"]} timed steps per path after {s["warmup"]} warm-up',
        f'machine: {m.get("gpu") or m["cpu"]} ({m["cpu_count"]} cores), torch {m["torch"]}, timm {m.get("timm", "-")}',
        '',
        '| path | median ms | p25-p75 ms | images/s | vs timm_bare | vs bare | vs authors_loop | note |',
        '|---|---:|---:|---:|---:|---:|---:|---|',
    ]
    for r in result['rows']:
        if r['status'] != 'ok':
            lines.append(f'| {r["path"]} | skipped | | | | | | {r["note"]} |')
            continue
        ratios = ' | '.join(f'{r[k]:.2f}x' if r[k] is not None else '-' for k in [f'vs_{x}' for x in REFERENCES])
        lines.append(
            f'| {r["path"]} | {r["median_ms"]:.1f} | {r["p25_ms"]:.1f}-{r["p75_ms"]:.1f} | '
            f'{r["images_per_s"]:.1f} | {ratios} | {r["note"]} |'
        )
    if result['targets']:
        lines.append('')
        for t in result['targets']:
            lines.append(f'target {t["target"]}: {t["ratio"]:.2f}x {"met" if t["met"] else "NOT met"}')
    return '\n'.join(lines)
