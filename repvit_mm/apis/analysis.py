"""What ``tools/analysis_tools/`` do: browse a config's dataset, plot the curves of a training log, time a
training run.

The pictures come from the frameworks' own visualizers (mmpretrain's ``UniversalVisualizer``, mmdet's
``DetLocalVisualizer``, mmseg's ``SegLocalVisualizer``), built through the registry of the config's scope
(which understands the ``_scope_`` key mmengine adds to dicts inherited from ``mmpretrain::`` configs) and
given C-contiguous images (OpenCV 5 refuses to draw into strided views).
"""

from __future__ import annotations

import json
import os
import os.path as osp
from pathlib import Path

import numpy as np
from mmengine.config import Config

from ..utils.errors import UserInputError

__all__ = ['browse_dataset', 'read_scalars', 'plot_curves', 'plot_loss_and_metric', 'training_time', 'stack_pictures']

_SCOPES = ('mmpretrain', 'mmdet', 'mmseg')


def _dataset_cfg(cfg: Config, phase: str) -> dict:
    loader = cfg.get(f'{phase}_dataloader')
    if not loader or 'dataset' not in loader:
        raise UserInputError(f'{cfg.filename}: no {phase}_dataloader.dataset to browse')
    return loader.dataset


def browse_dataset(cfg: Config, out_dir: str | os.PathLike, *, phase: str = 'train', number: int = 10) -> list[Path]:
    """Draw the first ``number`` samples of the ``phase`` dataset, after its pipeline, with their labels
    (class name, boxes and masks, or the colour-coded segmentation) into ``out_dir``; return the files."""
    from mmengine.registry import DATASETS, VISUALIZERS, DefaultScope

    scope = cfg.get('default_scope')
    if scope not in _SCOPES:
        raise UserInputError(f'{cfg.filename}: default_scope is {scope!r}, expected one of {", ".join(_SCOPES)}')
    if number < 1:
        raise UserInputError(f'--show-number must be at least 1, got {number}')
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserInputError(f'--output-dir {out} is a file')
    vis_cfg = dict(cfg.get('visualizer') or {'type': 'Visualizer'})
    vis_cfg.update(name=f'browse-{id(cfg)}', vis_backends=None)  # draw only; we save the pictures ourselves
    with DefaultScope.overwrite_default_scope(scope):
        dataset = DATASETS.build(_dataset_cfg(cfg, phase))
        visualizer = VISUALIZERS.build(vis_cfg)
    visualizer.dataset_meta = dataset.metainfo
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for index in range(min(number, len(dataset))):
        item = dataset[index]
        sample = item['data_samples']
        # the pipeline's output is CHW BGR; the visualizers draw RGB into an array they own
        image = np.ascontiguousarray(item['inputs'].permute(1, 2, 0).numpy()[..., ::-1])
        name = f'{index:04d}_{osp.basename(sample.get("img_path", f"{index}.png"))}'
        if scope == 'mmpretrain':
            picture = visualizer.visualize_cls(image, sample, draw_pred=False, resize=max(256, min(image.shape[:2])))
        else:
            sample = sample.numpy() if scope == 'mmseg' else _plain_instances(sample.numpy())
            visualizer.add_datasample(name, image, sample, draw_gt=True, draw_pred=False, show=False)
            picture = visualizer.get_image()
        path = out / f'{osp.splitext(name)[0]}.png'
        from PIL import Image

        Image.fromarray(np.ascontiguousarray(picture)).save(path)
        written.append(path)
    return written


def _plain_instances(sample):
    """mmdet's visualizer draws tensors and arrays: the packed box and mask structures, unwrapped."""
    from mmdet.models.utils import mask2ndarray
    from mmdet.structures.bbox import BaseBoxes

    instances = sample.gt_instances
    if isinstance(instances.get('bboxes'), BaseBoxes):
        instances.bboxes = instances.bboxes.tensor
    if instances.get('masks') is not None:
        instances.masks = mask2ndarray(instances.masks).astype(bool)
    return sample


# ----------------------------------------------------------------------------------------- training logs
def read_scalars(log: str | os.PathLike) -> list[dict]:
    """The records of an mmengine json log (``<work_dir>/<timestamp>/vis_data/scalars.json`` or
    ``<timestamp>.json``); a run directory or its ``.log`` file is accepted too."""
    path = Path(log)
    if path.is_dir():
        candidates = sorted(path.glob('vis_data/scalars.json')) or sorted(path.glob('*/vis_data/scalars.json'))
        if not candidates:
            raise UserInputError(f'{path}: no vis_data/scalars.json in it (is it a work dir of a training run?)')
        path = candidates[-1]
    elif path.suffix == '.log':
        path = path.parent / 'vis_data' / 'scalars.json'
    if not path.is_file():
        raise UserInputError(f'training log not found: {path}')
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise UserInputError(f'{path}, line {number}: not JSON ({err.msg})') from None
    if not records:
        raise UserInputError(f'{path}: the log is empty')
    return records


def _x(record: dict) -> int | None:
    return record.get('iter', record.get('step'))


def plot_curves(
    logs: list[str | os.PathLike],
    keys: list[str],
    out: str | os.PathLike,
    *,
    legends: list[str] | None = None,
    title: str | None = None,
) -> Path:
    """One panel per key (``loss``, ``lr``, ``accuracy/top1``, ``coco/bbox_mAP``, ``mIoU``, ...) with a
    line per log, against the iteration; written as PNG. A key no log has is an error naming the keys
    the logs do have."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    from ..utils.outputs import atomic_output, check_output

    out_path = check_output(out, force=True, suffixes=('.png',))
    runs = [read_scalars(log) for log in logs]
    if legends is not None and len(legends) != len(logs):
        raise UserInputError(f'--legend: {len(legends)} names for {len(logs)} logs')
    names = legends or [str(log) for log in logs]
    available = sorted({k for run in runs for r in run for k in r if k not in ('iter', 'step', 'epoch')})
    missing = [k for k in keys if not any(k in r for run in runs for r in run)]
    if missing:
        raise UserInputError(f'--keys {" ".join(missing)}: not in the log(s); they have: {", ".join(available)}')
    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.5), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        for name, run in zip(names, runs, strict=True):
            points = [(_x(r), r[key]) for r in run if key in r and _x(r) is not None]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, 'o-' if len(points) < 10 else '-', label=name, markersize=3)
        ax.set_xlabel('iteration')
        ax.set_title(key)
        ax.grid(alpha=0.3)
        if len(runs) > 1:
            ax.legend(fontsize='small')
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_output(out_path) as tmp:
        fig.savefig(tmp, dpi=100, format='png')
    plt.close(fig)
    return out_path


def plot_loss_and_metric(runs: dict[str, tuple[str | os.PathLike, str]], out: str | os.PathLike) -> Path:
    """One panel per training run (``{title: (log, validation metric)}``): its training loss and, on a second
    axis, the validation metric, against the iteration; written as PNG (the demo's training curves)."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(runs), figsize=(5 * len(runs), 3.8), squeeze=False)
    for ax, (name, (log, metric)) in zip(axes[0], runs.items(), strict=True):
        records = read_scalars(log)
        train = [r for r in records if 'loss' in r]
        lines = ax.plot([r['iter'] for r in train], [r['loss'] for r in train], '.-', color='tab:blue', markersize=3)
        lines[0].set_label('training loss')
        ax.set_xlabel('iteration')
        ax.set_ylabel('training loss')
        ax.set_title(f'{name} ({len(train)} logged iterations)')
        val = [r for r in records if metric in r]
        if val:
            twin = ax.twinx()
            lines += twin.plot([_x(r) for r in val], [r[metric] for r in val], 'o-', color='tab:orange')
            lines[-1].set_label(f'validation {metric}')
            twin.set_ylabel(f'validation {metric}')
        # under the plot: inside it would cover the lines of one axis or the other
        ax.legend(
            lines,
            [line.get_label() for line in lines],
            loc='upper center',
            bbox_to_anchor=(0.5, -0.18),
            ncol=2,
            frameon=False,
        )
    fig.tight_layout()
    fig.savefig(out, dpi=100, bbox_inches='tight')
    plt.close(fig)
    return Path(out)


def stack_pictures(pictures: list[str | os.PathLike], out: str | os.PathLike) -> Path:
    """One picture of several, one under the other, centred on a white canvas (the README's figure)."""
    from PIL import Image

    images = [Image.open(p).convert('RGB') for p in pictures]
    width = max(image.width for image in images)
    canvas = Image.new('RGB', (width, sum(image.height for image in images)), 'white')
    top = 0
    for image in images:
        canvas.paste(image, ((width - image.width) // 2, top))
        top += image.height
    canvas.save(out)
    return Path(out)


def training_time(log: str | os.PathLike) -> dict[str, float]:
    """Time per iteration of a training log (mmengine logs the mean ``time`` of each logging interval):
    ``{'iterations', 'seconds_per_iter', 'slowest_interval_s', 'fastest_interval_s', 'total_s'}``."""
    train = [r for r in read_scalars(log) if 'time' in r and 'iter' in r and 'loss' in r]
    if not train:
        raise UserInputError(f'{log}: no training iterations with a time in the log')
    total, done = 0.0, 0
    for record in train:
        total += record['time'] * (record['iter'] - done)
        done = record['iter']
    times = [r['time'] for r in train]
    return {
        'iterations': done,
        'seconds_per_iter': total / done,
        'slowest_interval_s': max(times),
        'fastest_interval_s': min(times),
        'total_s': total,
    }
