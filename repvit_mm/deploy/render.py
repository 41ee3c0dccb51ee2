"""One image in, a rendered prediction out, with the frameworks' own inferencers and visualizers.

- classification: mmpretrain ``ImageClassificationInferencer``; the top-5 classes and scores;
- detection: mmdet ``DetInferencer``; masks and boxes drawn by mmengine's ``Visualizer``, 'class score'
  labels;
- segmentation: mmseg ``MMSegInferencer``; the colour overlay drawn by ``SegLocalVisualizer``, each class
  named on its largest region.

The model is built and its checkpoint loaded strictly by :func:`repvit_mm.deploy.load_model` (training
and fused deploy checkpoints alike), then handed to the inferencer. Predictions are made on the image as
it is; the drawing is enlarged to at least 256 pixels on the short side (the model's masks and boxes scaled
with it) so that labels fit, and every label is kept whole inside the picture. Several images make a grid.
Whatever the image's shape, the picture's longer side is at most :data:`MAX_SIDE` pixels (a 1 x 10000
image would otherwise be drawn 256 x 2,560,000: gigabytes); the result says when it was capped.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from mmengine.config import Config

from ..utils.config import split_datasets
from ..utils.drawing import MIN_SIDE
from ..utils.errors import UserInputError
from ..utils.outputs import atomic_output, check_output
from .model import LoadedModel, class_names, load_model, read_config, task_of

__all__ = ['render_prediction', 'TASK_CHOICES']

TASK_CHOICES = ('auto', 'classification', 'detection', 'segmentation')
MAX_SIDE = 8192  # longer side of a drawn prediction or grid, at most (8192 x 8192 RGB: 200 MB)
LABEL_MIN_PX = 12
GRID_COLUMNS = 4


def _strip_annotation_loading(cfg: Config) -> None:
    """Inference has no labels: drop every ``*LoadAnnotations`` step of the test pipeline (the
    inferencers only know the frameworks' own transform names)."""
    for dataset in split_datasets(cfg, ('test',)):
        dataset.pipeline = [t for t in dataset.pipeline if 'LoadAnnotations' not in str(t.get('type', ''))]


def _palette(cfg: Config, num_classes: int) -> list[tuple[int, int, int]]:
    for dataset in split_datasets(cfg, ('test', 'val', 'train')):
        palette = (dataset.get('metainfo') or {}).get('palette')
        if palette and len(palette) >= num_classes:
            return [tuple(int(c) for c in color) for color in palette[:num_classes]]
    rng = np.random.RandomState(42)
    return [tuple(int(c) for c in rng.randint(0, 256, 3)) for _ in range(num_classes)]


def _inject(base: type, model: torch.nn.Module) -> type:
    """A subclass of an mmengine inferencer that uses ``model`` instead of building and loading one."""
    return type(f'Loaded{base.__name__}', (base,), {'_init_model': lambda self, cfg, weights, device: model})


# ----------------------------------------------------------------------------- drawing
@dataclass
class _Label:
    """A text box to draw: ``anchor`` is its top-left corner before it is moved inside the picture."""

    text: str
    anchor: tuple[float, float]
    color: tuple[int, int, int] = (0, 0, 0)


@functools.cache
def _font_files() -> tuple[str, ...]:
    """TrueType fonts to draw text with: DejaVu Sans first (matplotlib's copy, always installed with it;
    Pillow's default font has Latin letters only), then every other font matplotlib finds on the system."""
    from matplotlib import font_manager

    dejavu = font_manager.findfont('DejaVu Sans', fallback_to_default=True)
    return (dejavu, *sorted({f.fname for f in font_manager.fontManager.ttflist} - {dejavu}))


@functools.cache
def _characters(path: str) -> frozenset[int]:
    """The code points a font file has glyphs for (empty if it cannot be read)."""
    from fontTools.ttLib import TTFont

    try:
        with TTFont(path, fontNumber=0, lazy=True) as font:
            return frozenset(font.getBestCmap() or ())
    except Exception:  # a broken or unusual font file: not a candidate
        return frozenset()


def _font_file(text: str) -> tuple[str, str]:
    """The first font with glyphs for every character of ``text`` (or the one lacking the fewest), and the
    characters it lacks (drawn as boxes)."""
    needed = {ord(c) for c in text if c.isprintable() and not c.isspace()}
    best = None
    for path in _font_files():
        missing = needed - _characters(path)
        if not missing:
            return path, ''
        if best is None or len(missing) < len(best[1]):
            best = (path, missing)
    return best[0], ''.join(sorted(map(chr, best[1])))


def _font(size: int, text: str = ''):
    from PIL import ImageFont

    return ImageFont.truetype(_font_file(text)[0], size=size)


def _drawn_size(height: int, width: int, resize: int | None) -> tuple[int, int]:
    """(height, width) of the drawn picture: short side ``resize``, or the image's own, at least MIN_SIDE;
    the longer side at most MAX_SIDE (a thin image keeps its shape, not its short side)."""
    short = min(height, width)
    scale = min((resize or max(short, MIN_SIDE)) / short, MAX_SIDE / max(height, width))
    return max(round(height * scale), 1), max(round(width * scale), 1)


def _cap_note(height: int, width: int, resize: int | None) -> str | None:
    """Why the picture of a ``height`` x ``width`` image is smaller than asked, if it is."""
    short = min(height, width)
    if (resize or max(short, MIN_SIDE)) / short <= MAX_SIDE / max(height, width):
        return None
    drawn = _drawn_size(height, width, resize)
    return f'drawn at {drawn[1]}x{drawn[0]}: the longer side of a picture is at most {MAX_SIDE} pixels'


def _enlarged(image: str, resize: int | None) -> tuple[np.ndarray, float, float]:
    """The image (RGB) at its drawn size (:func:`_drawn_size`) and the x, y scale from the image to it.
    Read by mmcv as the model's ``LoadImageFromFile`` reads it (EXIF orientation applied: a photo taken
    upright is upright, its width and height those the model saw; PIL's ``size`` would be the stored ones)."""
    from mmcv import imread, imresize

    rgb = imread(image, channel_order='rgb')
    height, width = rgb.shape[:2]
    size = _drawn_size(height, width, resize)
    return imresize(rgb, size[::-1], interpolation='bicubic'), size[1] / width, size[0] / height


def _draw_labels(picture: np.ndarray, labels: list[_Label]) -> np.ndarray:
    """Text boxes (white on the label's colour) kept whole inside the picture and clear of each other."""
    from PIL import Image, ImageDraw

    canvas = Image.fromarray(np.ascontiguousarray(picture))
    draw = ImageDraw.Draw(canvas)
    font = _font(max(LABEL_MIN_PX, min(canvas.size) // 16), ''.join(label.text for label in labels))
    pad, placed = 2, []
    for label in labels:
        left, top, right, bottom = draw.textbbox((0, 0), label.text, font=font)
        width, height = right - left + 2 * pad, bottom - top + 2 * pad
        x = min(max(label.anchor[0], 0), max(canvas.width - width, 0))
        y = min(max(label.anchor[1], 0), max(canvas.height - height, 0))
        for _ in range(len(placed)):  # step below (or above, at the bottom) a label already there
            hit = next((p for p in placed if x < p[2] and p[0] < x + width and y < p[3] and p[1] < y + height), None)
            if hit is None:
                break
            y = hit[3] if hit[3] + height <= canvas.height else max(hit[1] - height, 0)
        placed.append((x, y, x + width, y + height))
        draw.rectangle((x, y, x + width - 1, y + height - 1), fill=label.color)
        draw.text((x + pad - left, y + pad - top), label.text, fill='white', font=font)
    return np.asarray(canvas)


def _compose(panels: list[tuple[np.ndarray, str]], title: str | None) -> np.ndarray:
    """Panels in a grid of up to GRID_COLUMNS columns, each with its caption above, under a title."""
    from PIL import Image, ImageDraw

    columns = min(len(panels), GRID_COLUMNS)
    rows = -(-len(panels) // columns)
    cell_w = max(p.shape[1] for p, _ in panels)
    cell_h = max(p.shape[0] for p, _ in panels)
    scale = MAX_SIDE / max(columns * cell_w, rows * cell_h)
    if scale < 1:  # many or large panels: shrink them all, the grid stays within MAX_SIDE
        panels = [(_scaled(p, scale), caption) for p, caption in panels]
        cell_w = max(p.shape[1] for p, _ in panels)
        cell_h = max(p.shape[0] for p, _ in panels)
    caption_font = _font(max(LABEL_MIN_PX, cell_w // 18), ''.join(caption for _, caption in panels))
    title_font = _font(max(LABEL_MIN_PX + 2, cell_w // 14), title or '')
    gap = caption_h = caption_font.size + 8
    width = columns * cell_w + (columns + 1) * gap
    title_lines = _wrap(title, title_font, width - 2 * gap) if title else []
    title_h = len(title_lines) * (title_font.size + 6) + (gap if title_lines else 0)
    canvas = Image.new('RGB', (width, title_h + rows * (caption_h + cell_h + gap) + gap), 'white')
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(title_lines):
        draw.text((gap, gap + i * (title_font.size + 6)), line, fill='black', font=title_font)
    for index, (picture, caption) in enumerate(panels):
        row, column = divmod(index, columns)
        x = gap + column * (cell_w + gap)
        y = title_h + gap + row * (caption_h + cell_h + gap)
        draw.text((x, y), _fit(caption, caption_font, cell_w), fill='black', font=caption_font)
        canvas.paste(Image.fromarray(np.ascontiguousarray(picture)), (x, y + caption_h))
    picture = np.asarray(canvas)
    scale = MAX_SIDE / max(picture.shape[:2])
    return _scaled(picture, scale) if scale < 1 else picture  # captions and gaps pushed it over


def _scaled(picture: np.ndarray, scale: float) -> np.ndarray:
    from PIL import Image

    height, width = picture.shape[:2]
    size = (max(round(width * scale), 1), max(round(height * scale), 1))
    return np.asarray(Image.fromarray(np.ascontiguousarray(picture)).resize(size, Image.BILINEAR))


def _wrap(text: str, font, width: int) -> list[str]:
    lines = ['']
    for word in text.split():
        candidate = f'{lines[-1]} {word}'.strip()
        if font.getlength(candidate) <= width or not lines[-1]:
            lines[-1] = candidate
        else:
            lines.append(word)
    return lines


def _fit(text: str, font, width: int) -> str:
    """``text`` shortened from the left ('...tail') to fit ``width`` pixels."""
    while font.getlength(text) > width and len(text) > 4:
        text = '...' + text[4:]
    return text


# ----------------------------------------------------------------------------- the three tasks
Drawer = Callable[[str, int | None], tuple[np.ndarray, str]]


def _classifier(loaded: LoadedModel, topk: int, device: str = 'cpu') -> Drawer:
    """The top-k classes and scores, one per line in the top-left corner."""
    from mmpretrain.apis import ImageClassificationInferencer

    classes = class_names(loaded.cfg, loaded.meta)
    loaded.model._config = loaded.cfg  # what mmpretrain's inferencer reads its pipeline from
    inferencer = ImageClassificationInferencer(loaded.model, pretrained=False, classes=classes, device=device)

    def draw(image: str, resize: int | None) -> tuple[np.ndarray, str]:
        with contextlib.redirect_stdout(io.StringIO()):  # its progress bar, for one image
            sample = inferencer(image, return_datasamples=True)[0]
        scores = sample.pred_score.cpu()
        top = scores.topk(min(topk, scores.numel()))
        names = [classes[i] if classes else str(i) for i in top.indices.tolist()]
        lines = [f'{name} {value:.2f}' for name, value in zip(names, top.values.tolist(), strict=False)]
        rgb, _, _ = _enlarged(image, resize)
        line_h = max(LABEL_MIN_PX, min(rgb.shape[:2]) // 16) + 6
        picture = _draw_labels(
            rgb, [_Label(line, (4, 4 + i * line_h), (0, 0, 0) if i else (40, 40, 40)) for i, line in enumerate(lines)]
        )
        return picture, f'top-{len(names)}: ' + ', '.join(
            f'{n} {v:.3f}' for n, v in zip(names, top.values.tolist(), strict=False)
        )

    return draw


def _detector(loaded: LoadedModel, score_thr: float, device: str = 'cpu') -> Drawer:
    """Masks, boxes and 'class score' labels of the instances scoring at least ``score_thr``."""
    from mmdet.apis import DetInferencer
    from mmengine.visualization import Visualizer

    classes = class_names(loaded.cfg, loaded.meta) or []
    palette = _palette(loaded.cfg, len(classes))
    loaded.model.dataset_meta = {'classes': tuple(classes), 'palette': palette}
    inferencer = _inject(DetInferencer, loaded.model)(model=loaded.cfg, device=device, show_progress=False)

    def draw(image: str, resize: int | None) -> tuple[np.ndarray, str]:
        result = inferencer(
            image, return_datasamples=True, no_save_vis=True, no_save_pred=True, pred_score_thr=score_thr
        )
        instances = result['predictions'][0].pred_instances.cpu()
        instances = instances[instances.scores >= score_thr]
        rgb, sx, sy = _enlarged(image, resize)
        visualizer = Visualizer(name=f'repvit-render-{id(rgb)}', image=rgb)
        labels = instances.labels.tolist()
        colors = [palette[label] for label in labels]
        if len(labels):
            if 'masks' in instances:  # the model's masks at the image's size, enlarged like the image
                masks = (
                    torch.nn.functional.interpolate(
                        instances.masks[None].float(), size=rgb.shape[:2], mode='bilinear', align_corners=False
                    )[0]
                    >= 0.5
                )
                visualizer.draw_binary_masks(masks.numpy(), colors=colors, alphas=0.5)
            boxes = instances.bboxes * instances.bboxes.new_tensor([sx, sy, sx, sy])
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, rgb.shape[1] - 1)  # as drawn: inside the picture
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, rgb.shape[0] - 1)
            visualizer.draw_bboxes(boxes, edge_colors=colors, line_widths=2)
        boxes = instances.bboxes.tolist()
        picture = _draw_labels(
            visualizer.get_image(),
            [
                _Label(f'{classes[label]} {score:.2f}', (box[0] * sx, box[1] * sy - 1), _darker(palette[label]))
                for label, score, box in zip(labels, instances.scores.tolist(), boxes, strict=False)
            ],
        )
        return picture, f'{len(labels)} instances with score >= {score_thr:g}'

    return draw


def _segmentor(loaded: LoadedModel, device: str = 'cpu') -> Drawer:
    """mmseg's colour overlay of the predicted classes, each named at the centre of its largest region."""
    import cv2
    from mmengine.structures import PixelData
    from mmseg.apis import MMSegInferencer
    from mmseg.structures import SegDataSample

    classes = class_names(loaded.cfg, loaded.meta)
    if not classes:
        num = int(loaded.cfg.model.decode_head.num_classes)
        classes = [str(i) for i in range(num)]
    palette = _palette(loaded.cfg, len(classes))
    loaded.model.dataset_meta = {'classes': tuple(classes), 'palette': palette}
    inferencer = _inject(MMSegInferencer, loaded.model)(
        model=loaded.cfg, classes=list(classes), palette=palette, device=device
    )
    inferencer.show_progress = False  # mmengine's progress bar, for one image

    def draw(image: str, resize: int | None) -> tuple[np.ndarray, str]:
        sample = inferencer(image, return_datasamples=True)
        sample = sample[0] if isinstance(sample, list) else sample  # mmseg unwraps lists of one image
        pred = sample.pred_sem_seg.data[0].cpu().numpy().astype(np.uint8)
        rgb, _, _ = _enlarged(image, resize)  # the prediction has the image's size
        enlarged = cv2.resize(pred, rgb.shape[1::-1], interpolation=cv2.INTER_NEAREST)
        drawn = SegDataSample(pred_sem_seg=PixelData(data=torch.from_numpy(enlarged)[None]))
        inferencer.visualizer.add_datasample('prediction', rgb, drawn, draw_gt=False, with_labels=False)
        labels = []
        for index in np.unique(enlarged):
            count, regions, stats, centres = cv2.connectedComponentsWithStats((enlarged == index).astype(np.uint8))
            if count > 1:
                x, y = centres[1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))]
                labels.append(_Label(classes[index], (x - 20, y - 8), _darker(palette[index])))
        picture = _draw_labels(inferencer.visualizer.get_image(), labels)
        values, counts = np.unique(pred, return_counts=True)
        return picture, 'classes: ' + ', '.join(
            f'{classes[i]} {c / pred.size:.0%}' for i, c in zip(values, counts, strict=False)
        )

    return draw


def _darker(color: tuple[int, int, int]) -> tuple[int, int, int]:
    """The class colour, dark enough for white text on it."""
    return tuple(int(c * 0.7) for c in color)


def _check_device(device: str) -> None:
    try:
        kind = torch.device(device).type
    except RuntimeError as err:
        raise UserInputError(f'--device {device!r}: {err}') from None
    if kind == 'cuda' and not torch.cuda.is_available():
        raise UserInputError(f'--device {device}: no CUDA GPU is available here (use --device cpu)')


def render_prediction(
    image: str | os.PathLike | Sequence[str | os.PathLike],
    config: str | os.PathLike | Config,
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    *,
    task: str = 'auto',
    force: bool = False,
    topk: int = 5,
    score_thr: float = 0.3,
    resize: int | None = None,
    title: str | None = None,
    device: str = 'cpu',
) -> dict[str, Any]:
    """Predict on ``image`` (one path or several) and write the rendered picture (PNG) to ``out``.

    Args:
        task: ``'auto'`` (from the config's ``default_scope``) or the expected task, checked.
        topk: classes listed for a classifier; ``score_thr``: lowest detection score drawn;
        resize: short side of each drawn prediction; default: the image's own, at least 256 pixels, so
            that small images (the Shapes data) have room for legible labels.
        title: drawn above the picture; several images are drawn in a grid of up to four columns, each
            captioned with its file name.
        device: where the model runs (``'cpu'``, ``'cuda'``, ``'cuda:1'``, ...).

    Returns:
        ``{'out', 'task', 'size': (height, width), 'summary', 'notes'}``; the summary lists what was drawn
        (one ``name: ...`` line per image when there are several); ``notes``: one line per image drawn
        smaller than asked (its longer side capped at :data:`MAX_SIDE`).
    """
    if task not in TASK_CHOICES:
        raise UserInputError(f'unknown task {task!r}; choose from {", ".join(TASK_CHOICES)}')
    if resize is not None and resize < 1:
        raise UserInputError(f'resize must be a positive number of pixels, got {resize}')
    out_path = check_output(out, force, suffixes=('.png',))
    _check_device(device)
    images = [str(image)] if isinstance(image, (str, os.PathLike)) else [str(i) for i in image]
    if not images:
        raise UserInputError('no image given')
    from mmcv import imread

    notes = []
    for path in images:
        if not os.path.isfile(path):
            raise UserInputError(f'image not found: {path}')
        try:
            height, width = imread(path).shape[:2]  # (a readable picture?)
        except Exception as err:
            raise UserInputError(f'cannot read image {path}: {err}') from err
        note = _cap_note(height, width, resize)
        if note:
            notes.append(f'{path}: {note}')

    cfg = read_config(config)
    actual = task_of(cfg)
    if task != 'auto' and task != actual:
        raise UserInputError(f'--task {task}, but {cfg.filename} is a {actual} config')
    cfg = copy.deepcopy(cfg)
    _strip_annotation_loading(cfg)
    loaded = load_model(cfg, checkpoint)
    loaded.model.to(device)
    with torch.no_grad():
        if actual == 'classification':
            draw = _classifier(loaded, topk, device)
        elif actual == 'detection':
            draw = _detector(loaded, score_thr, device)
        else:
            draw = _segmentor(loaded, device)
        drawn = [draw(path, resize) for path in images]

    texts = [title or '', *map(os.path.basename, images), *(class_names(loaded.cfg, loaded.meta) or ())]
    missing = _font_file(''.join(texts))[1]
    if missing:
        notes.append(f'no installed font has glyphs for {missing!r}: drawn as boxes (install a font that has them)')
    if len(images) == 1 and title is None:
        picture, summary = drawn[0]
    else:
        picture = _compose([(p, os.path.basename(path)) for (p, _), path in zip(drawn, images, strict=False)], title)
        summary = '\n'.join(f'{os.path.basename(path)}: {text}' for (_, text), path in zip(drawn, images, strict=False))

    from PIL import Image

    with atomic_output(out_path) as tmp:
        Image.fromarray(np.ascontiguousarray(picture)).save(tmp, format='PNG')
    return {'out': str(out_path), 'task': actual, 'size': tuple(picture.shape[:2]), 'summary': summary, 'notes': notes}
