"""The README's demo (``tools/run_demo.py``) and the pictures it draws (``repvit_mm.deploy.render``)."""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import CONFIGS, forked_step, orchestrator_module, run_tool
from PIL import Image

CLS_CFG = CONFIGS / 'classification' / 'repvit-m0.9_shapes-64px.py'
PICTURES = ('classification', 'detection', 'segmentation', 'predictions', 'training_curves')
TRAINING_LOSS_RGB = (31, 119, 180)  # matplotlib's tab:blue, the training-loss lines of training_curves.png
# What the full demo must reach (README): Shapes top-1, Mask R-CNN box AP, Semantic FPN mIoU.
TARGETS = {'classification accuracy/top1': 90.0, 'detection coco/bbox_mAP': 0.6, 'segmentation mIoU': 70.0}


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert('RGB')).astype(np.int16)


def assert_not_blank(path: Path) -> None:
    values = pixels(path)
    assert values.std() > 20, f'{path.name} looks blank (pixel std {values.std():.1f})'


# ----------------------------------------------------------------------------------------- drawing
def test_labels_stay_whole_inside_the_picture():
    from repvit_mm.deploy.render import _draw_labels, _Label

    blank = np.full((256, 256, 3), 255, np.uint8)
    blue = (0, 0, 200)

    def label_box(anchor):
        drawn = _draw_labels(blank, [_Label('triangle 0.99', anchor, blue)])
        ys, xs = np.nonzero(np.all(drawn == blue, axis=-1))
        return xs.min(), ys.min(), xs.max() - xs.min(), ys.max() - ys.min()

    _, _, width, height = label_box((10, 10))
    assert width > 60 and height >= 12  # a legible label: 12 px text at least
    for anchor in ((250, 250), (-30, -30), (200, 0)):  # would stick out of the picture
        x, y, w, h = label_box(anchor)
        assert (w, h) == (width, height) and 0 <= x and x + w < 256 and 0 <= y and y + h < 256, anchor
    # two labels at one place are stacked, not drawn over each other
    drawn = _draw_labels(blank, [_Label('circle', (100, 100), blue), _Label('square', (100, 100), (200, 0, 0))])
    blue_rows = np.nonzero(np.all(drawn == blue, axis=-1))[0]
    red_rows = np.nonzero(np.all(drawn == (200, 0, 0), axis=-1))[0]
    assert blue_rows.max() < red_rows.min()


def test_small_images_are_drawn_enlarged_in_a_captioned_grid(tmp_path):
    """Five 64 px images: a 256 px drawing each, four columns, captions in the order given, a title."""
    import torch

    from repvit_mm.deploy import load_model, render_prediction

    torch.manual_seed(0)
    ckpt = tmp_path / 'cls.pth'
    torch.save(
        {
            'state_dict': load_model(CLS_CFG).model.state_dict(),
            'meta': {'dataset_meta': {'classes': ['circle', 'square', 'triangle']}},
        },
        ckpt,
    )
    rng = np.random.default_rng(0)
    images = []
    for index in range(5):
        images.append(tmp_path / f'image_{index}.png')
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(images[-1])

    single = render_prediction(images[0], CLS_CFG, ckpt, tmp_path / 'one.png', topk=3)
    assert single['size'] == (256, 256)
    assert re.fullmatch(r'top-3: (circle|square|triangle) [\d.]+, \w+ [\d.]+, \w+ [\d.]+', single['summary'])
    enlarged = np.asarray(Image.open(images[0]).convert('RGB').resize((256, 256), Image.BICUBIC)).astype(int)
    changed = np.any(np.abs(pixels(tmp_path / 'one.png') - enlarged) > 60, axis=-1)
    assert 0.02 < changed[:128, :128].mean() and changed[128:, 128:].mean() < 0.01  # labels top left only

    grid = render_prediction(images, CLS_CFG, ckpt, tmp_path / 'grid.png', topk=3, title='first five')
    height, width = grid['size']
    assert 4 * 256 < width < 4 * 256 + 200 and 2 * 256 < height < 2 * 256 + 200
    assert [line.split(':')[0] for line in grid['summary'].splitlines()] == [p.name for p in images]
    assert_not_blank(tmp_path / 'grid.png')


def test_a_thin_image_is_drawn_within_the_picture_bound(tmp_path):
    """A 1 x 10000 PNG (about a kilobyte) would be drawn 256 x 2,560,000 (gigabytes) if its short side were
    enlarged to 256: the longer side stays within MAX_SIDE, and tools/demo.py says so in one line."""
    import torch

    from repvit_mm.deploy import load_model
    from repvit_mm.deploy.render import MAX_SIDE, _compose, _drawn_size

    assert _drawn_size(1, 10000, None) == (1, MAX_SIDE) and _drawn_size(3000, 1, 256) == (MAX_SIDE, 3)
    assert _drawn_size(64, 64, None) == (256, 256) and _drawn_size(4000, 6000, None) == (4000, 6000)
    grid = _compose([(np.zeros((4000, 6000, 3), np.uint8), f'{i}') for i in range(8)], 'eight large ones')
    assert max(grid.shape[:2]) == MAX_SIDE  # panels, captions, gaps and title shrunk together

    thin = tmp_path / 'thin.png'
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (1, 10000, 3), dtype=np.uint8)).save(thin)
    assert thin.stat().st_size < 40000
    torch.manual_seed(0)
    ckpt = tmp_path / 'cls.pth'
    torch.save({'state_dict': load_model(CLS_CFG).model.state_dict()}, ckpt)
    proc = run_tool('demo.py', thin, CLS_CFG, ckpt, '--out', tmp_path / 'thin_out.png')
    notes = [line for line in proc.stdout.splitlines() if line.startswith('note:')]
    assert len(notes) == 1 and f'at most {MAX_SIDE} pixels' in notes[0] and str(thin) in notes[0], proc.stdout
    with Image.open(tmp_path / 'thin_out.png') as picture:
        assert picture.size == (MAX_SIDE, 1)


def _tiny_classifier(tmp_path: Path) -> Path:
    import torch

    from repvit_mm.deploy import load_model

    torch.manual_seed(0)
    ckpt = tmp_path / 'cls.pth'
    torch.save({'state_dict': load_model(CLS_CFG).model.state_dict()}, ckpt)
    return ckpt


def test_an_exif_rotated_photo_is_drawn_as_the_model_saw_it(tmp_path):
    """A JPEG stored 120 x 60 (red left, blue right) with EXIF orientation 6 (turn 90 degrees clockwise to
    show): mmcv, and so the model's LoadImageFromFile, reads it 60 wide and 120 high, red on top. The
    picture is that, enlarged (256 x 512), not the stored pixels squeezed into swapped sides."""
    import mmcv

    stored = np.zeros((60, 120, 3), np.uint8)
    stored[:, :60] = (220, 0, 0)
    stored[:, 60:] = (0, 0, 220)
    photo = Image.fromarray(stored)
    exif = photo.getexif()
    exif[0x0112] = 6
    photo.save(tmp_path / 'photo.jpg', exif=exif, quality=95)
    assert mmcv.imread(str(tmp_path / 'photo.jpg')).shape == (120, 60, 3)  # what the model sees
    run_tool('demo.py', tmp_path / 'photo.jpg', CLS_CFG, _tiny_classifier(tmp_path), '--out', tmp_path / 'out.png')
    drawn = pixels(tmp_path / 'out.png')
    assert drawn.shape == (512, 256, 3)
    red, blue = drawn[200:240, 200:250].mean((0, 1)), drawn[400:500, 50:250].mean((0, 1))  # clear of labels
    assert red[0] > 180 and red[2] < 50 and blue[2] > 180 and blue[0] < 50, (red, blue)


def test_non_ascii_titles_are_drawn_with_a_font_that_has_their_glyphs(tmp_path):
    """'Größe': Pillow's default font draws ö and ß as boxes; the title font has them. '形状': drawn by an
    installed font that has them, or tools/demo.py says in one note line which characters no installed
    font has (here, where no CJK font is installed)."""
    from repvit_mm.deploy.render import _characters, _font, _font_files

    def glyph(font, character):
        return np.asarray(font.getmask(character)).tobytes()

    font = _font(20, 'Größe')
    box = glyph(font, '\U000f0000')  # a private-use code point: no font has it, drawn as the box
    assert all(glyph(font, c) != box for c in 'Größe')
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(tmp_path / 'a.png')
    proc = run_tool(
        'demo.py',
        tmp_path / 'a.png',
        CLS_CFG,
        _tiny_classifier(tmp_path),
        '--out',
        tmp_path / 'out.png',
        '--title',
        'Größe 形状',
    )
    notes = [line for line in proc.stdout.splitlines() if line.startswith('note:')]
    cjk = {ord('形'), ord('状')}
    if any(cjk <= _characters(path) for path in _font_files()):
        assert not notes, proc.stdout
        assert all(glyph(_font(20, '形状'), c) != box for c in '形状')
    else:
        assert len(notes) == 1 and "'形状'" in notes[0] and 'ö' not in notes[0], proc.stdout
    assert_not_blank(tmp_path / 'out.png')


def test_the_demo_driver_is_not_part_of_the_library():
    import repvit_mm

    package = Path(repvit_mm.__file__).parent
    assert not list(package.rglob('*demo*.py'))  # it runs tools/*.py: a tool of the source checkout


# ----------------------------------------------------------------------------------------- the demo
def check_demo(out: Path, stdout: str) -> dict[str, float]:
    """Every artefact exists and is printed, every picture shows something; returns the metrics."""
    summary = json.loads((out / 'summary.json').read_text())
    artefacts, metrics = summary['artefacts'], summary['metrics']
    for task in ('classification', 'detection', 'segmentation'):
        for kind in ('checkpoint', 'log', 'fused checkpoint', 'picture'):
            assert f'{task} {kind}' in artefacts, (task, kind)
    for name, path in artefacts.items():
        assert path in stdout, f'the demo does not print where its {name} is'
        assert (out / path).exists(), f'{name}: {path} missing'
    for picture in PICTURES:
        assert_not_blank(out / 'pictures' / f'{picture}.png')
    # one line per task, drawn from every logged iteration
    loss_pixels = np.all(np.abs(pixels(out / 'pictures' / 'training_curves.png') - TRAINING_LOSS_RGB) < 30, axis=-1)
    assert loss_pixels.sum() > 3 * 300, 'training_curves.png draws no loss lines'
    assert (out / 'deploy' / 'classifier.onnx').stat().st_size > 100_000
    assert (out / 'deploy' / 'classifier.mlpackage' / 'Manifest.json').is_file()

    expected = [
        'classification accuracy/top1',
        'detection coco/bbox_mAP',
        'detection coco/segm_mAP',
        'segmentation mIoU',
        'images/s at batch 1, fused',
        'images/s at batch 1, unfused',
    ]
    for name in expected:
        assert name in metrics and math.isfinite(metrics[name]), name
    assert 0 <= metrics['classification accuracy/top1'] <= 100
    # the whole segmentor in ONNX Runtime, evaluated by tools/test.py as its checkpoint was
    assert (out / 'deploy' / 'segmentation_int8.onnx').stat().st_size < (
        out / 'deploy' / 'segmentation_fp32.onnx'
    ).stat().st_size
    assert abs(metrics['segmentation mIoU, ONNX Runtime fp32'] - metrics['segmentation mIoU']) <= 0.1
    assert 0 <= metrics['segmentation mIoU, ONNX Runtime int8'] <= 100
    assert metrics['images/s at batch 1, fused'] > 0
    return metrics


def test_demo_steps_run_the_tools_in_a_new_interpreter_streaming_their_output(tmp_path, capsys):
    demo = orchestrator_module('run_demo')
    output = demo._tool('make_shapes.py', '-h', prefix='[data] ')
    assert output.startswith('usage: make_shapes.py')
    streamed = capsys.readouterr().out.splitlines()
    assert streamed[1].startswith(f'[data] ==> {sys.executable} ')  # the command line, as a user would type it
    assert all(line.startswith('[data] ') for line in streamed[1:]) and len(streamed) > 5
    with pytest.raises(RuntimeError, match=r'demo step failed: .*make_shapes.py .*--no-such-option \(exit code 2\)'):
        demo._tool('make_shapes.py', tmp_path / 'data', '--no-such-option')
    assert not (tmp_path / 'data').exists()


@pytest.mark.slow
def test_quick_demo_produces_every_artefact_and_picture(tmp_path, monkeypatch, capsys):
    """``run_demo.py --quick``, its steps forked from the tool zygote like every tool run of the tests (the
    test above runs the demo's own ``_tool``; a new interpreter per step would add ~80 s of imports)."""
    demo = orchestrator_module('run_demo')
    monkeypatch.setattr(demo, '_tool', forked_step)
    out = tmp_path / 'demo'
    demo.main(['--out', str(out), '--quick'])
    stdout = capsys.readouterr().out
    check_demo(out, stdout)
    # the classifier's picture shows the first validation images, in the split's order (classes interleaved)
    first = [
        line.split()[0].split('/')[1]
        for line in (out / 'data-quick' / 'imagenet' / 'meta' / 'val.txt').read_text().splitlines()[:4]
    ]
    assert first == ['circle_00000.JPEG', 'square_00000.JPEG', 'triangle_00000.JPEG', 'circle_00001.JPEG']
    drawn = re.findall(r'^(\w+_\d+\.JPEG): top-3: ', stdout, re.M)
    assert drawn == first
    artefacts = json.loads((out / 'summary.json').read_text())['artefacts']
    for task in ('classification', 'detection', 'segmentation'):
        scalars = Path(artefacts[f'{task} log']).parent / 'vis_data' / 'scalars.json'
        records = [json.loads(line) for line in scalars.read_text().splitlines()]
        assert [r['iter'] for r in records if 'loss' in r] == [1, 2, 3, 4], task  # every iteration logged
    with Image.open(out / 'pictures' / 'classification.png') as picture:
        assert picture.width > 4 * 256  # four 64 px images, each drawn at 256 px


@pytest.mark.full_demo
def test_full_demo_reaches_the_readme_numbers(tmp_path):
    """``make demo`` as the README describes it (about 9 minutes on 2 CPU cores)."""
    out = tmp_path / 'demo'
    proc = run_tool('run_demo.py', '--out', out, timeout=3600)
    metrics = check_demo(out, proc.stdout)
    for name, target in TARGETS.items():
        assert metrics[name] >= target, (name, metrics[name])
