"""Build any repvit-mm model from its config and load a checkpoint into it, strictly.

The deploy tools accept classifiers (mmpretrain), detectors (mmdet) and segmentors (mmseg): the config's
``default_scope`` picks the registry. Checkpoints may be training checkpoints (``state_dict`` + ``meta``),
fused deploy checkpoints written by :func:`repvit_mm.deploy.fuse_checkpoint` (recognised by their keys
fitting the fused model, so the training config loads them too), the authors' ImageNet, COCO and ADE20K
release files and timm state dicts (converted in memory by :mod:`repvit_mm.models.checkpoints`).
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from typing import Any

import torch
from mmengine.config import Config
from torch import nn

from ..models.build import build_model
from ..models.checkpoints import load_checkpoint_into, read_checkpoint
from ..utils.config import load_config, split_datasets
from ..utils.errors import UserInputError

__all__ = [
    'TASKS',
    'LoadedModel',
    'read_config',
    'task_of',
    'build_model',
    'load_model',
    'fused_copy',
    'ClassifierLogits',
    'BackboneFeatures',
    'SegmentorOutput',
    'SEG_OUTPUTS',
    'tensor_model',
    'dense_test_size',
    'detector_test_size',
    'default_export_shape',
    'check_export_memory',
    'normalization',
    'class_names',
]

#: ``default_scope`` -> task name used by the tools.
TASKS = {'mmpretrain': 'classification', 'mmdet': 'detection', 'mmseg': 'segmentation'}


@dataclass
class LoadedModel:
    """A model ready for inference (eval mode, CPU) and what the tools need to know about it."""

    model: nn.Module
    cfg: Config
    task: str
    fused: bool
    checkpoint: str | None = None
    meta: dict = field(default_factory=dict)


def read_config(config: str | os.PathLike | Config) -> Config:
    """A private copy of ``config`` (a path is read with :func:`repvit_mm.utils.config.load_config`)."""
    if isinstance(config, Config):
        return copy.deepcopy(config)
    return load_config(str(config))


def task_of(cfg: Config) -> str:
    """``'classification'``, ``'detection'`` or ``'segmentation'``, from the config's ``default_scope``."""
    scope = cfg.get('default_scope')
    if scope not in TASKS:
        raise UserInputError(
            f'{cfg.filename}: default_scope is {scope!r}; the deploy tools handle {", ".join(sorted(TASKS))} configs'
        )
    return TASKS[scope]


def load_model(
    config: str | os.PathLike | Config, checkpoint: str | os.PathLike | None = None, *, fuse: bool = False
) -> LoadedModel:
    """Build the config's model and load ``checkpoint`` strictly (every key, every shape).

    The checkpoint may be in any layout :func:`repvit_mm.models.checkpoints.fit_checkpoint` converts (ours,
    the authors' ImageNet / COCO / ADE20K releases, timm). A fused (deploy) checkpoint is loaded into the
    fused structure: the model is built from the config, reparameterized, then loaded. ``fuse=True``
    returns the reparameterized model in any case. Without a checkpoint the model keeps its random
    initialisation (benchmarks, FLOPs).

    Raises:
        UserInputError: the checkpoint does not fit the config's model; the message lists the
            missing, unexpected and wrongly shaped keys.
    """
    from ..models.reparam import switch_to_deploy

    cfg = read_config(config)
    task = task_of(cfg)
    model = build_model(cfg)
    meta: dict[str, Any] = {}
    fused = False
    if checkpoint is not None:
        ckpt = read_checkpoint(checkpoint)
        meta = dict(ckpt.meta)
        try:
            fused = load_checkpoint_into(model, ckpt, accept_fused=True).fused
        except UserInputError as err:  # say which config; keep the error's type and key lists
            err.args = (f'{err} (config {cfg.filename})', *err.args[1:])
            raise
        if ckpt.dataset_meta:
            meta['dataset_meta'] = ckpt.dataset_meta
    if fuse and not fused:
        switch_to_deploy(model)
        fused = True
    model.eval()
    if meta.get('dataset_meta'):
        model.dataset_meta = dict(meta['dataset_meta'])
    return LoadedModel(
        model=model,
        cfg=cfg,
        task=task,
        fused=fused,
        checkpoint=None if checkpoint is None else str(checkpoint),
        meta=meta,
    )


def fused_copy(loaded: LoadedModel) -> LoadedModel:
    """A reparameterized copy of ``loaded`` (``loaded`` itself is left as it is)."""
    from ..models.reparam import switch_to_deploy

    fused = copy.deepcopy(loaded)
    if not fused.fused:
        switch_to_deploy(fused.model)
        fused.fused = True
    fused.model.eval()
    return fused


# ----------------------------------------------------------------------------------------- tensor views
class ClassifierLogits(nn.Module):
    """Normalised images ``(N, 3, H, W)`` -> class logits ``(N, num_classes)``; ``softmax=True`` gives
    probabilities instead."""

    def __init__(self, classifier: nn.Module, softmax: bool = False) -> None:
        super().__init__()
        self.classifier = classifier
        self.softmax = softmax

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.classifier(x, mode='tensor')
        return logits.softmax(dim=1) if self.softmax else logits


class BackboneFeatures(nn.Module):
    """Normalised images -> the backbone's multi-scale feature maps (a tuple, strides 4 to 32)."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.backbone(x))


#: What a whole segmentor outputs: per-pixel class scores ``(N, C, H, W)`` or the label map ``(N, H, W)``.
SEG_OUTPUTS = ('logits', 'labels')


class SegmentorOutput(nn.Module):
    """A whole mmseg encoder-decoder: normalised images ``(N, 3, H, W)`` at a fixed size -> backbone, neck,
    decode head, the resize to ``(H, W)``, then the class scores or the label map (mmseg's
    ``postprocess_result``: argmax over classes, or the decode head's threshold for one output channel).

    The resize size is a pair of Python ints, not ``x.shape[2:]``: traced, the latter becomes shape
    arithmetic that Core ML cannot convert (and ONNX gains nothing from, the size being fixed anyway).
    """

    def __init__(self, segmentor: nn.Module, shape: tuple[int, int], output: str = 'logits') -> None:
        super().__init__()
        if output not in SEG_OUTPUTS:
            raise UserInputError(f'unknown segmentor output {output!r}; choose one of {", ".join(SEG_OUTPUTS)}')
        self.segmentor = segmentor
        self.size = (int(shape[0]), int(shape[1]))
        self.output = output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        seg = self.segmentor
        logits = seg.decode_head(seg.extract_feat(x))
        logits = F.interpolate(logits, size=self.size, mode='bilinear', align_corners=seg.align_corners)
        if self.output == 'logits':
            return logits
        if logits.shape[1] == 1:  # binary head: mmseg thresholds the sigmoid
            return (logits.sigmoid() > seg.decode_head.threshold).squeeze(1).to(torch.int64)
        return logits.argmax(dim=1)


def tensor_model(
    loaded: LoadedModel,
    backbone_only: bool = False,
    softmax: bool = False,
    *,
    shape: tuple[int, int] | None = None,
    output: str = 'logits',
) -> nn.Module:
    """A plain tensor-in/tensor-out view for export and benchmarking: the classifier's logits, the whole
    segmentor (:class:`SegmentorOutput` at ``shape``, ``output`` logits or labels) or the backbone's
    features (``backbone_only``; a detector's whole model has its own export).

    For a classifier config, ``backbone_only`` switches the backbone to all four stages' outputs.
    """
    if loaded.task == 'classification' and not backbone_only:
        return ClassifierLogits(loaded.model, softmax=softmax).eval()
    if loaded.task == 'segmentation' and not backbone_only:
        return SegmentorOutput(loaded.model, shape or dense_test_size(loaded.cfg), output).eval()
    if loaded.task != 'classification' and not backbone_only:
        raise UserInputError(
            f'{loaded.cfg.filename} is a {loaded.task} config: only its backbone can be '
            'exported or benchmarked here (pass --backbone-only)'
        )
    backbone = loaded.model.backbone
    if loaded.task == 'classification' and hasattr(backbone, 'out_indices'):
        backbone = copy.copy(backbone)  # shares the weights; only the outputs differ
        backbone.out_indices = _all_stages(backbone)
    return BackboneFeatures(backbone).eval()


def dense_test_size(cfg: Config) -> tuple[int, int]:
    """The fixed input size of a whole dense model: the data preprocessor's ``size`` (the crop the model
    was trained on, e.g. 512x512 for ADE20K, 128x128 for Shapes), else 512x512."""
    dp = cfg.model.get('data_preprocessor') or {}
    size = dp.get('size')
    if size and len(size) == 2:
        return int(size[0]), int(size[1])
    return 512, 512


def detector_test_size(cfg: Config) -> tuple[int, int]:
    """A whole detector's fixed input size: the test pipeline's ``Resize`` scale padded to a multiple of 32;
    with ``keep_ratio`` a square of its long side (so that any aspect ratio fits: 128x128 for the Shapes
    config, 1344x1344 for COCO's 1333x800), else ``(h, w)``."""
    scale = None
    for dataset in split_datasets(cfg, ('test', 'val')):
        for step in dataset.get('pipeline') or []:
            if isinstance(step, dict) and step.get('type') == 'Resize' and step.get('scale'):
                scale, keep = step['scale'], step.get('keep_ratio', False)
        if scale is not None:
            break
    if scale is None:
        return 512, 512
    w, h = (scale, scale) if isinstance(scale, int) else (int(scale[0]), int(scale[1]))  # mmcv: (w, h)
    if keep:
        w = h = max(w, h)
    return -(-h // 32) * 32, -(-w // 32) * 32


def default_export_shape(loaded: LoadedModel, backbone_only: bool) -> tuple[int, int]:
    """The export size when ``--shape`` is not given: a classifier's test crop (the last ``CenterCrop``
    of its test pipeline, else 224), a whole segmentor's :func:`dense_test_size`, 512 for a backbone."""
    if backbone_only:
        return 512, 512
    if loaded.task == 'segmentation':
        return dense_test_size(loaded.cfg)
    if loaded.task == 'detection':
        return detector_test_size(loaded.cfg)
    size = None
    for dataset in split_datasets(loaded.cfg, ('test', 'val')):
        for step in dataset.get('pipeline') or []:
            if isinstance(step, dict) and step.get('type') == 'CenterCrop':
                size = step.get('crop_size')
        if size is not None:
            break
    if isinstance(size, int):
        return size, size
    if isinstance(size, (list, tuple)) and len(size) == 2:  # mmcv's CenterCrop takes (w, h)
        return int(size[1]), int(size[0])
    return 224, 224


def check_export_memory(module: nn.Module, shape: tuple[int, int], batch: int, what: str) -> int:
    """Refuse (one :class:`UserInputError`) a shape whose activations would not fit in the memory available
    now; returns the estimate in bytes.

    The estimate: every leaf module's output on a 64x64 probe, summed (an upper bound of what eager
    PyTorch holds at once), scaled to ``shape`` and ``batch``, plus the input. Memory is linear in the
    pixels for these convolutional models, so the probe is exact up to rounding at the strides.
    """
    import psutil

    probe = (64, 64)
    total = 0

    def hook(_module, _args, out):
        nonlocal total
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                total += t.numel() * t.element_size()

    probed = module
    if isinstance(module, SegmentorOutput):  # its output size is fixed: the probe's size for the probe
        probed = copy.copy(module)  # shares the submodules
        probed.size = probe
    leaves = [m for m in module.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad():
            hook(None, None, probed(torch.zeros(1, 3, *probe)))  # the output too (e.g. a functional resize)
    finally:
        for handle in handles:
            handle.remove()
    scale = batch * shape[0] * shape[1] / (probe[0] * probe[1])
    need = int((total + 3 * probe[0] * probe[1] * 4) * scale)
    available = psutil.virtual_memory().available
    if need > available:
        raise UserInputError(
            f'{what} at {shape[0]}x{shape[1]} (batch {batch}) needs about {need / 2**30:.1f} GiB for activations; '
            f'{available / 2**30:.1f} GiB of memory is available: choose a smaller --shape'
        )
    return need


def _all_stages(backbone: nn.Module) -> Any:
    current = backbone.out_indices
    num_stages = len(getattr(backbone, 'stages', [])) or 4
    new = tuple(range(num_stages))
    return type(current)(new) if isinstance(current, (list, tuple)) else new


# ----------------------------------------------------------------------------------------- metadata
def normalization(cfg: Config) -> tuple[list[float], list[float], bool]:
    """``(mean, std, rgb)`` the model's data preprocessor applies: per-channel mean and std in 0-255
    pixel units, and whether the model sees RGB (True) or the loaded BGR order (False)."""
    dp = cfg.model.get('data_preprocessor') or cfg.get('data_preprocessor') or {}
    mean = list(dp.get('mean') or [0.0, 0.0, 0.0])
    std = list(dp.get('std') or [1.0, 1.0, 1.0])
    rgb = bool(dp.get('to_rgb', dp.get('bgr_to_rgb', False)))
    if len(mean) != 3 or len(std) != 3:
        raise UserInputError(f'{cfg.filename}: data_preprocessor mean/std must have 3 values, got {mean} / {std}')
    return [float(m) for m in mean], [float(s) for s in std], rgb


def class_names(cfg: Config, meta: dict | None = None) -> list[str] | None:
    """Class names from the checkpoint's ``meta.dataset_meta``, else from the config's datasets."""
    classes = ((meta or {}).get('dataset_meta') or {}).get('classes')
    if classes:
        return [str(c) for c in classes]
    for dataset in split_datasets(cfg, ('test', 'val', 'train')):
        classes = dataset.get('classes') or (dataset.get('metainfo') or {}).get('classes')
        if classes and not isinstance(classes, str):
            return [str(c) for c in classes]
    return None
