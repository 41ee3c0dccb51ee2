"""The mmcv ops our configs call, on torchvision's kernels (CPU and CUDA): mmcv without compiled ops.

``tools/install.sh`` builds mmcv 2.1.0 with ``MMCV_WITH_OPS=0`` (pure Python, seconds, no compiler) and
puts :mod:`repvit_mm.ops.mmcv_ext` in it as ``mmcv/_ext.py``, the module mmcv's op wrappers load their
kernels from. The kernels that Mask R-CNN + FPN call -- RoIAlign forward and backward (the RoI heads and
the mask targets of ``BitmapMasks.crop_and_resize``) and NMS (``nms`` / ``batched_nms``: RPN proposals,
test-time boxes) -- are served here by torchvision's, which every torchvision wheel has for CPU and CUDA;
Semantic FPN and the classifiers call none. The functions take the arguments of mmcv 2.1.0's compiled
``mmcv._ext`` functions and give the same numbers (tests/test_ops.py compares them with outputs recorded
from a compiled mmcv by tools/record_ops_fixture.py). Any other kernel stops with :class:`UnservedOpError`,
which names it and how to compile mmcv's ops. A compiled mmcv that is already installed is used as it is.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torchvision  # noqa: F401  (registers torch.ops.torchvision: the CPU and CUDA kernels)

from ..utils.errors import UserInputError

__all__ = ['COMPILED_OPS_HINT', 'SERVED', 'UnservedOpError', 'mmcv_op']

COMPILED_OPS_HINT = 'REPVIT_MM_COMPILED_OPS=1 bash tools/install.sh (with FORCE_CUDA=1 for CUDA kernels)'


class UnservedOpError(UserInputError):
    """An mmcv op that this install, mmcv without compiled ops, cannot run; the tools print it as one line."""


def _unserved(op: str) -> UnservedOpError:
    return UnservedOpError(
        f'mmcv op {op} needs mmcv compiled with its ops; this install has mmcv without them (repvit_mm.ops '
        f'serves RoIAlign with pool_mode avg and NMS from torchvision). Compile them: {COMPILED_OPS_HINT}'
    )


def roi_align_forward(
    input: torch.Tensor,
    rois: torch.Tensor,
    output: torch.Tensor,
    argmax_y: torch.Tensor,
    argmax_x: torch.Tensor,
    aligned_height: int,
    aligned_width: int,
    spatial_scale: float,
    sampling_ratio: int,
    pool_mode: int,
    aligned: bool,
) -> None:
    """mmcv's ``roi_align_forward``: writes ``output``; ``pool_mode`` 1 is 'avg', 0 ('max') is not served."""
    if pool_mode != 1:
        raise _unserved("roi_align_forward with pool_mode='max'")
    output.copy_(
        torch.ops.torchvision.roi_align(
            input, rois, spatial_scale, aligned_height, aligned_width, sampling_ratio, aligned
        )
    )


def roi_align_backward(
    grad_output: torch.Tensor,
    rois: torch.Tensor,
    argmax_y: torch.Tensor,
    argmax_x: torch.Tensor,
    grad_input: torch.Tensor,
    aligned_height: int,
    aligned_width: int,
    spatial_scale: float,
    sampling_ratio: int,
    pool_mode: int,
    aligned: bool,
) -> None:
    """mmcv's ``roi_align_backward``: writes ``grad_input`` (the gradient of the input feature map)."""
    if pool_mode != 1:
        raise _unserved("roi_align_backward with pool_mode='max'")
    batch, channels, height, width = grad_input.shape
    grad_input.copy_(
        torch.ops.torchvision._roi_align_backward(
            grad_output,
            rois,
            spatial_scale,
            aligned_height,
            aligned_width,
            batch,
            channels,
            height,
            width,
            sampling_ratio,
            aligned,
        )
    )


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, offset: int) -> torch.Tensor:
    """mmcv's ``nms``: indices of the kept boxes, highest score first; ``offset`` 1 (legacy widths
    ``x2 - x1 + 1``) is not served."""
    if offset != 0:
        raise _unserved('nms with offset=1')
    # mmcv's kernels visit the boxes in the order of torch's default (unstable) sort, torchvision's in that
    # of a stable sort: boxes with tied scores come in another order, and other boxes are kept. Sorted as
    # mmcv sorts, torchvision's stable sort keeps that order.
    order = scores.sort(0, descending=True)[1]
    # mmcv compares the IoU with the threshold as a C float (an IoU equal to float32(0.3) is above the
    # double 0.3, not above the float)
    threshold = float(torch.tensor(iou_threshold, dtype=torch.float32))
    return order[torch.ops.torchvision.nms(boxes[order], scores[order], threshold)]


def get_compiler_version() -> str:
    """What mmcv's ``collect_env`` reports as the compiler of its ops."""
    return 'none: mmcv without compiled ops, RoIAlign and NMS from torchvision (repvit_mm.ops)'


def get_compiling_cuda_version() -> str:
    return 'not available'


#: The ``mmcv._ext`` functions served here, by name.
SERVED: dict[str, Callable] = {
    f.__name__: f
    for f in (roi_align_forward, roi_align_backward, nms, get_compiler_version, get_compiling_cuda_version)
}


def mmcv_op(name: str) -> Callable:
    """The function serving ``mmcv._ext.<name>``; for a kernel not served, one that raises
    :class:`UnservedOpError` naming it when called."""
    if name in SERVED:
        return SERVED[name]

    def unserved(*args, **kwargs):
        raise _unserved(name)

    unserved.__name__ = name
    return unserved
