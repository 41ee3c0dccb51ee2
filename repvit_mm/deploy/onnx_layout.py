"""Rewrite squeeze-and-excitation in an exported ONNX graph so ONNX Runtime keeps its blocked layout.

On CPU, ONNX Runtime runs convolutions in a blocked channel layout (NCHWc) and converts tensors back to
plain NCHW around any node its layout pass does not handle. In a RepViT block two SE nodes are such nodes:
``ReduceMean`` over H, W and the ``Mul`` of an ``(N, C, H, W)`` tensor by an ``(N, C, 1, 1)`` scale
(broadcast multiplies are left in NCHW). Each SE block then costs four full-tensor layout conversions and
keeps the residual add after it from fusing into the convolution before.

:func:`keep_blocked_layout` writes the same computation with nodes the layout pass does handle:
``GlobalAveragePool`` for the mean, and a nearest-neighbour ``Resize`` of the scale to ``(H, W)`` so that
the ``Mul`` sees two tensors of one shape. Nothing is approximated (the mean may round differently, the
scale is copied), and the graph stays standard ONNX for any runtime.
"""

from __future__ import annotations

import copy

import numpy as np
import onnx
from onnx import helper, numpy_helper

__all__ = ['keep_blocked_layout']


def _dims(value_info: onnx.ValueInfoProto | None) -> list[int | str | None] | None:
    if value_info is None or not value_info.type.tensor_type.HasField('shape'):
        return None
    return [
        d.dim_value if d.HasField('dim_value') else (d.dim_param or None) for d in value_info.type.tensor_type.shape.dim
    ]


def _is_spatial_mean(node: onnx.NodeProto, constants: dict[str, np.ndarray]) -> bool:
    """``ReduceMean`` over axes 2 and 3 of a 4-D tensor, keeping dims (axes as attribute or input)."""
    if node.op_type != 'ReduceMean' or node.domain not in ('', 'ai.onnx'):
        return False
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if attrs.get('keepdims', 1) != 1:
        return False
    if 'axes' in attrs:
        axes = list(attrs['axes'])
    elif len(node.input) > 1 and node.input[1] in constants:
        axes = constants[node.input[1]].tolist()
    else:
        return False
    return sorted(int(a) % 4 for a in axes) == [2, 3]


def keep_blocked_layout(model: onnx.ModelProto) -> onnx.ModelProto:
    """Return a copy of ``model`` with every SE-style spatial mean and channel-scale multiply rewritten
    (see the module docstring). Only multiplies over a static H and W are rewritten."""
    model = onnx.shape_inference.infer_shapes(copy.deepcopy(model))
    graph = model.graph
    infos = {v.name: v for v in [*graph.input, *graph.value_info, *graph.output]}
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == 'Constant':
            constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)

    rewritten: list[onnx.NodeProto] = []
    for index, node in enumerate(graph.node):
        if _is_spatial_mean(node, constants) and len(_dims(infos.get(node.input[0])) or []) == 4:
            rewritten.append(
                helper.make_node(
                    'GlobalAveragePool', [node.input[0]], list(node.output), name=node.name + '/global_pool'
                )
            )
            continue
        rewritten.append(node)
        if node.op_type != 'Mul' or node.domain not in ('', 'ai.onnx') or len(node.input) != 2:
            continue
        a, b = (_dims(infos.get(name)) for name in node.input)
        if a is None or b is None or len(a) != 4 or len(b) != 4:
            continue
        for full, scale, swap in ((a, b, False), (b, a, True)):  # noqa: B007  (read after the break)
            spatial = full[2:]
            if (
                scale[2:] == [1, 1]
                and all(isinstance(d, int) and d > 1 for d in spatial)
                and full[:2] == scale[:2]
                and isinstance(full[1], int)
            ):
                break
        else:
            continue
        full_name, scale_name = (node.input[1], node.input[0]) if swap else (node.input[0], node.input[1])
        prefix = f'{node.name or f"Mul_{index}"}/blocked_layout'
        scales_name, expanded = f'{prefix}/scales', f'{prefix}/scale_expanded'
        graph.initializer.append(numpy_helper.from_array(np.array([1, 1, *spatial], dtype=np.float32), scales_name))
        rewritten.insert(
            len(rewritten) - 1,
            helper.make_node(
                'Resize',
                [scale_name, '', scales_name],
                [expanded],
                name=f'{prefix}/repeat_scale',
                mode='nearest',
                coordinate_transformation_mode='asymmetric',
                nearest_mode='floor',
            ),
        )
        node.input[:] = [full_name, expanded]
        # Shape inference cannot tell that Resize keeps the (symbolic) batch axis; say so, or the layout
        # pass cannot prove the Mul's inputs have one shape.
        info = copy.deepcopy(infos[full_name])
        info.name = expanded
        graph.value_info.append(info)
    del graph.node[:]
    graph.node.extend(rewritten)
    onnx.checker.check_model(model)
    return model
