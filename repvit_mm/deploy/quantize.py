"""Static INT8 quantization of an exported ONNX model for ONNX Runtime, calibrated on the config's data.

ONNX Runtime's post-training quantization (``onnxruntime.quantization.quantize_static``): QDQ format
(QuantizeLinear / DequantizeLinear pairs, which ONNX Runtime fuses into integer kernels), signed 8-bit
weights per output channel, unsigned 8-bit activations with ranges from the calibration images (min /
max). The settings were chosen on the demo's trained Shapes segmentor (docs/deployment.md has the table):

- **The nodes that write the model's outputs stay in float.** Quantizing the segmentor's final resize
  made the upsampled class scores 8-bit: neighbouring classes tie, the argmax falls to the first one,
  and thin shapes shrink (mIoU 75.83 -> 74.00). With that one node in float: 75.62.
- **Only** :data:`QUANTIZED_OPS` **get integer inputs** (convolutions, Gemm, residual adds, the FPN's
  upsampling): 75.89. GELU and squeeze-and-excitation's sigmoid and scale run in float between
  integer convolutions; ONNX Runtime still runs every convolution, add and the SE pooling in int8.
- **GELU is fused** into ONNX Runtime's ``com.microsoft`` ``Gelu`` before quantizing. The exporter
  writes it as five ``Erf`` arithmetic nodes, which ONNX Runtime fuses in float graphs but not between
  Q/DQ pairs; left apart they were a third of the INT8 model's time. The INT8 file therefore needs
  ONNX Runtime (``fuse_gelu=False`` keeps standard ONNX).
- Min/max calibration on 64 images, per-channel weights: percentile (99.999) or entropy calibration, 16
  or 256 images, reduced range, symmetric or signed activations were no better (same table); per-tensor
  weights scored 0.18 higher, within the noise of 50 validation images.

The calibration images are ``N`` images of the config's *training* set, spread evenly over it, through
the config's *test* pipeline and data preprocessor (the deterministic view the model sees when deployed;
the training pipeline's random crops and colour jitter are not what it will be fed), resized to the
exported size when the pipeline gives another one.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mmengine.config import Config

from ..utils.errors import UserInputError

__all__ = ['QUANTIZED_OPS', 'calibration_batches', 'quantize_qdq', 'quantize_int8']

#: The node types given integer inputs (and outputs): convolutions, the classifier's Gemm, residual adds and
#: the FPN's upsampling. GELU, squeeze-and-excitation's sigmoid and scale stay in float (see the docstring).
QUANTIZED_OPS = ('Conv', 'Gemm', 'MatMul', 'Add', 'Resize')


def _leaf_dataset(dataset: dict) -> dict:
    while 'pipeline' not in dataset and isinstance(dataset.get('dataset'), dict):  # RepeatDataset & co.
        dataset = dataset['dataset']
    return dataset


def calibration_batches(
    cfg: Config,
    count: int,
    shape: tuple[int, int],
    preprocessor: torch.nn.Module | None = None,
    pad: bool = False,
) -> Iterator[np.ndarray]:
    """``count`` normalised images ``(1, 3, H, W)`` (float32) of ``cfg``'s training set, spread evenly over
    it, through the test pipeline and the model's data preprocessor (``preprocessor``, default: that of
    the config's model), at ``shape``: resized to it, or with ``pad`` (a detector's fixed input) padded
    bottom and right with zeros as the exported detector is fed (a larger image is resized)."""
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import DATASETS, init_default_scope

    from ..models.build import build_model

    init_default_scope(cfg.get('default_scope'))
    train = (cfg.get('train_dataloader') or {}).get('dataset')
    test = (cfg.get('test_dataloader') or cfg.get('val_dataloader') or {}).get('dataset')
    if not train or not test:
        raise UserInputError(f'{cfg.filename}: calibration needs train_dataloader and test_dataloader datasets')
    dataset_cfg = copy.deepcopy(_leaf_dataset(dict(train)))
    dataset_cfg['pipeline'] = copy.deepcopy(_leaf_dataset(dict(test))['pipeline'])
    try:
        dataset = DATASETS.build(dataset_cfg)
    except (FileNotFoundError, OSError) as err:
        raise UserInputError(f'{cfg.filename}: cannot read the training set for calibration: {err}') from err
    if len(dataset) == 0:
        raise UserInputError(f'{cfg.filename}: the training set is empty; nothing to calibrate on')
    if preprocessor is None:
        preprocessor = build_model(cfg).data_preprocessor
    preprocessor = preprocessor.eval()
    picks = np.linspace(0, len(dataset) - 1, num=min(count, len(dataset))).round().astype(int)
    for index in picks:
        with torch.no_grad():
            inputs = preprocessor(pseudo_collate([dataset[int(index)]]), False)['inputs'].float()
        if pad and inputs.shape[2] <= shape[0] and inputs.shape[3] <= shape[1]:
            inputs = torch.nn.functional.pad(inputs, (0, shape[1] - inputs.shape[3], 0, shape[0] - inputs.shape[2]))
        elif tuple(inputs.shape[2:]) != tuple(shape):
            inputs = torch.nn.functional.interpolate(inputs, size=shape, mode='bilinear', align_corners=False)
        yield inputs.numpy()


class _Reader:
    """An ``onnxruntime.quantization.CalibrationDataReader`` over a list of inputs."""

    def __init__(self, batches: list[np.ndarray]) -> None:
        self._iter = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._iter, None)
        return None if batch is None else {'input': batch}


def _fuse_gelu(model) -> int:
    """Fuse each exact GELU that the TorchScript exporter writes as ``Div, Erf, Add, Mul, Mul`` into one
    ONNX Runtime ``com.microsoft`` ``Gelu`` node (ONNX Runtime's own quantization-tools fusion), named
    after the activation it replaces (``.../act/Gelu``); returns how many."""
    from onnxruntime.quantization.fusions import FusionGelu
    from onnxruntime.quantization.onnx_model import ONNXModel

    wrapped = ONNXModel(model)
    FusionGelu(wrapped).apply()
    wrapped.clean_initializers()
    fused = [n for n in model.graph.node if n.op_type == 'Gelu' and n.domain == 'com.microsoft']
    for node in fused:
        if node.output[0].startswith('/'):  # '/backbone/.../act/Mul_1_output_0' -> '/backbone/.../act/Gelu'
            node.name = node.output[0].rsplit('/', 1)[0] + '/Gelu'
    return len(fused)


def quantize_qdq(
    float_model: str | os.PathLike,
    out: str | os.PathLike,
    batches: list[np.ndarray],
    exclude_nodes: tuple[str, ...] = (),
    *,
    fuse_gelu: bool = True,
    only_prefixes: tuple[str, ...] = (),
) -> None:
    """ONNX Runtime's static quantization of ``float_model`` to ``out`` with this module's settings,
    calibrated on ``batches`` (inputs of ``input``). The nodes that write the graph's outputs are kept in
    float besides ``exclude_nodes``; ``fuse_gelu=False`` keeps GELU as standard ONNX arithmetic (a file
    other runtimes read, slower under ONNX Runtime; see the module docstring). ``only_prefixes``: quantize
    only the nodes whose names start with one of these (e.g. ``/backbone/``; ONNX Runtime's
    ``nodes_to_quantize``, which it intersects with the quantized op types), default all."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = Path(str(out) + '.prep.onnx')
    try:
        # shape inference and graph clean-up first, as ONNX Runtime's quantization docs advise (the biases
        # become initializers, so that they are quantized to int32 with their convolution)
        quant_pre_process(str(float_model), str(prepared), skip_symbolic_shape=True)
        model = onnx.load(str(prepared))
        if fuse_gelu and _fuse_gelu(model):
            onnx.save(model, str(prepared))
        writers = {output: node.name for node in model.graph.node for output in node.output}
        last = [writers[o.name] for o in model.graph.output if o.name in writers]
        # names after the clean-up, which may fuse nodes
        only = [n.name for n in model.graph.node if n.name.startswith(only_prefixes)] if only_prefixes else None
        quantize_static(
            str(prepared),
            str(out),
            _Reader(batches),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QUInt8,
            calibrate_method=CalibrationMethod.MinMax,
            op_types_to_quantize=list(QUANTIZED_OPS),
            nodes_to_exclude=list(dict.fromkeys([*exclude_nodes, *last])),
            nodes_to_quantize=only,
        )
    finally:
        prepared.unlink(missing_ok=True)


def check_node_names(float_model: str | os.PathLike, exclude_nodes: tuple[str, ...]) -> None:
    """Raise :class:`UserInputError` naming the ``--int8-exclude`` names that are no node of the graph."""
    import onnx

    names = {n.name for n in onnx.load(str(float_model), load_external_data=False).graph.node}
    unknown = [n for n in exclude_nodes if n not in names]
    if unknown:
        raise UserInputError(f'--int8-exclude: no node named {", ".join(unknown)} in the exported graph')


def quantize_file(
    float_model: str | os.PathLike,
    out: str | os.PathLike,
    batches: list[np.ndarray],
    exclude_nodes: tuple[str, ...],
    quantized: str,
    only_prefixes: tuple[str, ...] = (),
):
    """:func:`quantize_qdq` to ``out``, which keeps the float file's metadata (mean, std, classes) and records
    how it was quantized (``quantized``: what was). Returns the written ``onnx.ModelProto``."""
    import onnx

    quantize_qdq(float_model, out, batches, exclude_nodes, only_prefixes=only_prefixes)
    proto, source = onnx.load(str(out)), onnx.load(str(float_model), load_external_data=False)
    del proto.metadata_props[:]
    proto.metadata_props.extend(source.metadata_props)
    for key, value in {
        'repvit_mm.int8': (
            f'QDQ, per-channel int8 weights, uint8 activations, {len(batches)} calibration images; '
            f'quantized: {quantized}'
        ),
        'repvit_mm.int8_excluded': ','.join(exclude_nodes),
    }.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(out))
    return proto


def quantize_int8(
    cfg: Config,
    float_model: str | os.PathLike,
    out: str | os.PathLike,
    shape: tuple[int, int],
    calibration_images: int,
    *,
    exclude_nodes: tuple[str, ...] = (),
    preprocessor: torch.nn.Module | None = None,
) -> dict[str, Any]:
    """Quantize ``float_model`` (an exported classifier or segmentor) to ``out``; see the module docstring.

    ``exclude_nodes``: node names kept in float (ONNX Runtime's ``nodes_to_exclude``); ``preprocessor``:
    see :func:`calibration_batches`.

    Returns:
        ``{'calibration_images', 'excluded', 'agreement', 'agreement_of'}``: ``agreement`` is the
        fraction of the calibration images' top-1 classes (classifier) or pixels (segmentor) where the
        INT8 model agrees with the float one.
    """

    from .export_onnx import ort_session

    check_node_names(float_model, exclude_nodes)
    batches = list(calibration_batches(cfg, calibration_images, shape, preprocessor))
    quantize_file(float_model, out, batches, exclude_nodes, f'{", ".join(QUANTIZED_OPS)}; outputs in float')
    float_session, int8_session = ort_session(float_model), ort_session(out)
    output = float_session.get_outputs()[0].name
    same = total = 0
    for batch in batches:
        a, b = (s.run([output], {'input': batch})[0] for s in (float_session, int8_session))
        unit = 'top-1 classes' if a.ndim == 2 else 'pixels'
        if output == 'logits':  # class scores: compare the argmax over classes
            a, b = a.argmax(1), b.argmax(1)
        same += int((a == b).sum())
        total += a.size
    return {
        'calibration_images': len(batches),
        'excluded': list(exclude_nodes),
        'agreement': same / total,
        'agreement_of': unit,
    }
