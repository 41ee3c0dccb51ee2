"""The whole Mask R-CNN as one tensor-in/tensor-out module, written with ops that export to standard ONNX.

:class:`DetectorOutput` runs backbone, FPN, RPN head, proposal decoding and NMS, the RoI box head, box
decoding and per-class NMS, and the mask head, on one normalised image of a fixed size, and returns a
fixed number of detections (the config's ``test_cfg.rcnn.max_per_img``), padded. The thresholds and
sizes come from the config's ``test_cfg`` (``rpn.nms_pre``, ``rpn.max_per_img``, ``rpn.nms.iou_threshold``,
``rpn.min_bbox_size``, ``rcnn.score_thr``, ``rcnn.nms.iou_threshold``, ``rcnn.max_per_img``).

What differs from mmdet's ``predict`` (the layers are the model's own; only the glue is rewritten):

- RoI pooling is ``torchvision.ops.roi_align`` (ONNX ``RoiAlign``, ``half_pixel`` for mmcv's
  ``aligned=True``) instead of mmcv's ``RoIAlign`` (an ``mmcv::`` custom op in ONNX); every RoI is pooled
  at every FPN level and the level mmdet's ``map_roi_levels`` assigns is selected.
- NMS is ``torchvision.ops.batched_nms`` (ONNX ``NonMaxSuppression``; the same IoU as mmcv's).
- Box decoding is :func:`delta2bbox` (mmdet's ``delta2bbox`` clamps slices in place; its ONNX variant
  imports the removed ``mmdet.core``).
- The RoI head's per-class NMS runs on every (box, class) pair and the score threshold is applied to its
  output: pairs below the threshold score less than every pair above it, so they cannot suppress one
  (greedy NMS visits boxes by score) and the kept set above the threshold is mmdet's.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..utils.errors import UserInputError

__all__ = [
    'DetectorOutput',
    'DetectorFeatures',
    'DetectorDense',
    'delta2bbox',
    'match_detections',
    'DETECTOR_OUTPUTS',
    'is_two_stage_mask_rcnn',
    'quantize_detector',
    'INT8_SCOPES',
    'DEFAULT_INT8_SCOPE',
    'int8_scope_prefixes',
]

#: Output names of the exported detector, in order.
DETECTOR_OUTPUTS = ('boxes', 'scores', 'labels', 'masks')


def delta2bbox(
    rois: torch.Tensor,
    deltas: torch.Tensor,
    means: tuple[float, ...],
    stds: tuple[float, ...],
    max_shape: tuple[int, int],
    wh_ratio_clip: float = 16 / 1000,
) -> torch.Tensor:
    """mmdet's ``DeltaXYWHBBoxCoder.decode`` (``delta2bbox``, no centre clamp) with out-of-place clamping.

    ``rois`` ``(K, 4)``; ``deltas`` ``(K, 4 * C)``; returns ``(K, C, 4)`` boxes ``x1, y1, x2, y2`` clipped
    to ``max_shape`` ``(H, W)``."""
    k = rois.shape[0]
    d = deltas.reshape(k, -1, 4) * deltas.new_tensor(stds) + deltas.new_tensor(means)
    pxy = ((rois[:, :2] + rois[:, 2:]) * 0.5)[:, None]
    pwh = (rois[:, 2:] - rois[:, :2])[:, None]
    max_ratio = abs(math.log(wh_ratio_clip))
    gxy = pxy + pwh * d[..., :2]
    gwh = pwh * d[..., 2:].clamp(min=-max_ratio, max=max_ratio).exp()
    h, w = max_shape
    x1y1, x2y2 = gxy - gwh * 0.5, gxy + gwh * 0.5
    x = torch.stack([x1y1[..., 0], x2y2[..., 0]], -1).clamp(min=0, max=w)
    y = torch.stack([x1y1[..., 1], x2y2[..., 1]], -1).clamp(min=0, max=h)
    return torch.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], -1)


def is_two_stage_mask_rcnn(model: nn.Module) -> bool:
    """Whether ``model`` is the structure :class:`DetectorOutput` exports: backbone + neck, an anchor RPN
    with delta boxes, one standard RoI head with a box head and a mask head."""
    rpn, roi = getattr(model, 'rpn_head', None), getattr(model, 'roi_head', None)
    return (
        rpn is not None
        and roi is not None
        and type(roi).__name__ == 'StandardRoIHead'
        and getattr(roi, 'with_mask', False)
        and type(rpn.bbox_coder).__name__ == 'DeltaXYWHBBoxCoder'
        and type(roi.bbox_head.bbox_coder).__name__ == 'DeltaXYWHBBoxCoder'
    )


class DetectorOutput(nn.Module):
    """A whole Mask R-CNN: a normalised image ``(1, 3, H, W)`` of the fixed ``shape`` -> ``boxes (N, 4)``
    (``x1, y1, x2, y2`` in input pixels), ``scores (N,)``, ``labels (N,)`` (int64) and ``masks (N, 28, 28)``
    (the mask head's probabilities for the detected class, inside the box), ``N`` the config's
    ``test_cfg.rcnn.max_per_img``, by decreasing score; slots without a detection have score 0, label -1,
    an empty box and a zero mask.

    The anchors are computed once for ``shape`` and stored as constants."""

    def __init__(self, detector: nn.Module, shape: tuple[int, int]) -> None:
        super().__init__()
        if not is_two_stage_mask_rcnn(detector):
            raise UserInputError(
                f'{type(detector).__name__}: only a Mask R-CNN (anchor RPN, StandardRoIHead with a mask head, '
                'delta box coders) exports whole; pass --backbone-only'
            )
        self.detector = detector
        self.size = (int(shape[0]), int(shape[1]))
        cfg = detector.test_cfg
        self.rpn_cfg, self.rcnn_cfg = cfg.rpn, cfg.rcnn
        with torch.no_grad():
            feats = detector.extract_feat(torch.zeros(1, 3, *self.size))
        sizes = [f.shape[-2:] for f in feats]
        anchors = detector.rpn_head.prior_generator.grid_priors(sizes, device='cpu')
        for i, a in enumerate(anchors):
            self.register_buffer(f'anchors{i}', a, persistent=False)
        self.num_levels = len(anchors)

    # ------------------------------------------------------------------------------------------ stages
    def _proposals(self, feats: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """mmdet's ``RPNHead.predict_by_feat`` for one image: top ``nms_pre`` anchors per level, decoded,
        boxes of at most ``min_bbox_size`` dropped, NMS per level, the best ``max_per_img`` kept."""
        from torchvision.ops import batched_nms

        head, cfg = self.detector.rpn_head, self.rpn_cfg
        coder = head.bbox_coder
        cls_scores, bbox_preds = head(feats)
        nms_pre = int(cfg.get('nms_pre', -1))
        scores, boxes, levels = [], [], []
        for lvl, (cls, reg) in enumerate(zip(cls_scores, bbox_preds, strict=True)):
            anchors = getattr(self, f'anchors{lvl}')
            s = cls[0].permute(1, 2, 0).reshape(-1)
            s = s.sigmoid() if head.use_sigmoid_cls else s.reshape(-1, 2).softmax(-1)[:, 0]
            d = reg[0].permute(1, 2, 0).reshape(-1, 4)
            if 0 < nms_pre < s.shape[0]:  # a Python int at a fixed input size
                s, idx = s.topk(nms_pre)
                d, anchors = d[idx], anchors[idx]
            b = delta2bbox(anchors, d, coder.means, coder.stds, self.size)[:, 0]
            scores.append(s)
            boxes.append(b)
            levels.append(torch.full_like(s, lvl, dtype=torch.int64))
        scores, boxes, levels = torch.cat(scores), torch.cat(boxes), torch.cat(levels)
        min_size = cfg.get('min_bbox_size', -1)
        if min_size >= 0:
            wh = boxes[:, 2:] - boxes[:, :2]
            keep = ((wh[:, 0] > min_size) & (wh[:, 1] > min_size)).nonzero().squeeze(1)
            scores, boxes, levels = scores[keep], boxes[keep], levels[keep]
        keep = batched_nms(boxes, scores, levels, float(cfg.nms.iou_threshold))[: int(cfg.max_per_img)]
        return boxes[keep]

    def _roi_features(self, extractor: nn.Module, feats: tuple[torch.Tensor, ...], boxes: torch.Tensor):
        """mmdet's ``SingleRoIExtractor`` with torchvision's RoIAlign: each box pooled at the level that
        ``map_roi_levels`` gives it."""
        from torchvision.ops import roi_align

        rois = torch.cat([boxes.new_zeros(boxes.shape[0], 1), boxes], 1)
        levels = extractor.map_roi_levels(rois, extractor.num_inputs)
        out = None
        for lvl, layer in enumerate(extractor.roi_layers):
            pooled = roi_align(
                feats[lvl],
                rois,
                layer.output_size,
                spatial_scale=layer.spatial_scale,
                sampling_ratio=layer.sampling_ratio,
                aligned=layer.aligned,
            )
            mask = (levels == lvl).to(pooled.dtype)[:, None, None, None]
            out = pooled * mask if out is None else out + pooled * mask
        return out

    def _detections(self, feats, proposals: torch.Tensor):
        """mmdet's ``BBoxHead.predict_by_feat`` + ``multiclass_nms`` for one image, padded to ``max_per_img``."""
        from torchvision.ops import batched_nms

        roi, cfg = self.detector.roi_head, self.rcnn_cfg
        head = roi.bbox_head
        coder = head.bbox_coder
        cls_score, bbox_pred = head(self._roi_features(roi.bbox_roi_extractor, feats, proposals))
        scores = cls_score.softmax(-1)[:, :-1]  # the last column is the background
        num_classes = scores.shape[1]
        boxes = delta2bbox(proposals, bbox_pred, coder.means, coder.stds, self.size)
        if boxes.shape[1] == 1:  # class-agnostic regression
            boxes = boxes.expand(-1, num_classes, 4)
        labels = torch.arange(num_classes).expand(scores.shape[0], num_classes).reshape(-1)
        scores, boxes = scores.reshape(-1), boxes.reshape(-1, 4)
        max_num = int(cfg.max_per_img)
        keep = batched_nms(boxes, scores, labels, float(cfg.nms.iou_threshold))[:max_num]
        scores, boxes, labels = scores[keep], boxes[keep], labels[keep]
        valid = scores > float(cfg.score_thr)
        scores = torch.where(valid, scores, torch.zeros_like(scores))
        labels = torch.where(valid, labels, torch.full_like(labels, -1))
        boxes = boxes * valid[:, None].to(boxes.dtype)
        # pad to exactly max_num rows (the slice caps it; the padding fills a short list)
        scores = torch.cat([scores, scores.new_zeros(max_num)])[:max_num]
        labels = torch.cat([labels, labels.new_full((max_num,), -1)])[:max_num]
        boxes = torch.cat([boxes, boxes.new_zeros(max_num, 4)])[:max_num]
        return boxes, scores, labels

    def _masks(self, feats, boxes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        roi = self.detector.roi_head
        logits = roi.mask_head(self._roi_features(roi.mask_roi_extractor, feats, boxes))  # (N, C, 28, 28)
        index = labels.clamp(min=0)[:, None, None, None].expand(-1, 1, *logits.shape[2:])
        probs = logits.gather(1, index)[:, 0].sigmoid()
        return probs * (labels >= 0).to(probs.dtype)[:, None, None]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feats = self.detector.extract_feat(x)
        proposals = self._proposals(feats)
        boxes, scores, labels = self._detections(feats, proposals)
        return boxes, scores, labels, self._masks(feats, boxes, labels)


class DetectorFeatures(nn.Module):
    """Backbone + neck of a detector (what the export's memory estimate probes)."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.detector.extract_feat(x))


#: ``--int8-scope`` of a whole detector -> the ONNX node-name prefixes quantized (the TorchScript exporter
#: names nodes after the modules that run them). ``features``: backbone + FPN; ``all-but-rpn``: also the
#: RoI box head and the mask head; ``all``: the RPN head too. RoIAlign, NMS and the box decoding stay float.
INT8_SCOPES = {
    'features': ('/backbone/', '/neck/'),
    'all-but-rpn': ('/backbone/', '/neck/', '/bbox_head/', '/mask_head/'),
    'all': ('/backbone/', '/neck/', '/rpn_head/', '/bbox_head/', '/mask_head/'),
}
#: The default: on the Shapes detector the RoI heads quantize as well as backbone + FPN (box AP -0.4 either
#: way) and the RPN head does not (box AP -2.6 with it; docs/deployment.md).
DEFAULT_INT8_SCOPE = 'all-but-rpn'


def int8_scope_prefixes(scope: str | None) -> tuple[str, ...]:
    """The node-name prefixes :data:`INT8_SCOPES` gives ``scope`` (None: :data:`DEFAULT_INT8_SCOPE`)."""
    scope = scope or DEFAULT_INT8_SCOPE
    if scope not in INT8_SCOPES:
        raise UserInputError(f'--int8-scope {scope}: choose one of {", ".join(INT8_SCOPES)}')
    return INT8_SCOPES[scope]


def quantize_detector(
    cfg,
    float_model,
    out,
    shape: tuple[int, int],
    calibration_images: int,
    *,
    scope: str = DEFAULT_INT8_SCOPE,
    exclude_nodes: tuple[str, ...] = (),
    preprocessor: nn.Module | None = None,
    min_iou: float = 0.5,
) -> dict:
    """Static INT8 quantization (:mod:`~repvit_mm.deploy.quantize`'s settings) of an exported whole
    detector ``float_model`` to ``out``, only the nodes of ``scope`` (:data:`INT8_SCOPES`), calibrated on
    ``calibration_images`` training images padded to ``shape`` as the file is fed.

    Returns ``{'calibration_images', 'excluded', 'scope', 'quantized_nodes', 'detections'}``: the last is
    :func:`match_detections` of the INT8 model's detections (above the config's ``score_thr``) against the
    float model's on the calibration images, summed (same label, box IoU >= ``min_iou``)."""

    from .export_onnx import ort_session
    from .quantize import calibration_batches, check_node_names, quantize_file

    prefixes = int8_scope_prefixes(scope)
    check_node_names(float_model, exclude_nodes)
    batches = list(calibration_batches(cfg, calibration_images, shape, preprocessor, pad=True))
    scope_text = ', '.join(p.strip('/') for p in prefixes)
    proto = quantize_file(float_model, out, batches, exclude_nodes, scope_text, only_prefixes=prefixes)
    dequantized = {o for n in proto.graph.node if n.op_type == 'DequantizeLinear' for o in n.output}
    quantized = [  # the layers whose weights are int8
        n.name
        for n in proto.graph.node
        if n.op_type in ('Conv', 'ConvTranspose', 'Gemm', 'MatMul') and len(n.input) > 1 and n.input[1] in dequantized
    ]
    float_session, int8_session = ort_session(float_model), ort_session(out)
    total = {'expected': 0, 'got': 0, 'matched': 0}
    for batch in batches:
        a, b = (s.run(list(DETECTOR_OUTPUTS), {'input': batch}) for s in (float_session, int8_session))
        match = match_detections(a, b, min_iou=min_iou)
        for key in total:
            total[key] += match[key]
    return {
        'calibration_images': len(batches),
        'excluded': list(exclude_nodes),
        'scope': scope,
        'quantized_nodes': quantized,
        'detections': {**total, 'min_iou': min_iou},
    }


class DetectorDense(nn.Module):
    """The dense part of a two-stage detector -- backbone, FPN and RPN head -- as one tensor-in/tuple-out
    module (its Core ML export): a normalised image -> the FPN maps, then the RPN head's objectness logits
    and box deltas per level, named by :attr:`names` (``fpn_p2..``, ``rpn_cls_p2..``, ``rpn_reg_p2..``,
    ``pN`` the level of stride ``2**N``). Decoding the proposals (anchors, NMS), RoIAlign and the RoI heads
    are left to the caller."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        if getattr(detector, 'rpn_head', None) is None or not getattr(detector, 'with_neck', False):
            raise UserInputError(
                f'{type(detector).__name__}: only a detector with a neck and an RPN head exports its dense part '
                'here; pass --backbone-only'
            )
        self.detector = detector
        strides = [s[0] if isinstance(s, (tuple, list)) else s for s in detector.rpn_head.prior_generator.strides]
        levels = [f'p{round(math.log2(s))}' for s in strides]
        self.names = [f'{kind}_{lvl}' for kind in ('fpn', 'rpn_cls', 'rpn_reg') for lvl in levels]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feats = self.detector.extract_feat(x)
        cls_scores, bbox_preds = self.detector.rpn_head(feats)
        return (*feats, *cls_scores, *bbox_preds)


def match_detections(expected, got, min_iou: float = 0.99, min_score: float = 0.0) -> dict:
    """Match two sets of padded detections ``(boxes, scores, labels, ...)`` (numpy): each expected
    detection with score > ``min_score`` and a label >= 0 to the unused one of ``got`` with the same label and
    the highest IoU. Returns ``{'expected', 'got', 'matched', 'min_iou', 'max_score_diff'}`` (``matched``:
    pairs with IoU >= ``min_iou``; ``min_iou`` over the matched pairs)."""
    eb, es, el = (np.asarray(a) for a in expected[:3])
    gb, gs, gl = (np.asarray(a) for a in got[:3])
    ev = np.flatnonzero((es > min_score) & (el >= 0))
    gv = np.flatnonzero((gs > min_score) & (gl >= 0))
    used: set[int] = set()
    ious, score_diffs = [], []
    for i in ev:
        best, best_iou = -1, 0.0
        for j in gv:
            if j in used or gl[j] != el[i]:
                continue
            iou = _iou(eb[i], gb[j])
            if iou > best_iou:
                best, best_iou = j, iou
        if best >= 0 and best_iou >= min_iou:
            used.add(best)
            ious.append(best_iou)
            score_diffs.append(abs(float(es[i]) - float(gs[best])))
    return {
        'expected': int(len(ev)),
        'got': int(len(gv)),
        'matched': len(ious),
        'min_iou': float(min(ious)) if ious else None,
        'max_score_diff': float(max(score_diffs)) if score_diffs else None,
    }


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else float(np.allclose(a, b))
