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


def _data_options(dataset_key: str, data_root: Path, splits=('train', 'val', 'test')) -> list[str]:
    return [f'{split}_dataloader.dataset.{dataset_key}={data_root}' for split in splits]


def run_demo(out_dir: str | Path, quick: bool = False) -> DemoReport:
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    report = DemoReport(out)

    data = out / 'data'
    if not (data / 'imagenet').is_dir():
        _tool('make_shapes.py', data)
    report.add('shapes data', data)

    cls_dir = out / 'classification'
    iters = 6 if quick else 300
    _tool('train.py', CLS_CONFIG, '--work-dir', cls_dir, '--cfg-options',
          *_data_options('data_root', data / 'imagenet'),
          f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={iters // 3}',
          f'default_hooks.checkpoint.interval={iters // 3}',
          f'param_scheduler.1.end={iters}')
    cls_ckpt = cls_dir / f'iter_{iters}.pth'
    report.add('classifier checkpoint', cls_ckpt)
    report.add('classifier log dir', max(cls_dir.glob('2*'), key=os.path.getmtime))
    test_out = _tool('test.py', CLS_CONFIG, cls_ckpt, '--work-dir', cls_dir, '--cfg-options',
                     *_data_options('data_root', data / 'imagenet', ('test',)))
    report.metrics['classification top-1'] = _metrics(test_out)['accuracy/top1']

    report.print()
    print(f'\nsummary: {report.save()}')
    return report
