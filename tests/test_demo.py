"""The README's demo in its quick mode: same code path as ``make demo``, a few iterations per step."""
from __future__ import annotations

import json
import math

import pytest
from helpers import run_tool
from PIL import Image


@pytest.mark.slow
def test_quick_demo_produces_every_artefact_and_number(tmp_path):
    out = tmp_path / 'demo'
    proc = run_tool('run_demo.py', '--out', out, '--quick', timeout=1800)
    summary = json.loads((out / 'summary.json').read_text())
    artefacts, metrics = summary['artefacts'], summary['metrics']

    for task in ('classification', 'detection', 'segmentation'):
        for kind in ('checkpoint', 'log', 'fused checkpoint', 'picture'):
            assert f'{task} {kind}' in artefacts, (task, kind)
    for name, path in artefacts.items():
        assert path in proc.stdout, f'the demo does not print where its {name} is'
        assert (out / path).exists(), f'{name}: {path} missing'

    for picture in ('classification', 'detection', 'segmentation', 'training_curves'):
        with Image.open(out / 'pictures' / f'{picture}.png') as image:
            assert image.width > 32 and image.height > 32
    assert (out / 'deploy' / 'classifier.onnx').stat().st_size > 100_000
    assert (out / 'deploy' / 'classifier.mlpackage' / 'Manifest.json').is_file()

    expected = ['classification accuracy/top1', 'detection coco/bbox_mAP', 'detection coco/segm_mAP',
                'segmentation mIoU', 'images/s at batch 1, fused', 'images/s at batch 1, unfused']
    for name in expected:
        assert name in metrics and math.isfinite(metrics[name]), name
    assert 0 <= metrics['classification accuracy/top1'] <= 100
    assert metrics['images/s at batch 1, fused'] > 0
