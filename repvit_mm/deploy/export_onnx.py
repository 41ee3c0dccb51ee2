"""Export the fused classifier (logits), the whole semantic segmentor (class scores or label map at the
input size) or a backbone (multi-scale features) to ONNX, with a dynamic batch axis, and check the file
with ONNX Runtime against PyTorch; optionally quantize it to INT8 (:mod:`repvit_mm.deploy.quantize`).

The ONNX model takes *normalised* images (``(pixel - mean) / std`` in the channel order the model was
trained on); the mean, std, channel order and class names are stored in the file's metadata.

Exporter: torch 2.14 offers the TorchScript-based exporter (``dynamo=False``) and the torch.export one
(``dynamo=True``, via onnxscript). Both give the same numbers for RepViT; the TorchScript graph writes
GELU as ``Erf`` arithmetic that ONNX Runtime fuses into its fast GELU kernel, and ran faster under ONNX
Runtime on CPU in our measurements (about 1.4x at batch 1 for M0.9), so it is the default.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mmengine.config import Config
from torch import nn

from ..utils.errors import UserInputError
from ..utils.outputs import atomic_output, check_output
from .model import (
    LoadedModel,
    check_export_memory,
    class_names,
    default_export_shape,
    fused_copy,
    load_model,
    normalization,
    tensor_model,
)

__all__ = ['export_onnx', 'export_tensor_model', 'ort_session', 'output_names', 'DEFAULT_OPSET']

#: Default opset per exporter (the torch.export one writes opset 18 natively; converting down fails).
DEFAULT_OPSET = {'torchscript': 17, 'dynamo': 18}
EXPORTERS = tuple(DEFAULT_OPSET)


def output_names(module: nn.Module, example: torch.Tensor) -> list[str]:
    """``['logits']`` for a classifier view, ``['logits']`` or ``['labels']`` for a whole segmentor,
    ``['feat0', 'feat1', ...]`` for a backbone view."""
    with torch.no_grad():
        out = module(example)
    if getattr(module, 'detector', None) is not None:  # a whole detector (DetectorOutput)
        from .detector_onnx import DETECTOR_OUTPUTS

        return list(DETECTOR_OUTPUTS)
    if isinstance(out, torch.Tensor):
        if getattr(module, 'output', None) == 'labels':
            return ['labels']
        return ['probs' if getattr(module, 'softmax', False) else 'logits']
    return [f'feat{i}' for i in range(len(out))]


def export_tensor_model(
    module: nn.Module,
    path: str | os.PathLike,
    shape: tuple[int, int],
    *,
    opset: int | None = None,
    exporter: str = 'torchscript',
    metadata: dict[str, str] | None = None,
    blocked_layout: bool = True,
) -> list[str]:
    """Export ``module`` (images ``(N, 3, H, W)`` -> tensor or tuple of tensors) to ``path`` with a
    dynamic batch axis; constants are folded. ``blocked_layout``: rewrite the squeeze-and-excitation
    nodes so ONNX Runtime's CPU kernels keep their blocked layout through them
    (:func:`~repvit_mm.deploy.onnx_layout.keep_blocked_layout`). Returns the output names."""
    if exporter not in EXPORTERS:
        raise UserInputError(f'unknown ONNX exporter {exporter!r}; choose one of {", ".join(EXPORTERS)}')
    opset = opset or DEFAULT_OPSET[exporter]
    module = module.eval()
    example = torch.randn(1, 3, *shape)
    names = output_names(module, example)
    # a whole detector takes one image (its proposals and detections are per image); others a dynamic batch
    dynamic = {} if names[0] == 'boxes' else {n: {0: 'batch'} for n in ['input', *names]}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter('ignore')  # the TorchScript exporter's deprecation notice, tracer warnings
        if exporter == 'torchscript':
            torch.onnx.export(
                module,
                (example,),
                str(path),
                dynamo=False,
                opset_version=opset,
                do_constant_folding=True,
                input_names=['input'],
                output_names=names,
                dynamic_axes=dynamic,
            )
        else:
            torch.onnx.export(
                module,
                (example,),
                str(path),
                dynamo=True,
                opset_version=opset,
                optimize=True,
                verbose=False,
                input_names=['input'],
                output_names=names,
                dynamic_shapes={'x': {0: torch.export.Dim('batch', min=1, max=4096)}} if dynamic else None,
                external_data=False,
            )
    if metadata or blocked_layout:
        import onnx

        proto = onnx.load(str(path))
        if blocked_layout:
            from .onnx_layout import keep_blocked_layout

            proto = keep_blocked_layout(proto)
        for key, value in (metadata or {}).items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(proto, str(path))
    return names


def ort_session(
    path: str | os.PathLike, threads: int | None = None, device: str = 'cpu', batch_size: int | None = None
):
    """An ONNX Runtime session tuned for throughput: every graph optimisation (constant folding, node
    fusion, layout transforms), ``threads`` intra-op threads (default: all cores), sequential execution.
    ``batch_size`` fixes the file's dynamic ``batch`` axis for this session (ONNX Runtime's free dimension
    override): it then plans memory once for that shape, a few percent faster than a dynamic batch."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if batch_size is not None:
        options.add_free_dimension_override_by_name('batch', batch_size)
    providers = ['CPUExecutionProvider']
    if device.startswith('cuda'):
        if 'CUDAExecutionProvider' not in ort.get_available_providers():
            raise RuntimeError('this onnxruntime build has no CUDAExecutionProvider')
        providers.insert(0, 'CUDAExecutionProvider')
    return ort.InferenceSession(str(path), options, providers=providers)


def _metadata(loaded: LoadedModel, shape: tuple[int, int], backbone_only: bool, output: str) -> dict[str, str]:
    mean, std, rgb = normalization(loaded.cfg)
    meta = {
        'repvit_mm.task': 'backbone' if backbone_only else loaded.task,
        'repvit_mm.input': f'normalised images (N, 3, H, W), exported at {shape[0]}x{shape[1]}',
        'repvit_mm.output': 'features' if backbone_only else 'logits' if loaded.task == 'classification' else output,
        'repvit_mm.mean': json.dumps(mean),
        'repvit_mm.std': json.dumps(std),
        'repvit_mm.channel_order': 'RGB' if rgb else 'BGR',
    }
    classes = class_names(loaded.cfg, loaded.meta)
    if classes and not backbone_only:
        meta['repvit_mm.classes'] = json.dumps(classes)
    return meta


def export_onnx(
    config: str | os.PathLike | Config,
    checkpoint: str | os.PathLike | None,
    out: str | os.PathLike,
    *,
    shape: tuple[int, int] | None = None,
    backbone_only: bool = False,
    output: str = 'logits',
    opset: int | None = None,
    exporter: str = 'torchscript',
    blocked_layout: bool = True,
    force: bool = False,
    check_batch: int = 2,
    tolerance: float = 1e-4,
    min_label_agreement: float = 0.999,
    int8: bool = False,
    calibration_images: int = 64,
    exclude_nodes: tuple[str, ...] = (),
    int8_scope: str | None = None,
) -> dict[str, Any]:
    """Fuse the checkpoint's model, export it to ``out`` and check it with ONNX Runtime.

    A classifier exports its logits; a segmentor its whole model (``output``: class scores
    ``(N, C, H, W)`` or the label map ``(N, H, W)`` at the input size); ``backbone_only`` the backbone's
    feature maps. ``shape`` defaults to :func:`~repvit_mm.deploy.model.default_export_shape` (the
    classifier's test crop, the segmentor's training crop, 512 for a backbone).

    The check runs a random batch of ``check_batch`` images (a batch size other than the traced one, so
    the dynamic axis is exercised) through ONNX Runtime and through the *unfused* PyTorch model loaded
    from the checkpoint; the file is written only if the largest absolute difference is within
    ``tolerance`` times the outputs' magnitude (at least 1) -- for a label map, if at least
    ``min_label_agreement`` of the pixels agree (near-ties may flip in float32).

    ``int8``: then quantize the checked float model statically (QDQ, per-channel weights) on
    ``calibration_images`` images of the config's training set
    (:func:`repvit_mm.deploy.quantize.quantize_int8`), keeping ``exclude_nodes`` in float; ``out`` is
    the INT8 model. A whole detector quantizes the nodes of ``int8_scope`` (default ``all-but-rpn``:
    backbone, FPN and the RoI box and mask heads; ``features``: backbone and FPN; ``all``: the RPN head
    too; :data:`~repvit_mm.deploy.detector_onnx.INT8_SCOPES`).

    Returns:
        ``{'out', 'outputs': {name: shape}, 'max_abs_diff' or 'label_agreement', 'exporter', 'opset',
        'shape'}``; with ``int8`` also ``'int8'``: what the quantization measured.
    """
    if exporter not in EXPORTERS:
        raise UserInputError(f'unknown ONNX exporter {exporter!r}; choose one of {", ".join(EXPORTERS)}')
    opset = opset or DEFAULT_OPSET[exporter]
    out_path = check_output(out, force, suffixes=('.onnx',))
    loaded = load_model(config, checkpoint)
    if output != 'logits' and (loaded.task != 'segmentation' or backbone_only):
        raise UserInputError(f'--output {output}: only a whole segmentor outputs a label map')
    if int8 and backbone_only:
        raise UserInputError(
            '--int8 quantizes a classifier, a whole segmentor or a whole detector, not --backbone-only features'
        )
    if int8 and calibration_images < 1:
        raise UserInputError(f'--calibration-images must be at least 1, got {calibration_images}')
    if int8_scope is not None and (loaded.task != 'detection' or backbone_only or not int8):
        raise UserInputError(f'--int8-scope {int8_scope}: only for a whole detector with --int8')
    shape = shape or default_export_shape(loaded, backbone_only)
    if loaded.task == 'detection' and not backbone_only:
        int8_options = dict(calibration_images=calibration_images, exclude_nodes=exclude_nodes, scope=int8_scope)
        return _export_detector(
            loaded, out_path, shape, opset, exporter, blocked_layout, int8_options if int8 else None
        )
    reference = tensor_model(loaded, backbone_only, shape=shape, output=output)
    check_export_memory(reference, shape, max(check_batch, 1), f'exporting {loaded.cfg.filename}')
    module = tensor_model(fused_copy(loaded), backbone_only, shape=shape, output=output)

    x = torch.randn(check_batch, 3, *shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = reference(x)
    expected = [expected] if isinstance(expected, torch.Tensor) else list(expected)
    result: dict[str, Any] = {}
    with atomic_output(out_path) as tmp:
        names = export_tensor_model(
            module,
            tmp,
            shape,
            opset=opset,
            exporter=exporter,
            metadata=_metadata(loaded, shape, backbone_only, output),
            blocked_layout=blocked_layout,
        )
        session = ort_session(tmp)
        got = session.run(names, {'input': x.numpy()})
        if names == ['labels']:
            agreement = float((got[0] == expected[0].numpy()).mean())
            result['label_agreement'] = agreement
            if not agreement >= min_label_agreement:
                raise UserInputError(
                    f'ONNX Runtime labels agree with PyTorch on {agreement:.4%} of the pixels (at least '
                    f'{min_label_agreement:.1%} required); {out_path} not written'
                )
        else:
            diff = max(float(np.abs(g - e.numpy()).max()) for g, e in zip(got, expected, strict=False))
            scale = max(1.0, *(float(e.abs().max()) for e in expected))
            result['max_abs_diff'] = diff
            if not diff <= tolerance * scale:
                raise UserInputError(
                    f'ONNX Runtime output differs from PyTorch by {diff:.3g} (outputs up to '
                    f'{scale:.3g}, tolerance {tolerance:g} of that); {out_path} not written'
                )
        if int8:
            from .quantize import quantize_int8

            result['int8'] = _replace_with_int8(
                tmp,
                lambda float_path: quantize_int8(
                    loaded.cfg,
                    float_path,
                    tmp,
                    shape,
                    calibration_images,
                    exclude_nodes=exclude_nodes,
                    preprocessor=loaded.model.data_preprocessor,
                ),
            )
    return {
        'out': str(out_path),
        'outputs': {n: list(g.shape) for n, g in zip(names, got, strict=False)},
        'exporter': exporter,
        'opset': opset,
        'check_batch': check_batch,
        'shape': list(shape),
        **result,
    }


def _replace_with_int8(tmp: Path, quantize: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
    """Move the checked float file ``tmp`` aside, let ``quantize(float_path)`` write its INT8 version to
    ``tmp``, remove the float file; ``quantize``'s report."""
    float_path = tmp.with_name(tmp.name + '.fp32.onnx')
    os.replace(tmp, float_path)
    try:
        return quantize(float_path)
    finally:
        float_path.unlink(missing_ok=True)


def _export_detector(
    loaded: LoadedModel,
    out_path,
    shape: tuple[int, int],
    opset: int,
    exporter: str,
    blocked_layout: bool,
    int8: dict[str, Any] | None,
) -> dict[str, Any]:
    """The whole Mask R-CNN (:class:`~repvit_mm.deploy.detector_onnx.DetectorOutput`), batch 1, checked on a
    random image against the unfused PyTorch model (:func:`~repvit_mm.deploy.detector_onnx.match_detections`:
    every detection matched by one of the same label with IoU >= 0.99); with ``int8`` (keyword arguments of
    :func:`~repvit_mm.deploy.detector_onnx.quantize_detector`) then quantized."""
    from .detector_onnx import (
        DEFAULT_INT8_SCOPE,
        DetectorFeatures,
        DetectorOutput,
        int8_scope_prefixes,
        match_detections,
        quantize_detector,
    )

    if int8:
        int8_scope_prefixes(int8['scope'])  # a bad scope is refused before the export
        int8 = {**int8, 'scope': int8['scope'] or DEFAULT_INT8_SCOPE}
    if any(s % 32 for s in shape):  # FPN adds upsampled maps: every stride up to 32 must divide the size
        raise UserInputError(f'--shape {shape[0]} {shape[1]}: a detector needs multiples of 32')
    check_export_memory(DetectorFeatures(loaded.model), shape, 1, f'exporting {loaded.cfg.filename}')
    reference = DetectorOutput(loaded.model, shape).eval()
    module = DetectorOutput(fused_copy(loaded).model, shape).eval()
    x = torch.randn(1, 3, *shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = [t.numpy() for t in reference(x)]
    with atomic_output(out_path) as tmp:
        names = export_tensor_model(
            module,
            tmp,
            shape,
            opset=opset,
            exporter=exporter,
            metadata=_metadata(loaded, shape, False, 'detections'),
            blocked_layout=blocked_layout,
        )
        got = ort_session(tmp).run(names, {'input': x.numpy()})
        match = match_detections(expected, got)
        if match['matched'] < match['expected']:
            raise UserInputError(
                f'ONNX Runtime matches {match["matched"]} of the {match["expected"]} PyTorch detections '
                f'(same label, IoU >= 0.99); {out_path} not written'
            )
        result: dict[str, Any] = {}
        if int8:
            result['int8'] = _replace_with_int8(
                tmp,
                lambda float_path: quantize_detector(
                    loaded.cfg, float_path, tmp, shape, preprocessor=loaded.model.data_preprocessor, **int8
                ),
            )
    return {
        'out': str(out_path),
        'outputs': {n: list(g.shape) for n, g in zip(names, got, strict=True)},
        'exporter': exporter,
        'opset': opset,
        'check_batch': 1,
        'shape': list(shape),
        'detections': match,
        **result,
    }
