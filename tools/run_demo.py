"""The repvit-mm demo on the embedded Shapes data (no download): ``make demo`` runs it.

    python tools/run_demo.py [--out work_dirs/demo] [--quick]

1. writes the Shapes data (``tools/make_shapes.py``);
2. trains and tests a RepViT-M0.9 classifier, then Mask R-CNN and Semantic FPN whose backbones start from it;
3. fuses all three, exports the classifier to ONNX and Core ML and the whole segmentor to ONNX (fp32 and INT8,
   both evaluated by ``tools/test.py``), benchmarks fused against unfused;
4. draws each model's predictions on the first images of its validation split, and the training curves;

then prints where every artefact is and the numbers (also in ``OUT/summary.json``). Every step runs the
project's own command-line tools in a subprocess, exactly as a user would type them, so the demo doubles as a
worked example of the toolkit; their progress output streams through. ``--quick`` runs the same steps on less
data with a few iterations each (what the tests do).
"""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from cli import ArgumentParser, run_cli

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / 'configs'
QUICK_ITERS = 4
PICTURE_IMAGES = 4  # the first N images of each validation split are drawn, none picked by hand
# Shapes written for the full demo: (train, val) images (imagenet: per class) and image side per format.
# The tests use the generator's smaller defaults; so does --quick.
DEMO_DATA = {'imagenet': (600, 50, 64), 'coco': (600, 50, 128), 'ade20k': (600, 50, 128)}


@dataclass
class DemoReport:
    """What the demo produced: artefact paths and metrics, printed at the end and saved as JSON."""

    out_dir: Path
    artefacts: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, path: Path) -> None:
        self.artefacts[name] = str(path)

    def print(self) -> None:
        print('\n==> demo artefacts')
        width = max(map(len, self.artefacts), default=0)
        for name, path in self.artefacts.items():
            print(f'  {name:<{width}}  {path}')
        if self.metrics:
            print('\n==> demo metrics')
            width = max(map(len, self.metrics))
            for name, value in self.metrics.items():
                print(f'  {name:<{width}}  {value:.4g}')

    def save(self) -> Path:
        path = self.out_dir / 'summary.json'
        path.write_text(json.dumps({'artefacts': self.artefacts, 'metrics': self.metrics}, indent=2))
        return path


def _tool(script: str, *args, prefix: str = '', threads: int | None = None) -> str:
    """Run ``tools/<script>``, streaming its output (each line after ``prefix``), and return that output.
    ``threads`` caps the intra-op threads of torch (OMP_NUM_THREADS) for runs that share the cores."""
    cmd = [sys.executable, str(ROOT / 'tools' / script), *map(str, args)]
    print(f'\n{prefix}==> {" ".join(cmd)}', flush=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]))
    if threads:
        env['OMP_NUM_THREADS'] = str(threads)
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    lines = []
    for line in proc.stdout:
        sys.stdout.write(prefix + line)
        sys.stdout.flush()
        lines.append(line)
    if proc.wait() != 0:
        raise RuntimeError(f'demo step failed: {" ".join(cmd)} (exit code {proc.returncode})')
    return ''.join(lines)


def _metrics(output: str) -> dict[str, float]:
    return json.loads(re.findall(r'^metrics: (.*)$', output, re.M)[-1])


@dataclass(frozen=True)
class Task:
    """One of the demo's three models: its config, data, schedule and how its pictures are drawn."""

    name: str
    config: Path
    data_format: str
    headline: tuple[str, ...]  # metrics reported, the first one plotted
    extra_options: tuple[str, ...] = ()
    quick_options: tuple[str, ...] = ()  # what a few-iteration smoke run needs to still report numbers
    picture_options: tuple[str, ...] = ()

    def options(self, data: Path, quick: bool, init_from: Path | None, splits=('train', 'val', 'test')):
        root = data / self.data_format
        options = [
            *(f'{split}_dataloader.dataset.data_root={root}' for split in splits),
            *(o.format(data=root) for o in self.extra_options),
        ]
        if quick:
            options += self.quick_options
            if 'train' in splits:  # a schedule of QUICK_ITERS iterations, every one logged and validated
                options += [
                    f'train_cfg.max_iters={QUICK_ITERS}',
                    'train_cfg.val_interval=2',
                    f'default_hooks.checkpoint.interval={QUICK_ITERS}',
                    'default_hooks.logger.interval=1',
                    'param_scheduler.0.end=2',
                    'param_scheduler.1.begin=2',
                    f'param_scheduler.1.end={QUICK_ITERS}',
                ]
        if init_from is not None:
            options.append(f'model.backbone.init_cfg.checkpoint={init_from}')
        return options


CLASSIFIER = Task(
    'classification',
    CONFIGS / 'classification' / 'repvit-m0.9_shapes-64px.py',
    'imagenet',
    ('accuracy/top1',),
    picture_options=('--topk', '3'),
)
DETECTOR = Task(
    'detection',
    CONFIGS / 'detection' / 'mask-rcnn_repvit-m0.9_fpn_shapes.py',
    'coco',
    ('coco/bbox_mAP', 'coco/segm_mAP'),
    (
        'val_evaluator.ann_file={data}/annotations/instances_val2017.json',
        'test_evaluator.ann_file={data}/annotations/instances_val2017.json',
    ),
    # an untrained detector scores below the usual 0.05 threshold: keep every box for the AP
    quick_options=('model.test_cfg.rcnn.score_thr=0.0',),
    picture_options=('--score-thr', '0.5'),
)
SEGMENTOR = Task(
    'segmentation', CONFIGS / 'segmentation' / 'fpn_repvit-m0.9_shapes.py', 'ade20k', ('mIoU', 'mAcc', 'aAcc')
)
TASKS = (CLASSIFIER, DETECTOR, SEGMENTOR)


def _make_data(data: Path, quick: bool) -> None:
    """Write each format not yet there (the generator writes a format completely or not at all)."""
    missing = [fmt for fmt in DEMO_DATA if not (data / fmt).is_dir()]
    if quick and missing:  # the generator's defaults: a few hundred small images
        _tool('make_shapes.py', data, '--formats', *missing)
    elif missing:  # two formats at a time, one per core
        with ThreadPoolExecutor(2) as pool:
            for run in [
                pool.submit(
                    _tool,
                    'make_shapes.py',
                    data,
                    '--formats',
                    fmt,
                    '--num-train',
                    DEMO_DATA[fmt][0],
                    '--num-val',
                    DEMO_DATA[fmt][1],
                    '--size',
                    DEMO_DATA[fmt][2],
                    prefix=f'[{fmt}] ',
                )
                for fmt in missing
            ]:
                run.result()


def _train_and_test(
    task: Task,
    out: Path,
    data: Path,
    quick: bool,
    report: DemoReport,
    init_from: Path | None = None,
    threads: int | None = None,
) -> Path:
    work = out / task.name
    prefix = f'[{task.name}] ' if threads else ''
    start = time.perf_counter()
    _tool(
        'train.py',
        task.config,
        '--work-dir',
        work,
        '--force',  # a re-run keeps an earlier run's checkpoints and saves into WORK/TIMESTAMP/
        '--cfg-options',
        *task.options(data, quick, init_from),
        prefix=prefix,
        threads=threads,
    )
    report.metrics[f'{task.name} training s'] = time.perf_counter() - start
    ckpt = Path((work / 'last_checkpoint').read_text().strip())  # mmengine's record of the final one
    report.add(f'{task.name} checkpoint', ckpt)
    report.add(f'{task.name} log', _latest_log(work))
    metrics = _metrics(
        _tool(
            'test.py',
            task.config,
            ckpt,
            '--work-dir',
            work,
            '--cfg-options',
            *task.options(data, quick, None, splits=('test',)),
            prefix=prefix,
            threads=threads,
        )
    )
    missing = [key for key in task.headline if key not in metrics]
    if missing:  # e.g. CocoMetric reports nothing when a diverged detector outputs no boxes
        log = report.artefacts[f'{task.name} log']
        raise RuntimeError(f'demo step failed: {task.name} test reported no {", ".join(missing)} (training log: {log})')
    for key in task.headline:
        report.metrics[f'{task.name} {key}'] = metrics[key]
    return ckpt


def _train_side_by_side(tasks: tuple[Task, ...], *args, **kwargs) -> list[Path]:
    """Train and test ``tasks`` at the same time, one process and one thread each: small models use two
    cores better as two single-threaded runs than as one run on two threads. Output lines carry the
    task's name."""
    with ThreadPoolExecutor(len(tasks)) as pool:
        runs = [pool.submit(_train_and_test, task, *args, **kwargs, threads=1) for task in tasks]
        return [run.result() for run in runs]


def _latest_log(work: Path) -> Path:
    run_dir = max((d for d in work.iterdir() if d.is_dir() and d.name[:1].isdigit()), key=os.path.getmtime)
    return next(run_dir.glob('*.log'))


def validation_images(task: Task, data: Path, count: int) -> list[Path]:
    """The first ``count`` images of the task's validation split, in the order its dataset lists them."""
    root = data / task.data_format
    if task.data_format == 'imagenet':  # the config reads meta/val.txt
        lines = (root / 'meta' / 'val.txt').read_text().splitlines()
        return [root / 'val' / line.split()[0] for line in lines[:count]]
    if task.data_format == 'coco':
        document = json.loads((root / 'annotations' / 'instances_val2017.json').read_text())
        return [root / 'val2017' / image['file_name'] for image in document['images'][:count]]
    return sorted((root / 'images' / 'validation').glob('*.jpg'))[:count]  # mmseg sorts by path


def run_demo(out_dir: str | Path, quick: bool = False) -> DemoReport:
    """Train, evaluate, fuse, export and benchmark RepViT on the Shapes data; see the module docstring."""
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    report = DemoReport(out)
    start = time.perf_counter()

    data = out / ('data-quick' if quick else 'data')
    _make_data(data, quick)
    report.add('shapes data', data)

    # 1. classifier, then the two dense models, side by side, starting from its backbone (init_cfg Pretrained)
    cls_ckpt = _train_and_test(CLASSIFIER, out, data, quick, report)
    det_ckpt, seg_ckpt = _train_side_by_side((DETECTOR, SEGMENTOR), out, data, quick, report, init_from=cls_ckpt)
    checkpoints = {CLASSIFIER: cls_ckpt, DETECTOR: det_ckpt, SEGMENTOR: seg_ckpt}

    # 2. deployment: fuse all three, export the classifier and the segmentor, benchmark fused against unfused
    deploy = out / 'deploy'
    deploy.mkdir(exist_ok=True)
    for task, ckpt in checkpoints.items():
        fused = deploy / f'{task.name}_fused.pth'
        _tool('fuse.py', task.config, ckpt, fused, '--force')
        report.add(f'{task.name} fused checkpoint', fused)
    size = ('--shape', '64', '64')
    onnx_file, coreml_file = deploy / 'classifier.onnx', deploy / 'classifier.mlpackage'
    _tool('export_onnx.py', CLASSIFIER.config, cls_ckpt, onnx_file, *size, '--force')
    _tool('export_coreml.py', CLASSIFIER.config, cls_ckpt, coreml_file, *size, '--force')
    report.add('classifier ONNX', onnx_file)
    report.add('classifier Core ML', coreml_file)
    # the whole segmentor to ONNX Runtime, fp32 and INT8 (calibrated on training images), evaluated by the same
    # tool and metric as its checkpoint
    roots = [f'{split}_dataloader.dataset.data_root={data / SEGMENTOR.data_format}' for split in ('train', 'test')]
    for precision, options in (('fp32', ()), ('int8', ('--int8', '--calibration-images', '8' if quick else '64'))):
        seg_onnx = deploy / f'segmentation_{precision}.onnx'
        _tool('export_onnx.py', SEGMENTOR.config, seg_ckpt, seg_onnx, *options, '--force', '--cfg-options', *roots)
        report.add(f'segmentation ONNX {precision}', seg_onnx)
        work = deploy / f'segmentation_{precision}'
        tested = _tool('test.py', SEGMENTOR.config, seg_onnx, '--work-dir', work, '--cfg-options', *roots[1:])
        report.metrics[f'segmentation mIoU, ONNX Runtime {precision}'] = _metrics(tested)['mIoU']
    bench_json = deploy / 'benchmark.json'
    _tool(
        'benchmark.py',
        CLASSIFIER.config,
        cls_ckpt,
        *size,
        '--json',
        bench_json,
        '--force',
        '--repeats',
        '2' if quick else '10',
        '--batch-sizes',
        *(['1'] if quick else ['1', '32']),
    )
    report.add('benchmark', bench_json)
    for row in json.loads(bench_json.read_text())['rows']:
        if row['batch_size'] == 1 and row['status'] == 'ok':
            report.metrics[f'images/s at batch 1, {row["path"]}'] = row['images_per_s']

    # 3. predictions on the first validation images (drawn enlarged, labels inside) and the training curves
    pictures = out / 'pictures'
    pictures.mkdir(exist_ok=True)
    for task, ckpt in checkpoints.items():
        picture = pictures / f'{task.name}.png'
        images = validation_images(task, data, PICTURE_IMAGES)
        title = f'{task.name}: the first {len(images)} images of the Shapes validation split ({task.config.name})'
        _tool(
            'demo.py', *images, task.config, ckpt, '--out', picture, '--force', '--title', title, *task.picture_options
        )
        report.add(f'{task.name} picture', picture)
    from repvit_mm.apis.analysis import plot_loss_and_metric, stack_pictures

    report.add(
        'predictions picture',
        stack_pictures([Path(report.artefacts[f'{t.name} picture']) for t in TASKS], pictures / 'predictions.png'),
    )
    curves = plot_loss_and_metric(
        {t.name: (report.artefacts[f'{t.name} log'], t.headline[0]) for t in TASKS}, pictures / 'training_curves.png'
    )
    report.add('training curves', curves)

    report.metrics['demo s'] = time.perf_counter() - start
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    report.metrics['demo CPU s'] = sum(u.ru_utime + u.ru_stime for u in usage)  # every step's processes
    report.print()
    print(f'\nsummary: {report.save()}')
    return report


def parse_args(argv=None):
    parser = ArgumentParser(description='Run the repvit-mm demo on the embedded Shapes data')
    parser.add_argument('--out', default='work_dirs/demo', help='where data, checkpoints and pictures go')
    parser.add_argument('--quick', action='store_true', help='less data, a few iterations per step (smoke run)')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    run_demo(args.out, quick=args.quick)


if __name__ == '__main__':
    run_cli(main)
