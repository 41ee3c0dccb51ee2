"""Shapes: a tiny, deterministic stand-in for ImageNet, COCO and ADE20K.

Images show filled circles, squares and triangles of random colour, size, rotation and position
on textured backgrounds (smooth gradient, low-frequency blotches, optional stripes, pixel noise).
The same generator writes three on-disk formats that the real OpenMMLab dataset classes read:

``imagenet``  ``train/<class>/*.JPEG``, ``val/<class>/*.JPEG``, ``meta/{train,val,classes}.txt``;
              one dominant shape per image (its class is the label) plus clearly smaller distractors.
``coco``      ``{train,val}2017/*.jpg`` and ``annotations/instances_{train,val}2017.json`` with
              polygon masks (circles as 32-gons), xywh boxes and polygon areas; shapes never overlap.
``ade20k``    ``images/{training,validation}/*.jpg`` and ``annotations/{training,validation}/*.png``
              with 0 = unlabeled (ambiguous boundary pixels), 1 = background, 2.. = shapes, to be
              read with ``reduce_zero_label=True`` like ADE20K.

``coco`` and ``ade20k`` draw their scenes from one random stream, so with equal sizes the n-th image
of a split is the same picture in both formats. The same seed gives byte-identical files: every
random draw comes from a ``numpy`` generator seeded per image, and files carry no timestamps
(fixed JPEG/PNG settings, JSON with sorted keys).
"""

from __future__ import annotations

import colorsys
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from ..utils.outputs import atomic_output

__all__ = [
    'SHAPES_CLASSES',
    'SHAPES_PALETTE',
    'SHAPES_SEG_CLASSES',
    'SHAPES_SEG_PALETTE',
    'SHAPES_METAINFO',
    'SHAPES_FORMATS',
    'ADE20K_UNLABELED',
    'DEFAULT_SPECS',
    'FormatSpec',
    'Shape',
    'Scene',
    'make_shapes',
    'classification_scene',
    'instance_scene',
    'polygon_coverage',
]

SHAPES_CLASSES: tuple[str, ...] = ('circle', 'square', 'triangle')
SHAPES_PALETTE: list[tuple[int, int, int]] = [(220, 20, 60), (30, 144, 255), (255, 190, 0)]
# Segmentation classes after ``reduce_zero_label``: on-disk value v becomes v - 1, and 0 becomes 255.
SHAPES_SEG_CLASSES: tuple[str, ...] = ('background', *SHAPES_CLASSES)
SHAPES_SEG_PALETTE: list[tuple[int, int, int]] = [(120, 120, 120), *SHAPES_PALETTE]
ADE20K_UNLABELED = 0  # on-disk value of pixels nobody should be scored on ("other" in ADE20K)

SHAPES_FORMATS: tuple[str, ...] = ('imagenet', 'coco', 'ade20k')
# Ready-made ``metainfo`` per format; plain tuples/lists so they survive config dumps (palettes
# stay lists: mmdet reads a tuple palette as one colour for every class).
SHAPES_METAINFO: dict[str, dict[str, tuple | list]] = {
    'imagenet': dict(classes=SHAPES_CLASSES, palette=SHAPES_PALETTE),
    'coco': dict(classes=SHAPES_CLASSES, palette=SHAPES_PALETTE),
    'ade20k': dict(classes=SHAPES_SEG_CLASSES, palette=SHAPES_SEG_PALETTE),
}


@dataclass(frozen=True)
class FormatSpec:
    """How much to write for one format. For ``imagenet`` the counts are per class."""

    num_train: int
    num_val: int
    image_size: int


DEFAULT_SPECS: dict[str, FormatSpec] = {
    'imagenet': FormatSpec(num_train=120, num_val=20, image_size=64),
    'coco': FormatSpec(num_train=64, num_val=16, image_size=128),
    'ade20k': FormatSpec(num_train=64, num_val=16, image_size=128),
}

MIN_IMAGE_SIZE = 32  # below this the smallest shapes shrink to a few pixels
MAX_IMAGE_SIZE = 1024  # coverage sampling holds (16 x shape area) booleans at once
CIRCLE_VERTICES = 32
VERTICES_PER_CLASS = (CIRCLE_VERTICES, 4, 3)  # circle (as a polygon), square, triangle
DISTRACTOR_AREA_RATIO = (1 / 25, 1 / 10)  # imagenet distractor area / dominant shape area
SUPERSAMPLING = 4  # coverage is measured on a 4x4 grid per pixel: anti-aliased edges, 1/16 steps
EDGE_GAP_PX = 1.0  # shapes stay this far inside the image
JPEG_SETTINGS = dict(format='JPEG', quality=95, subsampling=0, optimize=False, progressive=False)
PNG_SETTINGS = dict(format='PNG', compress_level=6, optimize=False)
SPLITS = ('train', 'val')
# Seed-sequence stream ids; the coco and ade20k writers share one on purpose (same scenes).
CLASSIFICATION_STREAM = 0
INSTANCE_STREAM = 1
COCO_VAL_ID_OFFSET = 1_000_000  # image/annotation ids stay unique across splits, like COCO's


# ----------------------------------------------------------------------------- geometry
@dataclass(frozen=True)
class Shape:
    """A filled shape given by class index, circumscribed circle, rotation and colour."""

    label: int
    cx: float
    cy: float
    radius: float
    angle: float
    color: tuple[int, int, int] = (0, 0, 0)

    def polygon(self) -> np.ndarray:
        """Vertices (N, 2) in pixel coordinates (pixel (0, 0) spans [0, 1]^2), rounded to 0.01.

        The rounded vertices are what gets both rendered and annotated, so they agree exactly.
        """
        num_vertices = VERTICES_PER_CLASS[self.label]
        # At angle 0 squares are axis-aligned and triangles point up; the angle rotates them.
        start = self.angle + (math.pi / 4 if num_vertices == 4 else -math.pi / 2)
        phases = start + 2 * math.pi * np.arange(num_vertices) / num_vertices
        points = np.stack([self.cx + self.radius * np.cos(phases), self.cy + self.radius * np.sin(phases)], axis=1)
        return np.round(points, 2)


def signed_area(polygon: np.ndarray) -> float:
    """Shoelace area of a simple polygon: positive when its vertices run counter-clockwise."""
    x, y = polygon[:, 0], polygon[:, 1]
    return float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2


def polygon_area(polygon: np.ndarray) -> float:
    """Area of a simple polygon (what COCO's ``area`` holds for a polygon annotation)."""
    return abs(signed_area(polygon))


def polygon_coverage(polygon: np.ndarray, image_size: int, samples: int = SUPERSAMPLING) -> np.ndarray:
    """Fraction of each pixel covered by a convex polygon, (H, W) float32 in [0, 1].

    Exact half-plane tests on ``samples x samples`` points per pixel: no rasteriser rounding,
    so the anti-aliased rendering and the annotation polygon describe the same region.
    """
    coverage = np.zeros((image_size, image_size), np.float32)
    x0, y0 = np.maximum(np.floor(polygon.min(axis=0)).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(polygon.max(axis=0)).astype(int), image_size)
    if x1 <= x0 or y1 <= y0:
        return coverage
    offsets = (np.arange(samples) + 0.5) / samples
    xs = (np.arange(x0, x1)[:, None] + offsets).ravel()[None, :]  # sample columns
    ys = (np.arange(y0, y1)[:, None] + offsets).ravel()[:, None]  # sample rows
    orientation = np.sign(signed_area(polygon)) or 1.0
    inside = np.ones((ys.size, xs.size), bool)
    for (px, py), (qx, qy) in zip(polygon, np.roll(polygon, -1, axis=0), strict=False):
        inside &= orientation * ((qx - px) * (ys - py) - (qy - py) * (xs - px)) >= 0
    cells = inside.reshape(y1 - y0, samples, x1 - x0, samples).mean(axis=(1, 3))
    coverage[y0:y1, x0:x1] = cells
    return coverage


# ----------------------------------------------------------------------------- layouts
def _try_place(
    rng: np.random.Generator, image_size: int, radius: float, placed: list[Shape], gap: float, attempts: int
) -> tuple[float, float] | None:
    """Rejection-sample a centre whose circumscribed circle stays inside and clear of others."""
    low, high = radius + EDGE_GAP_PX, image_size - radius - EDGE_GAP_PX
    if high < low:
        return None
    for _ in range(attempts):
        cx, cy = rng.uniform(low, high, size=2)
        if all(math.hypot(cx - s.cx, cy - s.cy) >= radius + s.radius + gap for s in placed):
            return float(cx), float(cy)
    return None


def _area_per_squared_radius(label: int) -> float:
    """Area of a regular polygon of the class with circumradius 1."""
    n = VERTICES_PER_CLASS[label]
    return n / 2 * math.sin(2 * math.pi / n)


def _classification_layout(rng: np.random.Generator, image_size: int, label: int) -> list[Shape]:
    """One dominant shape of class ``label`` and up to two distractors of 1/25..1/10 its area."""
    radius = rng.uniform(0.28, 0.40) * image_size
    dominant = Shape(
        label, *_try_place(rng, image_size, radius, [], 0, 1), radius=radius, angle=rng.uniform(0, 2 * math.pi)
    )
    dominant_area = _area_per_squared_radius(label) * radius**2
    shapes = [dominant]
    for _ in range(rng.integers(0, 3)):
        # Sized by area, not radius: a circle holds 2.4x the area of a triangle of equal radius.
        small_label = int(rng.integers(len(SHAPES_CLASSES)))
        small_area = rng.uniform(*DISTRACTOR_AREA_RATIO) * dominant_area
        small_radius = math.sqrt(small_area / _area_per_squared_radius(small_label))
        angle = rng.uniform(0, 2 * math.pi)
        centre = _try_place(rng, image_size, small_radius, shapes, gap=2.0, attempts=30)
        if centre is not None:
            shapes.append(Shape(small_label, *centre, radius=small_radius, angle=angle))
    return shapes


def _instance_layout(rng: np.random.Generator, image_size: int) -> list[Shape]:
    """Two to five non-overlapping shapes, so every polygon is fully visible (no occlusion)."""
    shapes: list[Shape] = []
    for _ in range(rng.integers(2, 6)):
        radius = rng.uniform(0.08, 0.18) * image_size
        label = int(rng.integers(len(SHAPES_CLASSES)))
        angle = rng.uniform(0, 2 * math.pi)
        centre = _try_place(rng, image_size, radius, shapes, gap=3.0, attempts=50)
        if centre is not None:
            shapes.append(Shape(label, *centre, radius=radius, angle=angle))
    return shapes


# ----------------------------------------------------------------------------- rendering
@dataclass(frozen=True)
class Scene:
    """A rendered image with its shapes and each shape's per-pixel coverage (same order)."""

    image: np.ndarray  # (H, W, 3) uint8
    shapes: tuple[Shape, ...]
    coverages: tuple[np.ndarray, ...]  # (H, W) float32 in [0, 1]

    def label_map(self) -> np.ndarray:
        """ADE20K-style labels: 1 background, 2 + class for shapes, 0 on ambiguous edges.

        A pixel belongs to a shape when at least 3/4 of it is covered, to the background when at
        most 1/4 is; anything in between is a mixed edge pixel and stays unlabeled, as in ADE20K.
        """
        labels = np.ones(self.image.shape[:2], np.uint8)
        for shape, coverage in zip(self.shapes, self.coverages, strict=False):
            labels[coverage > 0.25] = ADE20K_UNLABELED
            labels[coverage >= 0.75] = shape.label + 2
        return labels


def _hsv_color(rng: np.random.Generator, saturation: tuple[float, float], value: tuple[float, float]) -> np.ndarray:
    rgb = colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(*saturation), rng.uniform(*value))
    return np.array(rgb) * 255


def _smooth_noise(rng: np.random.Generator, image_size: int, cells: int) -> np.ndarray:
    """Bilinearly upsampled coarse Gaussian grid: soft blotches, (H, W) with unit-ish std."""
    grid = rng.normal(size=(cells + 1, cells + 1))
    position = np.linspace(0, cells, image_size)
    index = np.minimum(position.astype(int), cells - 1)
    weight = position - index
    rows = grid[index] * (1 - weight)[:, None] + grid[index + 1] * weight[:, None]
    return rows[:, index] * (1 - weight) + rows[:, index + 1] * weight


def _textured_background(rng: np.random.Generator, image_size: int) -> np.ndarray:
    """Muted two-colour gradient + blotches + (half the time) stripes, (H, W, 3) float."""
    yy, xx = np.mgrid[0:image_size, 0:image_size] / image_size
    direction = rng.uniform(0, 2 * math.pi)
    ramp = xx * math.cos(direction) + yy * math.sin(direction)
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    start, end = (_hsv_color(rng, (0.0, 0.4), (0.2, 0.85)) for _ in range(2))
    image = start + (end - start) * ramp[..., None]
    image += rng.uniform(8, 25) * _smooth_noise(rng, image_size, int(rng.integers(2, 6)))[..., None]
    if rng.uniform() < 0.5:
        period = rng.uniform(0.06, 0.2) * image_size
        angle, phase = rng.uniform(0, 2 * math.pi, size=2)
        wave = np.sin(2 * math.pi * (xx * math.cos(angle) + yy * math.sin(angle)) * image_size / period + phase)
        image += rng.uniform(5, 18) * wave[..., None]
    return image


def _contrasting_color(rng: np.random.Generator, backdrop: np.ndarray) -> tuple[int, int, int]:
    """A saturated colour far from the mean backdrop colour (best of a few draws)."""
    best, best_distance = None, -1.0
    for _ in range(12):
        color = _hsv_color(rng, (0.5, 1.0), (0.45, 1.0))
        distance = float(np.linalg.norm(color - backdrop))
        if distance > best_distance:
            best, best_distance = color, distance
        if distance >= 110:
            break
    return tuple(int(round(c)) for c in best)


def _render(rng: np.random.Generator, image_size: int, layout: list[Shape]) -> Scene:
    """Paint the shapes with anti-aliased edges on a textured background, then add noise."""
    image = _textured_background(rng, image_size)
    shapes, coverages = [], []
    for shape in layout:
        coverage = polygon_coverage(shape.polygon(), image_size)
        backdrop = image[coverage > 0].mean(axis=0) if coverage.any() else image.mean(axis=(0, 1))
        shape = replace(shape, color=_contrasting_color(rng, backdrop))
        alpha = coverage[..., None]
        image = image * (1 - alpha) + np.array(shape.color, float) * alpha
        shapes.append(shape)
        coverages.append(coverage)
    image += rng.normal(0, rng.uniform(2, 6), size=image.shape)
    pixels = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return Scene(pixels, tuple(shapes), tuple(coverages))


def _scene_rng(seed: int, *keys: int) -> np.random.Generator:
    # One independent stream per image: changing a count never changes the other images.
    return np.random.default_rng(np.random.SeedSequence([seed, *keys]))


def classification_scene(seed: int, split: str, label: int, index: int, image_size: int) -> Scene:
    """The ``index``-th ``imagenet`` image of class ``label`` in ``split``."""
    rng = _scene_rng(seed, CLASSIFICATION_STREAM, SPLITS.index(split), label, index)
    return _render(rng, image_size, _classification_layout(rng, image_size, label))


def instance_scene(seed: int, split: str, index: int, image_size: int) -> Scene:
    """The ``index``-th ``coco``/``ade20k`` image of ``split`` (both formats share scenes)."""
    rng = _scene_rng(seed, INSTANCE_STREAM, SPLITS.index(split), index)
    return _render(rng, image_size, _instance_layout(rng, image_size))


# ----------------------------------------------------------------------------- writers
def _save_jpeg(pixels: np.ndarray, path: Path) -> None:
    Image.fromarray(pixels).save(path, **JPEG_SETTINGS)


def _write_lines(path: Path, lines: Iterable[str]) -> None:
    path.write_text(''.join(f'{line}\n' for line in lines), encoding='utf-8')


def _write_imagenet(root: Path, spec: FormatSpec, seed: int) -> None:
    """``train|val/<class>/<class>_NNNNN.JPEG`` plus ImageNet-style ``meta/*.txt``.

    The lists interleave the classes (circle 0, square 0, triangle 0, circle 1, ...), as ImageNet's
    validation list mixes them: the first images of a split show every class.
    """
    (root / 'meta').mkdir()
    _write_lines(root / 'meta' / 'classes.txt', SHAPES_CLASSES)
    for split, per_class in (('train', spec.num_train), ('val', spec.num_val)):
        for name in SHAPES_CLASSES:
            (root / split / name).mkdir(parents=True)
        entries = []
        for index in range(per_class):
            for label, name in enumerate(SHAPES_CLASSES):
                relative = f'{name}/{name}_{index:05d}.JPEG'
                scene = classification_scene(seed, split, label, index, spec.image_size)
                _save_jpeg(scene.image, root / split / relative)
                entries.append(f'{relative} {label}')
        _write_lines(root / 'meta' / f'{split}.txt', entries)


def _coco_annotations(scene: Scene, image_id: int, first_id: int) -> list[dict]:
    annotations = []
    for offset, shape in enumerate(scene.shapes):
        polygon = shape.polygon()
        (x0, y0), (x1, y1) = polygon.min(axis=0), polygon.max(axis=0)
        annotations.append(
            {
                'id': first_id + offset,
                'image_id': image_id,
                'category_id': shape.label + 1,
                'segmentation': [[round(float(v), 2) for v in polygon.ravel()]],
                'area': round(polygon_area(polygon), 2),
                'bbox': [round(float(v), 2) for v in (x0, y0, x1 - x0, y1 - y0)],
                'iscrowd': 0,
            }
        )
    return annotations


def _write_coco(root: Path, spec: FormatSpec, seed: int) -> None:
    """``{train,val}2017/NNNNNNNNNNNN.jpg`` and ``annotations/instances_{split}2017.json``."""
    (root / 'annotations').mkdir()
    categories = [{'id': i + 1, 'name': name, 'supercategory': 'shape'} for i, name in enumerate(SHAPES_CLASSES)]
    for split, count, id_offset in (('train', spec.num_train, 0), ('val', spec.num_val, COCO_VAL_ID_OFFSET)):
        image_dir = root / f'{split}2017'
        image_dir.mkdir()
        images, annotations = [], []
        for index in range(count):
            scene = instance_scene(seed, split, index, spec.image_size)
            image_id = id_offset + index + 1
            file_name = f'{image_id:012d}.jpg'
            _save_jpeg(scene.image, image_dir / file_name)
            images.append({'id': image_id, 'file_name': file_name, 'height': spec.image_size, 'width': spec.image_size})
            annotations += _coco_annotations(scene, image_id, id_offset + len(annotations) + 1)
        document = {
            # 'info' and 'licenses' are present because some pycocotools versions index them.
            'info': {'description': 'Shapes (repvit-mm synthetic dataset)', 'version': '1.0'},
            'licenses': [],
            'images': images,
            'annotations': annotations,
            'categories': categories,
        }
        path = root / 'annotations' / f'instances_{split}2017.json'
        path.write_text(json.dumps(document, sort_keys=True, separators=(',', ':')), encoding='utf-8')


def _write_ade20k(root: Path, spec: FormatSpec, seed: int) -> None:
    """``images/<split>/ADE_<split>_NNNNNNNN.jpg`` + single-channel ``annotations/<split>/*.png``."""
    for split, folder, count in (('train', 'training', spec.num_train), ('val', 'validation', spec.num_val)):
        (root / 'images' / folder).mkdir(parents=True)
        (root / 'annotations' / folder).mkdir(parents=True)
        for index in range(count):
            scene = instance_scene(seed, split, index, spec.image_size)
            stem = f'ADE_{split}_{index + 1:08d}'
            _save_jpeg(scene.image, root / 'images' / folder / f'{stem}.jpg')
            Image.fromarray(scene.label_map()).save(root / 'annotations' / folder / f'{stem}.png', **PNG_SETTINGS)


WRITERS: dict[str, Callable[[Path, FormatSpec, int], None]] = {
    'imagenet': _write_imagenet,
    'coco': _write_coco,
    'ade20k': _write_ade20k,
}


# ----------------------------------------------------------------------------- public entry
PerFormat = int | Mapping[str, int] | None


def make_shapes(
    out_dir: str | os.PathLike,
    *,
    formats: Iterable[str] = SHAPES_FORMATS,
    num_train: PerFormat = None,
    num_val: PerFormat = None,
    image_size: PerFormat = None,
    seed: int = 0,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Write the Shapes dataset under ``out_dir/<format>`` and return ``{format: path}``.

    ``num_train``/``num_val``/``image_size`` take one int for every format or a
    ``{format: int}`` mapping; what is left out comes from ``DEFAULT_SPECS``. For ``imagenet``
    the counts are images per class. An existing non-empty format directory is only replaced
    with ``overwrite=True``. Each format is written to a temporary directory beside the target
    and renamed into place at the end, so an interrupted run never leaves half a dataset.

    Raises:
        ValueError: unknown format, or a count/size/seed out of range.
        FileExistsError: a target exists and is not empty (or not a directory).
    """
    chosen = _check_formats(formats)
    specs = {fmt: _resolve_spec(fmt, num_train, num_val, image_size) for fmt in chosen}
    _check_seed(seed)
    out = Path(out_dir)
    _check_targets(out, chosen, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for fmt in chosen:
        target = out / fmt
        with atomic_output(target) as tmp:  # an interrupted run never leaves half a dataset
            tmp.mkdir()
            WRITERS[fmt](tmp, specs[fmt], seed)
        written[fmt] = target
    return written


def _check_formats(formats: Iterable[str]) -> list[str]:
    if isinstance(formats, str):
        formats = [formats]
    chosen = list(dict.fromkeys(formats))  # dedupe, keep order
    unknown = [fmt for fmt in chosen if fmt not in SHAPES_FORMATS]
    if unknown or not chosen:
        raise ValueError(f'unknown or no format(s) {unknown or chosen}; choose from {", ".join(SHAPES_FORMATS)}')
    return chosen


def _pick(value: PerFormat, fmt: str, name: str, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, Mapping):
        unknown = set(value) - set(SHAPES_FORMATS)
        if unknown:
            raise ValueError(f'{name}: unknown format(s) {sorted(unknown)}')
        value = value.get(fmt, default)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f'{name} must be an int, got {value!r}')
    return int(value)


def _resolve_spec(fmt: str, num_train: PerFormat, num_val: PerFormat, image_size: PerFormat) -> FormatSpec:
    default = DEFAULT_SPECS[fmt]
    spec = FormatSpec(
        num_train=_pick(num_train, fmt, 'num_train', default.num_train),
        num_val=_pick(num_val, fmt, 'num_val', default.num_val),
        image_size=_pick(image_size, fmt, 'image_size', default.image_size),
    )
    if spec.num_train < 1 or spec.num_val < 1:
        raise ValueError(f'{fmt}: num_train and num_val must be >= 1, got {spec.num_train} and {spec.num_val}')
    if not MIN_IMAGE_SIZE <= spec.image_size <= MAX_IMAGE_SIZE:
        raise ValueError(f'{fmt}: image_size must be in [{MIN_IMAGE_SIZE}, {MAX_IMAGE_SIZE}], got {spec.image_size}')
    return spec


def _check_seed(seed: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f'seed must be a non-negative int, got {seed!r}')


def _check_targets(out: Path, formats: list[str], overwrite: bool) -> None:
    """Refuse before writing anything, naming every path that is in the way."""
    targets = [out, *(out / fmt for fmt in formats)]
    not_dirs = [path for path in targets if path.exists() and not path.is_dir()]
    if not_dirs:
        raise FileExistsError(f'{", ".join(map(str, not_dirs))} exists and is not a directory')
    if overwrite:
        return
    non_empty = [path for path in targets[1:] if path.exists() and any(path.iterdir())]
    if non_empty:
        raise FileExistsError(
            f'refusing to write into non-empty {", ".join(map(str, non_empty))} (overwrite=True / --force replaces it)'
        )
