"""Inference speed of a repvit-mm model along every deploy path, next to timm's own fused RepViT.

Paths (rows, one per batch size):

- ``unfused``: the training structure (every BatchNorm and branch), eager PyTorch;
- ``fused``: after :func:`repvit_mm.models.reparam.switch_to_deploy`, eager PyTorch;
- ``fused_channels_last``: the fused model and its input in channels-last memory format;
- ``torch_compile``: the fused model through ``torch.compile`` (inductor, weights frozen as constants,
  one graph per batch size); skipped with a note if it cannot compile on this machine;
- ``onnxruntime``: the fused graph exported by :func:`~repvit_mm.deploy.export_onnx.export_tensor_model`
  (constants folded, squeeze-and-excitation in ONNX Runtime's blocked layout) run by ONNX Runtime with
  every graph optimisation on, one intra-op thread per core and, per batch size, a session with the
  batch axis fixed;
- ``onnxruntime_int8``: that graph quantized statically to INT8 (QDQ, per-channel weights,
  :func:`~repvit_mm.deploy.quantize.quantize_int8`'s settings) on random calibration batches (the weights
  are random too: speed does not depend on either), run by the same session settings;
- ``timm_fused``: ``timm.create_model('repvit_<arch>')`` after timm's own ``fuse()``: the reference
  every ratio is taken against;
- ``timm_onnxruntime``: that timm model exported by hand (``torch.onnx.export`` as is) and run by the
  same ONNX Runtime session settings: what a user gets without this toolkit's export.

Each path runs ``warmup`` untimed forward passes on a fixed random batch; then ``repeats`` rounds each
run every path twice and time the second pass (the paths interleave, so that load from other processes
affects them alike). The table gives the median time, its spread (25th-75th percentile), throughput
(images/s), the GFLOP/s achieved (2 FLOPs per MAC of the fused model) and the speed relative to timm's
fused model at the same batch size. Batch 1's median is the latency.

A classifier is timed whole (``backbone_only``: its backbone); a segmentor whole by default (backbone,
neck, decode head and the resize to the input size, :class:`~repvit_mm.deploy.model.SegmentorOutput`)
or as its backbone (``backbone_only``); a Mask R-CNN whole by default, one image per run (what
``tools/export_onnx.py`` exports: :class:`~repvit_mm.deploy.detector_onnx.DetectorOutput`; its rows at
other batch sizes are skipped) or as its backbone. timm has neither a segmentor nor a detector, so its
rows are skipped for whole dense models. A whole detector's MACs count its convolutions and linear
layers (the NMS and RoIAlign glue is not counted).
"""

from __future__ import annotations

import contextlib
import copy
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from mmengine.config import Config
from torch import nn

from .model import LoadedModel, check_export_memory, fused_copy, load_model, tensor_model

#: ``batch_size -> (zero-argument function running one forward pass, note)``
Runner = Callable[[int], tuple[Callable[[], Any], str]]

__all__ = ['PATHS', 'DEPLOY_PATHS', 'TARGETS', 'Row', 'benchmark', 'format_table', 'timm_reference']

PATHS = (
    'unfused',
    'fused',
    'fused_channels_last',
    'torch_compile',
    'onnxruntime',
    'onnxruntime_int8',
    'timm_fused',
    'timm_onnxruntime',
)
#: What "best deploy path" is chosen from.
DEPLOY_PATHS = ('fused', 'fused_channels_last', 'torch_compile', 'onnxruntime', 'onnxruntime_int8')
#: (description, path or 'best', batch size, minimum speed relative to ``reference``, reference path).
TARGETS = (
    ('fused eager >= 1.0x timm fused', 'fused', 1, 1.0, 'timm_fused'),
    ('fused eager >= 1.0x timm fused', 'fused', 32, 1.0, 'timm_fused'),
    ('best deploy path >= 4x timm fused', 'best', 1, 4.0, 'timm_fused'),
    ('best deploy path >= 1.7x timm fused', 'best', 32, 1.7, 'timm_fused'),
    ('onnxruntime >= 1.0x timm exported by hand', 'onnxruntime', 1, 1.0, 'timm_onnxruntime'),
    ('onnxruntime >= 1.0x timm exported by hand', 'onnxruntime', 32, 1.0, 'timm_onnxruntime'),
    ('onnxruntime_int8 >= 1.5x onnxruntime fp32', 'onnxruntime_int8', 1, 1.5, 'onnxruntime'),
)


@dataclass
class Row:
    """One path at one batch size. Times in milliseconds per batch."""

    path: str
    batch_size: int
    status: str = 'ok'  # 'ok' or 'skipped'
    note: str = ''
    median_ms: float | None = None
    p25_ms: float | None = None
    p75_ms: float | None = None
    min_ms: float | None = None
    max_ms: float | None = None
    repeats: int = 0
    images_per_s: float | None = None
    gflops_per_s: float | None = None
    vs_timm: float | None = None


def _percentile(sorted_values: list[float], q: float) -> float:
    pos = (len(sorted_values) - 1) * q
    lo, hi = int(pos), min(int(pos) + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _fill(row: Row, times: list[float], macs: int | None) -> Row:
    ms = sorted(t * 1e3 for t in times)
    row.median_ms = statistics.median(ms)
    row.p25_ms, row.p75_ms = _percentile(ms, 0.25), _percentile(ms, 0.75)
    row.min_ms, row.max_ms = ms[0], ms[-1]
    row.repeats = len(ms)
    row.images_per_s = row.batch_size / (row.median_ms / 1e3)
    if macs is not None:
        row.gflops_per_s = 2 * macs * row.images_per_s / 1e9
    return row


def _time_batch(
    runners: dict[str, Callable[[int], tuple[Callable[[], Any], str]]],
    bs: int,
    warmup: int,
    repeats: int,
    sync: Callable[[], None],
    macs: int | None,
    say: Callable[[str], None],
    *,
    inference: bool = True,
    untimed_runs: int = 1,
) -> list[Row]:
    """Time every path at batch size ``bs``, interleaved: each of the ``repeats`` rounds runs every path
    ``untimed_runs`` times untimed, then once timed, so background load affects all paths alike and each
    timed run starts with its own weights in cache. ``inference=False`` runs with autograd on (training
    steps); a path whose set-up or run fails is reported as skipped with the reason."""
    rows = {path: Row(path=path, batch_size=bs) for path in runners}
    fns: dict[str, Callable[[], Any]] = {}
    mode = torch.inference_mode if inference else contextlib.nullcontext
    for path, runner in runners.items():
        say(f'batch {bs}: preparing {path}')
        try:
            fn, rows[path].note = runner(bs)
            with mode():
                for _ in range(max(warmup, 1)):
                    fn()
            sync()
            fns[path] = fn
        except Exception as err:  # a path that cannot run here is reported, not fatal
            rows[path].status, rows[path].note = 'skipped', _first_line(err)
    say(f'batch {bs}: timing {len(fns)} paths, {repeats} interleaved rounds')
    times: dict[str, list[float]] = {path: [] for path in fns}
    with mode():
        for _ in range(repeats):
            for path, fn in list(fns.items()):
                try:
                    for _ in range(untimed_runs):
                        fn()
                    sync()
                    start = time.perf_counter()
                    fn()
                    sync()
                    times[path].append(time.perf_counter() - start)
                except Exception as err:
                    rows[path].status, rows[path].note = 'skipped', _first_line(err)
                    del fns[path]
    for path in fns:
        _fill(rows[path], times[path], macs)
    return list(rows.values())


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f'{type(err).__name__}: {text[0][:200]}' if text else type(err).__name__


def timm_reference(arch: str, num_classes: int, backbone_only: bool) -> nn.Module:
    """timm's ``repvit_<arch>`` (random weights, nothing downloaded) after timm's ``fuse()``."""
    import timm

    name = f'repvit_{arch}'
    if name not in timm.list_models('repvit_*'):
        raise LookupError(f'timm has no {name}')
    model = timm.create_model(name, pretrained=False, num_classes=0 if backbone_only else num_classes)
    model.eval()
    if hasattr(model, 'fuse'):
        model = model.fuse()
    else:  # timm versions that only offer the generic helper
        from timm.utils.model import reparameterize_model

        model = reparameterize_model(model)
    if backbone_only:
        return _TimmFeatures(model).eval()
    return model


class _TimmFeatures(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.forward_features(x)


def _machine(device: str, threads: int) -> dict[str, Any]:
    info: dict[str, Any] = {
        'platform': platform.platform(),
        'python': platform.python_version(),
        'torch': torch.__version__,
        'cpu_count': os.cpu_count(),
        'threads': threads,
        'device': device,
    }
    with contextlib.suppress(OSError):
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    info['cpu'] = line.split(':', 1)[1].strip()
                    break
    info.setdefault('cpu', platform.processor() or platform.machine())
    if device.startswith('cuda'):
        info['gpu'] = torch.cuda.get_device_name(torch.device(device))
    for package in ('onnxruntime', 'timm'):
        with contextlib.suppress(ImportError):
            info[package] = __import__(package).__version__
    return info


def benchmark(
    config: str | os.PathLike | Config,
    checkpoint: str | os.PathLike | None = None,
    *,
    shape: tuple[int, int] = (224, 224),
    batch_sizes: tuple[int, ...] = (1, 32),
    repeats: int = 20,
    warmup: int = 3,
    device: str = 'cpu',
    threads: int | None = None,
    paths: tuple[str, ...] = PATHS,
    backbone_only: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Time every path in ``paths`` at every batch size; see the module docstring.

    Without ``checkpoint`` the model keeps its random initialisation (speed does not depend on the
    weights). Segmentors and detectors are timed whole unless ``backbone_only``.

    Returns:
        ``{'machine', 'settings', 'model', 'rows': [Row as dict, ...], 'targets': [...]}``.
    """
    from ..utils.errors import UserInputError
    from .flops import count_complexity

    say = progress or (lambda message: None)
    unknown = [p for p in paths if p not in PATHS]
    if unknown:
        raise UserInputError(f'unknown benchmark path(s) {", ".join(unknown)}; choose from {", ".join(PATHS)}')
    if not batch_sizes or min(batch_sizes) < 1 or repeats < 1:
        raise UserInputError('batch sizes and repeats must be positive')
    if device.startswith('cuda') and not torch.cuda.is_available():
        raise UserInputError('--device cuda: no CUDA device is available')
    threads = threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    loaded = load_model(config, checkpoint)
    arch = loaded.cfg.model.get('backbone', {}).get('arch')
    whole_detector = loaded.task == 'detection' and not backbone_only
    if whole_detector:
        unfused, fused = _whole_detectors(loaded, shape)
    else:
        unfused = None if loaded.fused else tensor_model(loaded, backbone_only, shape=shape)
        fused = tensor_model(fused_copy(loaded), backbone_only, shape=shape)
        check_export_memory(fused, shape, max(batch_sizes), f'benchmarking {loaded.cfg.filename}')
    dense = loaded.task != 'classification' and not backbone_only  # a whole dense model: timm has none
    complexity = count_complexity(fused, shape)
    macs = complexity['macs']
    num_classes = _num_classes(loaded)

    dev = torch.device(device)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == 'cuda' else (lambda: None)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix='repvit-bench-') as tmp, _restore_inductor_config('torch_compile' in paths):
        runners = {
            path: _path_runner(
                path, unfused, fused, arch, num_classes, backbone_only, shape, dev, threads, tmp, timm=not dense
            )
            for path in paths
        }
        if whole_detector:
            runners = {path: _one_image(runner) for path, runner in runners.items()}
        for bs in batch_sizes:
            rows.extend(_time_batch(runners, bs, warmup, repeats, sync, macs, say))
    _ratios(rows)
    return {
        'machine': _machine(device, threads),
        'settings': {
            'shape': list(shape),
            'batch_sizes': list(batch_sizes),
            'repeats': repeats,
            'warmup': warmup,
            'device': device,
            'threads': threads,
        },
        'model': {
            'config': str(loaded.cfg.filename),
            'checkpoint': loaded.checkpoint,
            'arch': arch,
            'task': 'backbone' if backbone_only else loaded.task,
            'macs': macs,
            'params': complexity['params'],
            'timm_reference': f'repvit_{arch}',
        },
        'rows': [asdict(r) for r in rows],
        'targets': _targets(rows),
    }


def _whole_detectors(loaded: LoadedModel, shape: tuple[int, int]) -> tuple[nn.Module | None, nn.Module]:
    """The whole Mask R-CNN as exported (unfused, or ``None`` for a fused checkpoint; fused), at ``shape``."""
    from ..utils.errors import UserInputError
    from .detector_onnx import DetectorFeatures, DetectorOutput

    if any(s % 32 for s in shape):  # FPN adds upsampled maps: every stride up to 32 must divide the size
        raise UserInputError(f'--shape {shape[0]} {shape[1]}: a whole detector needs multiples of 32')
    check_export_memory(DetectorFeatures(loaded.model), shape, 1, f'benchmarking {loaded.cfg.filename}')
    unfused = None if loaded.fused else DetectorOutput(loaded.model, shape).eval()
    return unfused, DetectorOutput(fused_copy(loaded).model, shape).eval()


def _one_image(runner: Runner) -> Runner:
    """``runner`` for batch 1 only: a whole detector's proposals and detections are per image."""

    def make(bs: int):
        if bs != 1:
            raise RuntimeError('a whole detector runs one image at a time: batch 1 only')
        return runner(bs)

    return make


@contextlib.contextmanager
def _restore_inductor_config(active: bool):
    """Undo the inductor settings the ``torch_compile`` path makes, when the benchmark ends."""
    if not active:
        yield
        return
    import torch._inductor.config as inductor_config

    saved = inductor_config.save_config()
    try:
        yield
    finally:
        inductor_config.load_config(saved)


def _num_classes(loaded: LoadedModel) -> int:
    head = getattr(loaded.model, 'head', None)
    return int(getattr(head, 'num_classes', 1000) or 1000)


def _path_runner(
    path: str,
    unfused: nn.Module | None,
    fused: nn.Module,
    arch: str,
    num_classes: int,
    backbone_only: bool,
    shape: tuple[int, int],
    dev: torch.device,
    threads: int,
    tmp: str,
    timm: bool = True,
) -> Callable[[int], tuple[Callable[[], Any], str]]:
    """``batch_size -> (zero-argument function running one forward pass, note)`` for ``path``. Set-up
    (copying, compiling, exporting) happens lazily, once, on the first batch size."""
    state: dict[str, Any] = {}

    def batch(bs: int, channels_last: bool = False) -> torch.Tensor:
        x = torch.randn(bs, 3, *shape, generator=torch.Generator().manual_seed(bs)).to(dev)
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x

    def eager(module: nn.Module | None, channels_last: bool = False):
        def make(bs):
            if module is None:
                raise RuntimeError('the checkpoint is already fused: there is no unfused model to time')
            if 'model' not in state:
                state['model'] = copy.deepcopy(module).to(dev)
                if channels_last:
                    state['model'] = state['model'].to(memory_format=torch.channels_last)
            model, x = state['model'], batch(bs, channels_last)
            return lambda: model(x), ''

        return make

    if path.startswith('timm') and not timm:

        def no_timm(bs):
            raise RuntimeError('timm has no segmentor or detector: no reference for the whole model')

        return no_timm
    if path == 'unfused':
        return eager(unfused)
    if path == 'fused':
        return eager(fused)
    if path == 'fused_channels_last':
        return eager(fused, channels_last=True)
    if path == 'timm_fused':

        def make_timm(bs):
            if 'model' not in state:
                state['model'] = timm_reference(arch, num_classes, backbone_only).to(dev)
            model, x = state['model'], batch(bs)
            return lambda: model(x), f'timm {arch} after timm fuse()'

        return make_timm
    if path == 'torch_compile':

        def make_compiled(bs):
            import torch._inductor.config as inductor_config

            if 'model' not in state:
                # specialised per batch size (dynamic=False), as a deployment would be
                state['model'] = torch.compile(copy.deepcopy(fused).to(dev), dynamic=False)
            model, x = state['model'], batch(bs)
            start = time.perf_counter()
            # freezing: the weights are constants (inference only), so inductor folds them and
            # pre-packs them for oneDNN (faster on CPU). Set for the whole run: graphs compile lazily.
            inductor_config.freezing = True
            with torch.inference_mode():
                model(x)  # compiles for this input shape
            return lambda: model(x), f'inductor, frozen weights, compiled in {time.perf_counter() - start:.0f} s'

        return make_compiled
    if path in ('onnxruntime', 'onnxruntime_int8', 'timm_onnxruntime'):

        def make_ort(bs):
            from .export_onnx import export_tensor_model, ort_session

            if 'onnx_path' not in state:
                state['onnx_path'] = onnx_path = os.path.join(tmp, f'{path}.onnx')
                if path == 'onnxruntime_int8':
                    float_path = os.path.join(tmp, f'{path}.fp32.onnx')
                    state['names'] = export_tensor_model(copy.deepcopy(fused).cpu(), float_path, shape)
                    _quantize_random(float_path, onnx_path, shape)
                elif path == 'onnxruntime':
                    state['names'] = export_tensor_model(copy.deepcopy(fused).cpu(), onnx_path, shape)
                else:  # timm's graph as torch exports it: no rewrite of ours
                    state['names'] = export_tensor_model(
                        timm_reference(arch, num_classes, backbone_only), onnx_path, shape, blocked_layout=False
                    )
            # one session per batch size, the batch axis fixed (as torch_compile specialises per shape)
            session = ort_session(state['onnx_path'], threads, device=dev.type, batch_size=bs)
            names, feed = state['names'], {'input': batch(bs).cpu().numpy()}
            providers = ','.join(p.replace('ExecutionProvider', '') for p in session.get_providers())
            int8 = 'INT8 QDQ, ' if path == 'onnxruntime_int8' else ''
            return lambda: session.run(names, feed), f'{int8}{providers}, {threads} threads, batch fixed'

        return make_ort
    raise ValueError(f'unknown benchmark path {path!r}')


def _quantize_random(float_path: str, out: str, shape: tuple[int, int], batches: int = 4) -> None:
    """Quantize as ``tools/export_onnx.py --int8`` does, calibrated on random batches."""
    from .quantize import quantize_qdq

    gen = torch.Generator().manual_seed(0)
    quantize_qdq(float_path, out, [torch.randn(1, 3, *shape, generator=gen).numpy() for _ in range(batches)])


def _ratios(rows: list[Row]) -> None:
    reference = {r.batch_size: r.images_per_s for r in rows if r.path == 'timm_fused' and r.status == 'ok'}
    for row in rows:
        if row.status == 'ok' and reference.get(row.batch_size):
            row.vs_timm = row.images_per_s / reference[row.batch_size]


def _targets(rows: list[Row]) -> list[dict[str, Any]]:
    results = []
    for name, path, bs, minimum, reference in TARGETS:
        speed = {r.path: r.images_per_s for r in rows if r.batch_size == bs and r.status == 'ok'}
        candidates = [p for p in speed if (p in DEPLOY_PATHS if path == 'best' else p == path)]
        if not candidates or not speed.get(reference):
            continue
        best = max(candidates, key=speed.__getitem__)
        ratio = speed[best] / speed[reference]
        results.append(
            {
                'target': name,
                'batch_size': bs,
                'path': best,
                'reference': reference,
                'ratio': ratio,
                'minimum': minimum,
                'met': ratio >= minimum,
            }
        )
    return results


def format_table(result: dict[str, Any]) -> str:
    """The benchmark as a Markdown table, with the machine, the model and the targets."""
    m, s, model = result['machine'], result['settings'], result['model']
    h, w = s['shape']
    lines = [
        f'RepViT-{model["arch"]} {model["task"]}, {h}x{w}, {model["macs"] / 1e9:.3f} GMACs, '
        f'{model["params"] / 1e6:.2f} M params (fused); device {s["device"]}, {s["threads"]} threads, '
        f'{s["repeats"]} timed runs after {s["warmup"]} warm-up',
        f'machine: {m.get("gpu") or m["cpu"]} ({m["cpu_count"]} cores), torch {m["torch"]}, '
        f'onnxruntime {m.get("onnxruntime", "-")}, timm {m.get("timm", "-")}',
        '',
        '| path | batch | median ms | p25-p75 ms | images/s | GFLOP/s | vs timm fused |',
        '|---|---:|---:|---:|---:|---:|---:|',
    ]
    for r in result['rows']:
        if r['status'] != 'ok':
            lines.append(f'| {r["path"]} | {r["batch_size"]} | skipped: {r["note"]} | | | | |')
            continue
        ratio = f'{r["vs_timm"]:.2f}x' if r['vs_timm'] is not None else '-'
        lines.append(
            f'| {r["path"]} | {r["batch_size"]} | {r["median_ms"]:.2f} | '
            f'{r["p25_ms"]:.2f}-{r["p75_ms"]:.2f} | {r["images_per_s"]:.1f} | '
            f'{r["gflops_per_s"]:.1f} | {ratio} |'
        )
    if result['targets']:
        lines.append('')
        for t in result['targets']:
            lines.append(
                f'target {t["target"]} at batch {t["batch_size"]}: {t["ratio"]:.2f}x ({t["path"]}) '
                f'{"met" if t["met"] else "NOT met"}'
            )
    return '\n'.join(lines)
