"""The end-to-end demo on the embedded Shapes data.

Every step runs the project's own command-line tools in a subprocess, exactly as a user would type them,
so the demo doubles as a worked example of the toolkit; their progress output streams through.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / 'configs'
CLS_CONFIG = CONFIGS / 'classification' / 'repvit-m0.9_shapes-64px.py'


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


def _tool(script: str, *args) -> str:
    """Run ``tools/<script>``, streaming its output, and return that output."""
    cmd = [sys.executable, str(ROOT / 'tools' / script), *map(str, args)]
    print(f'\n==> {" ".join(cmd)}', flush=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')]))
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, bufsize=1)
    lines = []
    for line in proc.stdout:
        sys.stdout.write(line)
        lines.append(line)
    if proc.wait() != 0:
        raise RuntimeError(f'demo step failed: {" ".join(cmd)} (exit code {proc.returncode})')
    return ''.join(lines)


def _metrics(output: str) -> dict[str, float]:
    return json.loads(re.findall(r'^metrics: (.*)$', output, re.M)[-1])


def _data_options(data_root: Path, splits=('train', 'val', 'test')) -> list[str]:
    return [f'{split}_dataloader.dataset.data_root={data_root}' for split in splits]


def _schedule_options(iters: int, quick: bool) -> list[str]:
    """A schedule of ``iters`` iterations (warm-up scheduler first, main scheduler second) with three
    validations and a checkpoint at the end."""
    options = [f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={max(iters // 3, 1)}',
               f'default_hooks.checkpoint.interval={iters}', 'default_hooks.logger.interval=10',
               f'param_scheduler.1.end={iters}']
    if quick:  # the configs' warm-up is longer than a smoke run
        options += ['param_scheduler.0.end=2', 'param_scheduler.1.begin=2']
    return options


@dataclass(frozen=True)
class Task:
    """One of the demo's three models: its config, data and schedule settings."""
    name: str
    config: Path
    data_format: str
    iters: int
    extra_options: tuple[str, ...] = ()
    quick_options: tuple[str, ...] = ()  # what a few-iteration smoke run needs to still report numbers

    def options(self, data: Path, quick: bool, init_from: Path | None, splits=('train', 'val', 'test')):
        iters = QUICK_ITERS if quick else self.iters
        options = [*_data_options(data / self.data_format, splits),
                   *(o.format(data=data / self.data_format) for o in self.extra_options),
                   *(self.quick_options if quick else ())]
        if 'train' in splits:
            options += _schedule_options(iters, quick)
        if init_from is not None:
            options.append(f'model.backbone.init_cfg.checkpoint={init_from}')
        return options


QUICK_ITERS = 4
CLASSIFIER = Task('classification', CLS_CONFIG, 'imagenet', 300)
DETECTOR = Task('detection', CONFIGS / 'detection' / 'mask-rcnn_repvit-m0.9_fpn_shapes.py', 'coco', 200,
                ('val_evaluator.ann_file={data}/annotations/instances_val2017.json',
                 'test_evaluator.ann_file={data}/annotations/instances_val2017.json'),
                # an untrained detector scores below the usual 0.05 threshold: keep every box for the AP
                quick_options=('model.test_cfg.rcnn.score_thr=0.0',))
SEGMENTOR = Task('segmentation', CONFIGS / 'segmentation' / 'fpn_repvit-m0.9_shapes.py', 'ade20k', 300)
HEADLINE_METRICS = {'classification': ('accuracy/top1',), 'detection': ('coco/bbox_mAP', 'coco/segm_mAP'),
                    'segmentation': ('mIoU', 'mAcc', 'aAcc')}


def _train_and_test(task: Task, out: Path, data: Path, quick: bool, report: DemoReport,
                    init_from: Path | None = None) -> Path:
    work = out / task.name
    _tool('train.py', task.config, '--work-dir', work, '--cfg-options',
          *task.options(data, quick, init_from))
    ckpt = work / f'iter_{QUICK_ITERS if quick else task.iters}.pth'
    report.add(f'{task.name} checkpoint', ckpt)
    report.add(f'{task.name} log', _latest_log(work))
    metrics = _metrics(_tool('test.py', task.config, ckpt, '--work-dir', work, '--cfg-options',
                             *task.options(data, quick, None, splits=('test',))))
    for key in HEADLINE_METRICS[task.name]:
        report.metrics[f'{task.name} {key}'] = metrics[key]
    return ckpt


def _latest_log(work: Path) -> Path:
    run_dir = max((d for d in work.iterdir() if d.is_dir() and d.name[:1].isdigit()), key=os.path.getmtime)
    return next(run_dir.glob('*.log'))


def _first_image(folder: Path) -> Path:
    return min(p for p in folder.rglob('*') if p.suffix.lower() in ('.jpg', '.jpeg', '.png'))


def plot_training_curves(work_dirs: dict[str, Path], out_png: Path) -> Path:
    """Loss (and validation metric) against iteration for each task, from mmengine's scalars.json."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(work_dirs), figsize=(5 * len(work_dirs), 3.6), squeeze=False)
    for ax, (name, log) in zip(axes[0], work_dirs.items()):
        records = [json.loads(line) for line in (log.parent / 'vis_data' / 'scalars.json').read_text().splitlines()]
        train = [r for r in records if 'loss' in r]
        ax.plot([r['iter'] for r in train], [r['loss'] for r in train], label='train loss')
        ax.set_xlabel('iteration')
        ax.set_title(name)
        metric = HEADLINE_METRICS[name][-1 if name == 'detection' else 0]
        val = [r for r in records if metric in r]
        if val:
            twin = ax.twinx()
            twin.plot([r['step'] for r in val], [r[metric] for r in val], 'o-', color='tab:orange',
                      label=f'val {metric}')
            twin.set_ylabel(f'val {metric}')
        ax.legend(loc='upper right')
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png


def run_demo(out_dir: str | Path, quick: bool = False) -> DemoReport:
    """Train, evaluate, fuse, export and benchmark RepViT on the Shapes data; see the module docstring."""
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    report = DemoReport(out)

    data = out / 'data'
    if not (data / 'imagenet').is_dir():
        _tool('make_shapes.py', data)
    report.add('shapes data', data)

    # 1. classifier, then the two dense models starting from its backbone (init_cfg Pretrained, prefix)
    cls_ckpt = _train_and_test(CLASSIFIER, out, data, quick, report)
    det_ckpt = _train_and_test(DETECTOR, out, data, quick, report, init_from=cls_ckpt)
    seg_ckpt = _train_and_test(SEGMENTOR, out, data, quick, report, init_from=cls_ckpt)

    # 2. deployment: fuse all three, export the classifier, benchmark fused against unfused
    deploy = out / 'deploy'
    deploy.mkdir(exist_ok=True)
    for task, ckpt in ((CLASSIFIER, cls_ckpt), (DETECTOR, det_ckpt), (SEGMENTOR, seg_ckpt)):
        fused = deploy / f'{task.name}_fused.pth'
        _tool('fuse.py', task.config, ckpt, fused, '--force')
        report.add(f'{task.name} fused checkpoint', fused)
    size = ('--shape', '64', '64')
    onnx_file, coreml_file = deploy / 'classifier.onnx', deploy / 'classifier.mlpackage'
    _tool('export_onnx.py', CLASSIFIER.config, cls_ckpt, onnx_file, *size, '--force')
    _tool('export_coreml.py', CLASSIFIER.config, cls_ckpt, coreml_file, *size, '--force')
    report.add('classifier ONNX', onnx_file)
    report.add('classifier Core ML', coreml_file)
    bench_json = deploy / 'benchmark.json'
    _tool('benchmark.py', CLASSIFIER.config, cls_ckpt, *size, '--json', bench_json, '--force',
          '--repeats', '2' if quick else '10', '--batch-sizes', *(['1'] if quick else ['1', '32']))
    report.add('benchmark', bench_json)
    for row in json.loads(bench_json.read_text())['rows']:
        if row['batch_size'] == 1 and row['status'] == 'ok':
            report.metrics[f"images/s at batch 1, {row['path']}"] = row['images_per_s']

    # 3. pictures of predictions and the training curves
    pictures = out / 'pictures'
    pictures.mkdir(exist_ok=True)
    for task, ckpt, images in ((CLASSIFIER, cls_ckpt, data / 'imagenet' / 'val'),
                               (DETECTOR, det_ckpt, data / 'coco' / 'val2017'),
                               (SEGMENTOR, seg_ckpt, data / 'ade20k' / 'images' / 'validation')):
        picture = pictures / f'{task.name}.png'
        # the Shapes classifier sees 64 px images: draw its top-5 list on a larger copy to keep it legible
        resize = ('--resize', '256') if task is CLASSIFIER else ()
        _tool('demo.py', _first_image(images), task.config, ckpt, '--out', picture, '--force', *resize)
        report.add(f'{task.name} picture', picture)
    curves = plot_training_curves(
        {t.name: Path(report.artefacts[f'{t.name} log']) for t in (CLASSIFIER, DETECTOR, SEGMENTOR)},
        pictures / 'training_curves.png')
    report.add('training curves', curves)

    report.print()
    print(f'\nsummary: {report.save()}')
    return report
