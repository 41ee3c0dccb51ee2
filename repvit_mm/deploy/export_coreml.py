"""Export the fused classifier, whole segmentor or backbone to a Core ML ML Program (``.mlpackage``).

The model takes an *image* (``ImageType``, RGB or BGR as trained) and applies the config's normalisation
itself. Core ML's image preprocessing is ``scale * pixel + bias`` with one ``scale`` for all channels, so
the bias subtracts the per-channel mean (``scale = 1``) and the per-channel ``1 / std`` is folded into the
input channels of the first convolution. Zero padding commutes with that scaling, so the folded model is
exactly the normalised one.

Classifiers output class probabilities (softmax), as a labelled classifier when the class names are known
(from the checkpoint or the config); segmentors output the label map ``labels`` ``(1, H, W)`` at the
input size (backbone, neck, decode head, resize to a constant size, argmax; the class names in the
model's metadata ``repvit_mm.classes``); a two-stage detector outputs its dense part
(:class:`~repvit_mm.deploy.detector_onnx.DetectorDense`: the FPN maps ``fpn_p2..`` and the RPN head's
objectness logits ``rpn_cls_p2..`` and box deltas ``rpn_reg_p2..`` per level; anchors, proposal NMS,
RoIAlign and the RoI heads are not in the model); ``backbone_only`` outputs the multi-scale feature maps
``feat0..feat3`` (strides 4, 8, 16, 32). Conversion runs anywhere coremltools does (Linux included);
running predictions needs macOS.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import sys
import warnings
from typing import Any

import numpy as np
import torch
from mmengine.config import Config
from torch import nn

from ..utils.errors import UserInputError
from ..utils.outputs import atomic_output, check_output
from .model import (
    check_export_memory,
    class_names,
    default_export_shape,
    load_model,
    normalization,
    tensor_model,
)

__all__ = ['export_coreml', 'fold_input_std', 'can_predict']

PRECISIONS = ('float16', 'float32')


class _ScaleChannels(nn.Module):
    """``x * scale[c]``: the fallback when the input does not go straight into a convolution."""

    def __init__(self, scale: torch.Tensor, inner: nn.Module) -> None:
        super().__init__()
        self.register_buffer('scale', scale.view(1, -1, 1, 1))
        self.inner = inner

    def forward(self, x):
        return self.inner(x * self.scale)


def _first_conv_on_input(module: nn.Module, example: torch.Tensor) -> nn.Conv2d | None:
    """The convolution that receives the model's input tensor itself, if any."""
    found: list[nn.Conv2d] = []

    def hook(conv, args):
        if not found and args and args[0] is example:
            found.append(conv)

    handles = [m.register_forward_pre_hook(hook) for m in module.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            module(example)
    finally:
        for handle in handles:
            handle.remove()
    return found[0] if found else None


@torch.no_grad()
def fold_input_std(module: nn.Module, std: list[float], shape: tuple[int, int]) -> nn.Module:
    """A copy of ``module`` that takes ``x - mean`` instead of ``(x - mean) / std``.

    The per-channel ``1 / std`` goes into the input channels of the convolution applied to the input
    (exact: zero padding is unchanged by the scaling); failing that, into a leading per-channel multiply.
    """
    module = copy.deepcopy(module).eval()
    inv_std = 1.0 / torch.tensor(std, dtype=torch.float32)
    conv = _first_conv_on_input(module, torch.zeros(1, 3, *shape))
    if conv is not None and conv.groups == 1 and conv.in_channels == 3:
        conv.weight.mul_(inv_std.view(1, 3, 1, 1).to(conv.weight.dtype))
        return module
    return _ScaleChannels(inv_std, module).eval()


def can_predict() -> tuple[bool, str]:
    """Whether coremltools can run predictions here (macOS with its native framework), and why not."""
    if sys.platform != 'darwin':
        return False, f'Core ML predictions need macOS (this is {sys.platform})'
    try:
        from coremltools.libcoremlpython import _MLModelProxy  # noqa: F401
    except ImportError as err:
        return False, f'coremltools has no native Core ML binding here ({err})'
    return True, ''


def export_coreml(
    config: str | os.PathLike | Config,
    checkpoint: str | os.PathLike | None,
    out: str | os.PathLike,
    *,
    shape: tuple[int, int] | None = None,
    backbone_only: bool = False,
    precision: str = 'float16',
    force: bool = False,
) -> dict[str, Any]:
    """Fuse the checkpoint's model and convert it to an ML Program ``.mlpackage`` at ``out``; ``shape``
    defaults to :func:`~repvit_mm.deploy.model.default_export_shape`.

    Returns:
        ``{'out', 'inputs', 'outputs', 'classes', 'precision', 'shape'}``; plus ``'max_abs_diff'``
        (classifier, backbone) or ``'label_agreement'`` (segmentor) against PyTorch when predictions can
        run (macOS), else ``'prediction_check'`` saying why not.
    """
    import coremltools as ct

    if precision not in PRECISIONS:
        raise UserInputError(f'unknown precision {precision!r}; choose one of {", ".join(PRECISIONS)}')
    out_path = check_output(out, force, suffixes=('.mlpackage',))
    loaded = load_model(config, checkpoint, fuse=True)
    mean, std, rgb = normalization(loaded.cfg)
    shape = shape or default_export_shape(loaded, backbone_only)
    segmentor = loaded.task == 'segmentation' and not backbone_only
    detector = loaded.task == 'detection' and not backbone_only
    classes = None if backbone_only else class_names(loaded.cfg, loaded.meta)
    if detector:
        from .detector_onnx import DetectorDense

        if any(s % 32 for s in shape):  # FPN adds upsampled maps: every stride up to 32 must divide the size
            raise UserInputError(f'--shape {shape[0]} {shape[1]}: a detector needs multiples of 32')
        module = DetectorDense(loaded.model).eval()
    else:
        module = tensor_model(loaded, backbone_only, softmax=not backbone_only, shape=shape, output='labels')
    check_export_memory(module, shape, 1, f'converting {loaded.cfg.filename}')
    folded = fold_input_std(module, std, shape)

    # whole pixel values, so that the same picture can be handed to Core ML as an image
    example = torch.randint(0, 256, (1, 3, *shape), generator=torch.Generator().manual_seed(0)).float()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # torch.jit.trace deprecation, tracer warnings
        traced = torch.jit.trace(folded, example - torch.tensor(mean).view(1, 3, 1, 1))
        with torch.no_grad():
            sample = module((example - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1))
    if segmentor:
        names = ['labels']
    elif detector:
        names = module.names
    else:
        names = ['probs'] if isinstance(sample, torch.Tensor) else [f'feat{i}' for i in range(len(sample))]
    image = ct.ImageType(
        name='image',
        shape=(1, 3, *shape),
        scale=1.0,
        bias=[-m for m in mean],
        color_layout=ct.colorlayout.RGB if rgb else ct.colorlayout.BGR,
    )
    kwargs: dict[str, Any] = dict(
        inputs=[image],
        convert_to='mlprogram',
        compute_precision=ct.precision.FLOAT16 if precision == 'float16' else ct.precision.FLOAT32,
    )
    if classes and not segmentor and not detector:
        kwargs['classifier_config'] = ct.ClassifierConfig(classes)
    else:
        kwargs['outputs'] = [ct.TensorType(name=n) for n in names]
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter('ignore')  # and coremltools' progress bars (stderr) are not for the user
        try:
            mlmodel = ct.convert(traced, **kwargs)
        except Exception as err:  # coremltools reports unsupported ops etc. as assorted exception types
            raise UserInputError(
                f'Core ML conversion of {loaded.cfg.filename} failed: {type(err).__name__}: '
                f'{str(err).splitlines()[0] if str(err) else ""}'
            ) from err

    arch = loaded.cfg.model.get('backbone', {}).get('arch', '?')
    mlmodel.short_description = (
        f'RepViT-{arch} '
        f'{"backbone features" if backbone_only else "detector: FPN + RPN head" if detector else loaded.task} '
        '(repvit-mm, fused)'
    )
    mlmodel.input_description['image'] = (
        f'{"RGB" if rgb else "BGR"} image, {shape[1]}x{shape[0]}; normalisation is part of the model'
    )
    mlmodel.user_defined_metadata.update(
        {
            'repvit_mm.mean': str(mean),
            'repvit_mm.std': str(std),
            'repvit_mm.config': str(loaded.cfg.filename),
            'repvit_mm.checkpoint': str(checkpoint),
            'repvit_mm.outputs': ','.join(names),
        }
    )
    if segmentor:
        mlmodel.output_description['labels'] = f'class index per pixel, {shape[0]}x{shape[1]}'
    if detector:
        what = {'fpn': 'FPN feature map', 'rpn_cls': 'RPN objectness logits', 'rpn_reg': 'RPN box deltas'}
        for name in names:
            kind, level = name.rsplit('_', 1)
            mlmodel.output_description[name] = f'{what[kind]}, level {level} (stride {2 ** int(level[1:])})'
    if segmentor or detector:
        if classes:
            mlmodel.user_defined_metadata['repvit_mm.classes'] = json.dumps(classes)

    result: dict[str, Any] = {
        'out': str(out_path),
        'classes': classes,
        'precision': precision,
        'shape': list(shape),
        'inputs': {'image': [1, 3, *shape]},
        'outputs': {
            n: list(t.shape)
            for n, t in zip(names, [sample] if isinstance(sample, torch.Tensor) else sample, strict=False)
        },
    }
    ok, why = can_predict()
    if ok and segmentor:
        pred = np.asarray(mlmodel.predict({'image': _pil_image(example, rgb)})['labels'])
        result['label_agreement'] = float((pred == sample.numpy()).mean())
    elif ok:
        result['max_abs_diff'] = _prediction_diff(mlmodel, example, sample, names, None if detector else classes, rgb)
    else:
        result['prediction_check'] = f'skipped: {why}'
    with atomic_output(out_path) as tmp:
        mlmodel.save(str(tmp))
    return result


def _pil_image(example: torch.Tensor, rgb: bool):
    """``example`` (pixels in the model's channel order) as the PIL image Core ML is handed."""
    from PIL import Image

    pixels = example[0].permute(1, 2, 0).to(torch.uint8).numpy()
    if not rgb:  # a PIL image is RGB; Core ML hands the model BGR
        pixels = np.ascontiguousarray(pixels[..., ::-1])
    return Image.fromarray(pixels)


def _prediction_diff(mlmodel, example: torch.Tensor, sample, names: list[str], classes, rgb: bool) -> float:
    """Largest difference of Core ML's prediction on ``example`` (pixels in the model's channel order)
    from PyTorch's outputs."""
    pred = mlmodel.predict({'image': _pil_image(example, rgb)})
    if classes:
        probs = sample[0].numpy()
        return max(abs(float(pred['classLabel_probs'][c]) - float(p)) for c, p in zip(classes, probs, strict=False))
    return max(float(np.abs(np.asarray(pred[n]) - t.numpy()).max()) for n, t in zip(names, sample, strict=False))
