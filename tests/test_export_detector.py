"""The whole Mask R-CNN to ONNX (standard ops only) and evaluated by tools/test.py through ONNX Runtime.

The model is the RepViT-M0.9 Shapes detector with random weights and non-trivial BatchNorm statistics: its
softmax scores are near-uniform (about 1/4 > the config's 0.05 threshold), so every image gives the config's
20 detections, all compared.
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import CONFIGS, assert_one_line_error, coreml_program_spec, randomize_bn_, run_tool

import repvit_mm  # noqa: F401

DET_CFG = CONFIGS / 'detection' / 'mask-rcnn_repvit-m0.9_fpn_shapes.py'
DET_CLASSES = ['circle', 'square', 'triangle']


@pytest.fixture(scope='module')
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp('detector')


@pytest.fixture(scope='module')
def det_ckpt(work) -> Path:
    from repvit_mm.deploy import load_model

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = load_model(DET_CFG).model  # no checkpoint: the backbone's init_cfg is not read
    randomize_bn_(model, seed=0)
    path = work / 'det.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {'dataset_meta': {'classes': DET_CLASSES}}}, path)
    return path


@pytest.fixture(scope='module')
def det_onnx(work, det_ckpt) -> Path:
    out = work / 'det.onnx'
    proc = run_tool('export_onnx.py', DET_CFG, det_ckpt, out)  # default size: the test scale, 128
    assert 'input: input [1, 3, 128, 128]; outputs: boxes [20, 4], scores [20], labels [20], masks [20, 28, 28]' in (
        proc.stdout
    )
    assert re.search(r'onnxruntime vs pytorch: 20 of 20 detections matched', proc.stdout), proc.stdout
    return out


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of boxes ``a (n, 4)`` and ``b (m, 4)``."""
    lt, rb = np.maximum(a[:, None, :2], b[None, :, :2]), np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda x: (x[:, 2:] - x[:, :2]).prod(-1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None] - inter)


def _match(ref_boxes, ref_labels, boxes, labels) -> list[tuple[int, int, float]]:
    """Greedy matching by IoU among detections of the same label: ``(ref index, index, IoU)``."""
    iou = _iou(ref_boxes, boxes) * (ref_labels[:, None] == labels[None])
    pairs, used = [], set()
    for i in range(len(ref_boxes)):
        order = [j for j in np.argsort(-iou[i]) if j not in used]
        if order and iou[i, order[0]] > 0:
            used.add(order[0])
            pairs.append((i, int(order[0]), float(iou[i, order[0]])))
    return pairs


def _mask(mask) -> np.ndarray:
    """A dumped mask as a boolean array (mmdet dumps RLE dicts or tensors, depending on the metric)."""
    if isinstance(mask, dict):
        from pycocotools import mask as mask_utils

        return mask_utils.decode(mask).astype(bool)
    return np.asarray(mask).astype(bool)


def test_whole_detector_onnx_has_standard_ops_and_matches_mmdet_inferencer(det_onnx, det_ckpt, shapes_root):
    """Boxes, labels and scores of ONNX Runtime (fed as the file's metadata says) against mmdet's own
    DetInferencer on Shapes validation images (128x128: the exported size, nothing rescaled)."""
    import mmcv
    import onnx
    from mmdet.apis import DetInferencer

    from repvit_mm.deploy import load_model
    from repvit_mm.deploy.export_onnx import ort_session

    proto = onnx.load(str(det_onnx))
    ops, domains = set(), set()
    nodes = list(proto.graph.node)
    while nodes:  # the NMS sits in If branches (torchvision's empty-input guard)
        node = nodes.pop()
        ops.add(node.op_type)
        domains.add(node.domain)
        nodes.extend(n for a in node.attribute if a.g is not None for n in a.g.node)
    assert domains == {''} and {o.domain for o in proto.opset_import} == {''}  # no custom (mmcv::) ops
    assert {'RoiAlign', 'NonMaxSuppression', 'TopK'} <= ops
    props = {p.key: p.value for p in proto.metadata_props}
    assert props['repvit_mm.task'] == 'detection' and json.loads(props['repvit_mm.classes']) == DET_CLASSES
    mean, std = np.array(json.loads(props['repvit_mm.mean'])), np.array(json.loads(props['repvit_mm.std']))

    loaded = load_model(DET_CFG, det_ckpt)
    inferencer = type('Loaded', (DetInferencer,), {'_init_model': lambda self, cfg, w, d: loaded.model})(
        model=loaded.cfg, device='cpu', show_progress=False
    )
    session = ort_session(det_onnx)
    images = sorted((shapes_root / 'coco' / 'val2017').glob('*.jpg'))[:3]
    for image in images:
        ref = inferencer(str(image), return_datasamples=True)['predictions'][0].pred_instances
        ref_boxes, ref_labels, ref_scores = (ref.bboxes.numpy(), ref.labels.numpy(), ref.scores.numpy())
        assert len(ref_boxes) == 20  # the config's test_cfg.rcnn.max_per_img, all above score_thr
        pixels = mmcv.imread(str(image), channel_order=props['repvit_mm.channel_order'].lower())
        assert pixels.shape[:2] == (128, 128)
        x = ((pixels - mean) / std).transpose(2, 0, 1)[None].astype(np.float32)
        boxes, scores, labels, masks = session.run(['boxes', 'scores', 'labels', 'masks'], {'input': x})
        assert masks.shape == (20, 28, 28) and ((masks >= 0) & (masks <= 1)).all()
        pairs = _match(ref_boxes, ref_labels, boxes, labels)
        assert len(pairs) == 20, image
        assert min(iou for _, _, iou in pairs) >= 0.99, image
        assert max(abs(ref_scores[i] - scores[j]) for i, j, _ in pairs) < 1e-3, image


def test_export_pads_to_max_detections_above_a_score_threshold(det_ckpt, work):
    """A score threshold above every random score: all 20 slots padded (score 0, label -1), nothing refused."""
    from repvit_mm.deploy.export_onnx import ort_session

    out = work / 'det_thr.onnx'
    proc = run_tool('export_onnx.py', DET_CFG, det_ckpt, out, '--cfg-options', 'model.test_cfg.rcnn.score_thr=0.9')
    assert 'onnxruntime vs pytorch: 0 of 0 detections matched' in proc.stdout
    x = np.random.default_rng(0).standard_normal((1, 3, 128, 128)).astype(np.float32)
    boxes, scores, labels, masks = ort_session(out).run(None, {'input': x})
    assert (scores == 0).all() and (labels == -1).all() and (boxes == 0).all() and (masks == 0).all()


@pytest.mark.slow
def test_test_tool_evaluates_onnx_detector_as_the_checkpoint(det_onnx, det_ckpt, shapes_root, work):
    """tools/test.py on the .onnx file: the same COCO metrics keys, and per image the same detections as
    the checkpoint (boxes IoU >= 0.99, same labels; pasted masks IoU >= 0.95)."""
    root = shapes_root / 'coco'
    options = [
        '--cfg-options',
        f'test_dataloader.dataset.data_root={root}/',
        f'test_evaluator.ann_file={root}/annotations/instances_val2017.json',
    ]
    results = {}
    for name, model in (('pth', det_ckpt), ('onnx', det_onnx)):
        out = work / f'pred_{name}.pkl'
        proc = run_tool('test.py', DET_CFG, model, '--work-dir', work / f'test_{name}', '--out', out, *options)
        metrics = json.loads(re.search(r'^metrics: (.*)$', proc.stdout, re.M).group(1))
        results[name] = (metrics, pickle.loads(out.read_bytes()))
    (ref_metrics, ref), (metrics, got) = results['pth'], results['onnx']
    assert set(metrics) == set(ref_metrics) and 'coco/bbox_mAP' in metrics and 'coco/segm_mAP' in metrics
    assert metrics == pytest.approx(ref_metrics, abs=0.01)
    assert len(ref) == len(got) > 0
    mask_ious = []
    for r, g in zip(ref, got, strict=True):
        assert r['img_id'] == g['img_id']
        r, g = r['pred_instances'], g['pred_instances']
        pairs = _match(r['bboxes'].numpy(), r['labels'].numpy(), g['bboxes'].numpy(), g['labels'].numpy())
        assert len(pairs) == len(r['bboxes']) == len(g['bboxes'])
        assert min(iou for _, _, iou in pairs) >= 0.99
        for i, j, _ in pairs:
            a, b = _mask(r['masks'][i]), _mask(g['masks'][j])
            assert a.shape == b.shape == (128, 128)  # pasted at the image's size
            if a.any() or b.any():
                mask_ious.append((a & b).sum() / (a | b).sum())
    print(f'mask IoU: mean {np.mean(mask_ious):.4f}, min {np.min(mask_ious):.4f} over {len(mask_ious)} masks')
    assert mask_ious and np.mean(mask_ious) >= 0.95 and np.min(mask_ious) >= 0.8


def test_detector_export_refuses_bad_int8_options_and_sizes_off_stride(det_ckpt, work):
    out = work / 'refused.onnx'
    for args, fragments in (
        (('--int8-scope', 'all'), ('--int8-scope', 'need --int8')),
        (('--int8', '--int8-scope', 'heads'), ('--int8-scope', 'heads')),
        (('--int8', '--int8-exclude', '/nope'), ('--int8-exclude', '/nope')),
        # the config's own data_root (data/shapes/coco/) is not there: nothing to calibrate on
        (('--int8',), (str(DET_CFG), 'training set')),
        (('--shape', '100', '100'), ('--shape 100 100', 'multiples of 32')),
    ):
        proc = run_tool('export_onnx.py', DET_CFG, det_ckpt, out, *args, check=False)
        assert_one_line_error(proc, *fragments)
        assert not out.exists()


def test_test_tool_refuses_images_larger_than_the_exported_detector(det_ckpt, shapes_root, work):
    small = work / 'det_64.onnx'
    proc = run_tool('export_onnx.py', DET_CFG, det_ckpt, small, '--shape', '64', '64')
    assert 'input: input [1, 3, 64, 64]' in proc.stdout
    root = shapes_root / 'coco'
    proc = run_tool(
        'test.py',
        DET_CFG,
        small,
        '--work-dir',
        work / 'test_small',
        '--cfg-options',
        f'test_dataloader.dataset.data_root={root}/',
        f'test_evaluator.ann_file={root}/annotations/instances_val2017.json',
        check=False,
    )
    assert_one_line_error(proc, str(small), 'up to 64x64', 'gives 128x128', 'larger --shape')


# ----------------------------------------------------------------------------------------- INT8
def _int8_weight_layers(path: Path) -> list[str]:
    """Names of the layers (Conv, Gemm, ...) whose weights come out of a DequantizeLinear."""
    import onnx

    graph = onnx.load(str(path)).graph
    dequantized = {o for n in graph.node if n.op_type == 'DequantizeLinear' for o in n.output}
    layers = ('Conv', 'ConvTranspose', 'Gemm', 'MatMul')
    return [n.name for n in graph.node if n.op_type in layers and len(n.input) > 1 and n.input[1] in dequantized]


INT8_SCOPES = {  # --int8-scope -> the modules whose layers get int8 weights
    'all-but-rpn': {'backbone', 'neck', 'bbox_head', 'mask_head'},  # the default
    'features': {'backbone', 'neck'},
    'all': {'backbone', 'neck', 'rpn_head', 'bbox_head', 'mask_head'},
}


@pytest.mark.parametrize('scope', list(INT8_SCOPES))
def test_int8_detector_quantizes_its_scope_and_keeps_the_rest_float(scope, det_ckpt, shapes_root, work):
    """``--int8``: the layers of the scope get int8 weights (QDQ, per channel), the others stay float
    (by default the RPN head); RoIAlign and NMS stay; the file runs like the float one."""
    import onnx

    from repvit_mm.deploy.export_onnx import ort_session

    out = work / f'det_int8_{scope}.onnx'
    args = ['--int8', '--calibration-images', '4'] + (['--int8-scope', scope] if scope != 'all-but-rpn' else [])
    data = f'train_dataloader.dataset.data_root={shapes_root / "coco"}/'
    proc = run_tool('export_onnx.py', DET_CFG, det_ckpt, out, *args, '--cfg-options', data)
    found = re.search(
        rf'int8 \({scope}: (\d+) layers with int8 weights\): calibrated on 4 training images; (\d+) of the float '
        r"model's (\d+) detections on them matched by int8 ones \(same label, IoU >= 0.5; int8 gave (\d+)\)",
        proc.stdout,
    )
    assert found, proc.stdout
    layers = _int8_weight_layers(out)
    assert len(layers) == int(found.group(1))
    assert int(found.group(3)) == 4 * 20  # random weights: every image gives max_per_img detections
    assert {name.split('/')[1] for name in layers} == INT8_SCOPES[scope]
    assert sum(name.startswith('/neck/') for name in layers) == 8  # 4 lateral + 4 FPN convolutions
    proto = onnx.load(str(out))
    ops = {n.op_type for n in proto.graph.node}
    assert {'RoiAlign', 'TopK', 'QuantizeLinear', 'DequantizeLinear'} <= ops
    props = {p.key: p.value for p in proto.metadata_props}
    assert props['repvit_mm.task'] == 'detection' and json.loads(props['repvit_mm.classes']) == DET_CLASSES
    assert 'backbone, neck' in props['repvit_mm.int8']
    image = np.random.default_rng(0).standard_normal((1, 3, 128, 128)).astype(np.float32)
    boxes, scores, labels, masks = ort_session(out).run(None, {'input': image})
    assert boxes.shape == (20, 4) and masks.shape == (20, 28, 28) and labels.dtype == np.int64


@pytest.mark.slow
def test_test_tool_evaluates_the_int8_detector(det_ckpt, shapes_root, work):
    """tools/test.py on the INT8 file: the checkpoint's COCO metric keys, every image evaluated."""
    root = shapes_root / 'coco'
    out = work / 'det_int8_eval.onnx'
    data = [
        '--cfg-options',
        f'train_dataloader.dataset.data_root={root}/',
        f'test_dataloader.dataset.data_root={root}/',
        f'test_evaluator.ann_file={root}/annotations/instances_val2017.json',
    ]
    run_tool('export_onnx.py', DET_CFG, det_ckpt, out, '--int8', '--calibration-images', '4', *data)
    pred = work / 'pred_int8.pkl'
    proc = run_tool('test.py', DET_CFG, out, '--work-dir', work / 'test_int8', '--out', pred, *data)
    metrics = json.loads(re.search(r'^metrics: (.*)$', proc.stdout, re.M).group(1))
    assert {'coco/bbox_mAP', 'coco/segm_mAP'} <= set(metrics)
    assert all(-1 <= v <= 1 for v in metrics.values())
    results = pickle.loads(pred.read_bytes())
    val = json.loads((root / 'annotations' / 'instances_val2017.json').read_text())
    assert len(results) == len(val['images'])


# ----------------------------------------------------------------------------------------- Core ML
DENSE_OUTPUTS = [f'{kind}_p{level}' for kind in ('fpn', 'rpn_cls', 'rpn_reg') for level in range(2, 7)]


def test_coreml_detector_exports_fpn_and_rpn_outputs(det_ckpt, work):
    """The detector's Core ML file: image input 128x128 (normalisation inside), outputs the FPN maps and the
    RPN head's objectness and box deltas per level, named and shaped as mmdet's forward gives them."""
    out = work / 'det.mlpackage'
    proc = run_tool('export_coreml.py', DET_CFG, det_ckpt, out, '--precision', 'float32')
    assert 'input: image 128x128; outputs: fpn_p2 [1, 128, 32, 32],' in proc.stdout
    assert 'rpn_cls_p2 [1, 3, 32, 32]' in proc.stdout and 'rpn_reg_p6 [1, 12, 2, 2]' in proc.stdout
    spec = coreml_program_spec(out, 128, 128)
    outputs = {o.name: list(o.type.multiArrayType.shape) for o in spec.description.output}
    assert list(outputs) == DENSE_OUTPUTS
    for level in range(2, 7):
        side = 128 >> level
        assert outputs[f'fpn_p{level}'] == [1, 128, side, side]
        assert outputs[f'rpn_cls_p{level}'] == [1, 3, side, side]  # 3 anchors (ratios), sigmoid objectness
        assert outputs[f'rpn_reg_p{level}'] == [1, 12, side, side]
    assert json.loads(spec.description.metadata.userDefined['repvit_mm.classes']) == DET_CLASSES


def test_coreml_detector_traced_module_matches_mmdet_forward(det_ckpt, shapes_root):
    """What export_coreml converts (the fused DetectorDense with 1/std folded into the stem, traced, fed
    pixels minus the mean) against mmdet's own backbone -> neck -> rpn_head of the unfused checkpoint."""
    import mmcv

    from repvit_mm.deploy import load_model
    from repvit_mm.deploy.detector_onnx import DetectorDense
    from repvit_mm.deploy.export_coreml import fold_input_std
    from repvit_mm.deploy.model import normalization

    fused = load_model(DET_CFG, det_ckpt, fuse=True)
    mean, std, rgb = normalization(fused.cfg)
    module = fold_input_std(DetectorDense(fused.model), std, (128, 128))
    image = sorted((shapes_root / 'coco' / 'val2017').glob('*.jpg'))[0]
    pixels = torch.from_numpy(mmcv.imread(str(image), channel_order='rgb' if rgb else 'bgr').copy())
    pixels = pixels.permute(2, 0, 1)[None].float()
    centred = pixels - torch.tensor(mean).view(1, 3, 1, 1)
    with torch.no_grad():
        got = torch.jit.trace(module, centred)(centred)
        model = load_model(DET_CFG, det_ckpt).model
        feats = model.neck(model.backbone(centred / torch.tensor(std).view(1, 3, 1, 1)))
        cls_scores, bbox_preds = model.rpn_head(feats)
    expected = (*feats, *cls_scores, *bbox_preds)
    assert len(got) == len(expected) == len(DENSE_OUTPUTS)
    for name, g, e in zip(DENSE_OUTPUTS, got, expected, strict=True):
        assert g.shape == e.shape, name
        assert torch.allclose(g, e, atol=1e-3 * max(1.0, float(e.abs().max()))), name


def test_coreml_detector_predicts_as_pytorch(det_ckpt, work):
    from repvit_mm.deploy.export_coreml import can_predict

    ok, why = can_predict()
    if not ok:
        pytest.skip(why)
    from repvit_mm.deploy import export_coreml

    info = export_coreml(DET_CFG, det_ckpt, work / 'det_fp32.mlpackage', precision='float32')
    assert info['max_abs_diff'] < 1e-2


def test_coreml_detector_refuses_a_size_off_stride(det_ckpt, work):
    out = work / 'det_100.mlpackage'
    proc = run_tool('export_coreml.py', DET_CFG, det_ckpt, out, '--shape', '100', '100', check=False)
    assert_one_line_error(proc, '--shape 100 100', 'multiples of 32')
    assert not out.exists()
