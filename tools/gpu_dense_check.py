"""Train and test the Shapes Mask R-CNN and Semantic FPN on a GPU through the repository's configs and tools,
and time their training steps: the check of the dense tasks on CUDA (meant to fit in 8 minutes on one GPU;
not yet run on one, see docs/install.md).

    python tools/gpu_dense_check.py [--device cuda|cpu] [--out work_dirs/gpu_dense_check] [--quick]

1. the demo's Shapes data (``tools/make_shapes.py``) and its Shapes classifier (the backbones' start;
   ``--quick`` leaves it out);
2. Mask R-CNN and Semantic FPN, each ``tools/train.py`` with its config's own schedule (400 iterations),
   then ``tools/test.py``: box / mask AP and mIoU, and the median training step time from the run's log;
3. ``tools/benchmark.py CONFIG --train`` runner rows for both dense configs (batch 4, 128x128).

Every step is one of the project's tools in a subprocess, as a user would type it (the demo's steps:
tools/run_demo.py); mmengine trains on the GPU when there is one, ``--device cpu`` hides it. ``--quick``
runs a few iterations of each on less data (the smoke run the tests do on a CPU). The numbers are printed
and written to ``OUT/summary.json``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import time
from pathlib import Path

from cli import ArgumentParser, UsageError, run_cli

DEVICES = ('cuda', 'cpu')


def parse_args(argv=None):
    parser = ArgumentParser(description='Train and test the Shapes Mask R-CNN and Semantic FPN on a GPU, timed')
    parser.add_argument('--device', choices=DEVICES, default='cuda', help='cuda (default) or cpu')
    parser.add_argument('--out', default='work_dirs/gpu_dense_check', help='where data, checkpoints and logs go')
    parser.add_argument('--quick', action='store_true', help='less data, a few iterations per step (smoke run)')
    return parser.parse_args(argv)


def step_time(log: Path) -> float:
    """Median seconds per training iteration in an mmengine run (``vis_data/scalars.json`` next to its log),
    the first logged iteration (warm-up) left out when there are others."""
    times = [
        row['time']
        for row in map(json.loads, (log.parent / 'vis_data' / 'scalars.json').read_text().splitlines())
        if 'time' in row and 'loss' in row
    ]
    return statistics.median(times[1:] or times)


def gpu_dense_check(out: Path, device: str, quick: bool) -> dict:
    import run_demo
    import torch

    if device == 'cuda' and not torch.cuda.is_available():
        raise UsageError('--device cuda: torch sees no CUDA device (use --device cpu for a CPU run)')
    if device == 'cpu':  # the tools' mmengine Runner takes a GPU whenever it sees one
        os.environ['CUDA_VISIBLE_DEVICES'] = ''
    card = torch.cuda.get_device_name() if device == 'cuda' else 'cpu'
    out.mkdir(parents=True, exist_ok=True)
    report = run_demo.DemoReport(out)
    start = time.perf_counter()
    data = out / ('data-quick' if quick else 'data')
    run_demo._make_data(data, quick)
    dense = (run_demo.DETECTOR, run_demo.SEGMENTOR)
    if quick:  # a smoke run: the backbones start from random weights, not from a classifier trained first
        cls_ckpt = None
        dense = tuple(
            dataclasses.replace(t, quick_options=(*t.quick_options, 'model.backbone.init_cfg=None')) for t in dense
        )
    else:
        cls_ckpt = run_demo._train_and_test(run_demo.CLASSIFIER, out, data, quick, report)
    for task in dense:
        run_demo._train_and_test(task, out, data, quick, report, init_from=cls_ckpt)
        report.metrics[f'{task.name} s per training step'] = step_time(Path(report.artefacts[f'{task.name} log']))
    paths = ['runner'] if device == 'cpu' else ['runner', 'runner_channels_last', 'runner_amp']
    for task in dense:
        bench = out / f'{task.name}_train_benchmark.json'
        run_demo._tool(
            'benchmark.py', task.config, '--train', '--device', device, '--batch-size', '4', '--shape', '128',
            '--iters', '2' if quick else '20', '--warmup', '1' if quick else '5', '--paths', *paths,
            '--json', bench, '--force',
        )  # fmt: skip
        report.add(f'{task.name} train benchmark', bench)
        for row in json.loads(bench.read_text())['rows']:
            if row.get('status') == 'ok':
                report.metrics[f'{task.name} benchmark {row["path"]} ms per step'] = row['median_ms']
    report.metrics['check s'] = time.perf_counter() - start
    report.print()
    summary = {'device': card, 'artefacts': report.artefacts, 'metrics': report.metrics}
    (out / 'summary.json').write_text(json.dumps(summary, indent=2))
    print(f'\ndevice: {card}\nsummary: {out / "summary.json"}')
    return summary


def main(argv=None):
    args = parse_args(argv)
    gpu_dense_check(Path(args.out).resolve(), args.device, args.quick)


if __name__ == '__main__':
    run_cli(main)
