"""One image in, a rendered prediction out, with the frameworks' own inferencers and visualizers.

- classification: mmpretrain ``ImageClassificationInferencer``; the top-5 classes and scores drawn by
  mmpretrain's ``UniversalVisualizer``;
- detection: mmdet ``DetInferencer``; boxes, masks and labels drawn by ``DetLocalVisualizer``;
- segmentation: mmseg ``MMSegInferencer``; the colour overlay drawn by ``SegLocalVisualizer``.

The model is built and its checkpoint loaded strictly by :func:`repvit_mm.deploy.load_model` (training
and fused deploy checkpoints alike), then handed to the inferencer. The picture has the input's size.
"""
from __future__ import annotations

import contextlib
import copy
import io
import os
from typing import Any

import numpy as np
import torch
from mmengine.config import Config

from ..utils.errors import UserInputError
from ..utils.outputs import atomic_output, check_output
from .model import LoadedModel, class_names, load_model, read_config, task_of

__all__ = ['render_prediction', 'TASK_CHOICES']

TASK_CHOICES = ('auto', 'classification', 'detection', 'segmentation')


def _strip_annotation_loading(cfg: Config) -> None:
    """Inference has no labels: drop every ``*LoadAnnotations`` step of the test pipeline (the
    inferencers only know the frameworks' own transform names)."""
    dataset = cfg.test_dataloader.dataset
    while 'dataset' in dataset:
        dataset = dataset.dataset
    dataset.pipeline = [t for t in dataset.pipeline if 'LoadAnnotations' not in str(t.get('type', ''))]


def _palette(cfg: Config, num_classes: int) -> list[tuple[int, int, int]]:
    for split in ('test', 'val', 'train'):
        dataset = (cfg.get(f'{split}_dataloader') or {}).get('dataset') or {}
        while 'dataset' in dataset:
            dataset = dataset['dataset']
        palette = (dataset.get('metainfo') or {}).get('palette')
        if palette and len(palette) >= num_classes:
            return [tuple(int(c) for c in color) for color in palette[:num_classes]]
    rng = np.random.RandomState(42)
    return [tuple(int(c) for c in rng.randint(0, 256, 3)) for _ in range(num_classes)]


def _inject(base: type, model: torch.nn.Module) -> type:
    """A subclass of an mmengine inferencer that uses ``model`` instead of building and loading one."""
    return type(f'Loaded{base.__name__}', (base,), {'_init_model': lambda self, cfg, weights, device: model})


def _classify(loaded: LoadedModel, image: str, topk: int, resize: int | None,
              device: str = 'cpu') -> tuple[np.ndarray, str]:
    from mmcv import imread
    from mmpretrain.apis import ImageClassificationInferencer
    from mmpretrain.visualization import UniversalVisualizer

    classes = class_names(loaded.cfg, loaded.meta)
    loaded.model._config = loaded.cfg  # what mmpretrain's inferencer reads its pipeline from
    inferencer = ImageClassificationInferencer(loaded.model, pretrained=False, classes=classes, device=device)
    with contextlib.redirect_stdout(io.StringIO()):  # its progress bar, for one image
        sample = inferencer(image, return_datasamples=True)[0]
    scores = sample.pred_score
    top = scores.topk(min(topk, scores.numel()))
    sample.set_pred_label(top.indices)
    visualizer = UniversalVisualizer(name=f'repvit-demo-{id(sample)}')
    rgb = imread(image, channel_order='rgb')
    visualizer.visualize_cls(rgb, sample, classes=classes, draw_gt=False, draw_pred=True, draw_score=True,
                             resize=resize)
    names = [classes[i] if classes else str(i) for i in top.indices.tolist()]
    summary = f'top-{len(names)}: ' + ', '.join(f'{n} {v:.3f}' for n, v in zip(names, top.values.tolist()))
    return visualizer.get_image(), summary


def _detect(loaded: LoadedModel, image: str, score_thr: float, device: str = 'cpu') -> tuple[np.ndarray, str]:
    from mmdet.apis import DetInferencer

    classes = class_names(loaded.cfg, loaded.meta) or []
    loaded.model.dataset_meta = {'classes': tuple(classes), 'palette': _palette(loaded.cfg, len(classes))}
    inferencer = _inject(DetInferencer, loaded.model)(model=loaded.cfg, device=device, show_progress=False)
    result = inferencer(image, return_vis=True, no_save_vis=True, no_save_pred=True,
                        pred_score_thr=score_thr)
    drawn = sum(score >= score_thr for score in result['predictions'][0]['scores'])
    return result['visualization'][0], f'{drawn} instances with score >= {score_thr:g}'


def _segment(loaded: LoadedModel, image: str, device: str = 'cpu') -> tuple[np.ndarray, str]:
    from mmseg.apis import MMSegInferencer

    classes = class_names(loaded.cfg, loaded.meta)
    if not classes:
        num = int(loaded.cfg.model.decode_head.num_classes)
        classes = [str(i) for i in range(num)]
    palette = _palette(loaded.cfg, len(classes))
    loaded.model.dataset_meta = {'classes': tuple(classes), 'palette': palette}
    inferencer = _inject(MMSegInferencer, loaded.model)(model=loaded.cfg, classes=list(classes),
                                                        palette=palette, device=device)
    inferencer.show_progress = False  # mmengine's progress bar, for one image
    result = inferencer(image, return_vis=True, show=False)
    vis, pred = result['visualization'], result['predictions']  # mmseg unwraps lists of one image
    vis = vis[0] if isinstance(vis, list) else vis
    pred = np.asarray(pred[0] if isinstance(pred, list) else pred)
    labels, counts = np.unique(pred, return_counts=True)
    summary = 'classes: ' + ', '.join(f'{classes[i]} {c / pred.size:.0%}' for i, c in zip(labels, counts))
    return vis, summary


def _check_device(device: str) -> None:
    try:
        kind = torch.device(device).type
    except RuntimeError as err:
        raise UserInputError(f'--device {device!r}: {err}') from None
    if kind == 'cuda' and not torch.cuda.is_available():
        raise UserInputError(f'--device {device}: no CUDA GPU is available here (use --device cpu)')


def render_prediction(image: str | os.PathLike, config: str | os.PathLike | Config,
                      checkpoint: str | os.PathLike, out: str | os.PathLike, *, task: str = 'auto',
                      force: bool = False, topk: int = 5, score_thr: float = 0.3,
                      resize: int | None = None, device: str = 'cpu') -> dict[str, Any]:
    """Predict on ``image`` and write the rendered picture (PNG) to ``out``.

    Args:
        task: ``'auto'`` (from the config's ``default_scope``) or the expected task, checked.
        topk: classes listed for a classifier; ``score_thr``: lowest detection score drawn;
        resize: (classification) short edge of the drawn picture; default: the image's own size.
        device: where the model runs (``'cpu'``, ``'cuda'``, ``'cuda:1'``, ...).

    Returns:
        ``{'out', 'task', 'size': (height, width), 'summary'}``; the summary lists what was drawn.
    """
    if task not in TASK_CHOICES:
        raise UserInputError(f'unknown task {task!r}; choose from {", ".join(TASK_CHOICES)}')
    out_path = check_output(out, force, suffixes=('.png',))
    _check_device(device)
    image = str(image)
    from mmcv import imread
    if not os.path.isfile(image):
        raise UserInputError(f'image not found: {image}')
    try:
        imread(image).shape  # noqa: B018  (a readable picture?)
    except Exception as err:
        raise UserInputError(f'cannot read image {image}: {err}') from err

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
            picture, summary = _classify(loaded, image, topk, resize, device)
        elif actual == 'detection':
            picture, summary = _detect(loaded, image, score_thr, device)
        else:
            picture, summary = _segment(loaded, image, device)

    from PIL import Image
    with atomic_output(out_path) as tmp:
        Image.fromarray(np.ascontiguousarray(picture)).save(tmp, format='PNG')
    return {'out': str(out_path), 'task': actual, 'size': tuple(picture.shape[:2]), 'summary': summary}
