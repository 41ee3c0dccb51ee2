"""Whole dense models out of PyTorch: the Semantic FPN to ONNX and Core ML, exported files evaluated by
tools/test.py through ONNX Runtime, INT8 quantization, whole-model benchmark rows, bounded export cost.

Models are RepViT-M0.9 Shapes configs with random weights and non-trivial BatchNorm statistics (so that
predictions vary from pixel to pixel and fusing changes weights), at the configs' own sizes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import CONFIGS, assert_one_line_error, coreml_program_spec, randomize_bn_, run_tool

import repvit_mm  # noqa: F401

CLS_CFG = CONFIGS / 'classification' / 'repvit-m0.9_shapes-64px.py'
SEG_CFG = CONFIGS / 'segmentation' / 'fpn_repvit-m0.9_shapes.py'
SEG_CLASSES = ['background', 'circle', 'square', 'triangle']
CLS_CLASSES = ['circle', 'square', 'triangle']


def _random_checkpoint(config: Path, path: Path, classes: list[str], seed: int = 0) -> Path:
    from repvit_mm.deploy import load_model

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = load_model(config).model
    randomize_bn_(model, seed=seed)
    torch.save({'state_dict': model.state_dict(), 'meta': {'dataset_meta': {'classes': classes}}}, path)
    return path


def _data_options(shapes_root: Path, task: str) -> list[str]:
    root = shapes_root / ('ade20k' if task == 'segmentation' else 'imagenet')
    return [f'{split}_dataloader.dataset.data_root={root}' for split in ('train', 'val', 'test')]


def _metrics(proc) -> dict[str, float]:
    return json.loads(re.search(r'^metrics: (.*)$', proc.stdout, re.M).group(1))


@pytest.fixture(scope='module')
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp('whole')


@pytest.fixture(scope='module')
def seg_ckpt(work) -> Path:
    return _random_checkpoint(SEG_CFG, work / 'seg.pth', SEG_CLASSES)


@pytest.fixture(scope='module')
def cls_ckpt(work) -> Path:
    return _random_checkpoint(CLS_CFG, work / 'cls.pth', CLS_CLASSES)


@pytest.fixture(scope='module')
def seg_onnx(work, seg_ckpt) -> dict[str, Path]:
    """The whole segmentor exported twice, at the config's size (no --shape): scores and label map."""
    files = {}
    for output in ('logits', 'labels'):
        files[output] = work / f'seg_{output}.onnx'
        proc = run_tool('export_onnx.py', SEG_CFG, seg_ckpt, files[output], '--output', output)
        expected = '[N, 4, 128, 128]' if output == 'logits' else '[N, 128, 128]'
        assert f'input: input [N, 3, 128, 128]; outputs: {output} {expected}' in proc.stdout
    return files


# ----------------------------------------------------------------------------------------- ONNX, segmentor
def test_whole_segmentor_onnx_matches_mmseg_inferencer(seg_onnx, seg_ckpt, shapes_root):
    """Label maps of ONNX Runtime (fed as the file's metadata says) against mmseg's own inferencer."""
    import mmcv
    import onnx
    from mmseg.apis import MMSegInferencer

    from repvit_mm.deploy import load_model
    from repvit_mm.deploy.export_onnx import ort_session

    props = {p.key: p.value for p in onnx.load(str(seg_onnx['labels'])).metadata_props}
    assert props['repvit_mm.task'] == 'segmentation' and props['repvit_mm.output'] == 'labels'
    assert json.loads(props['repvit_mm.classes']) == SEG_CLASSES
    mean, std = np.array(json.loads(props['repvit_mm.mean'])), np.array(json.loads(props['repvit_mm.std']))

    images = sorted((shapes_root / 'ade20k' / 'images' / 'validation').glob('*.jpg'))[:3]
    loaded = load_model(SEG_CFG, seg_ckpt)
    inferencer = type('Loaded', (MMSegInferencer,), {'_init_model': lambda self, cfg, w, d: loaded.model})(
        model=loaded.cfg, classes=SEG_CLASSES, palette=[(0, 0, 0)] * 4, device='cpu'
    )
    inferencer.show_progress = False
    expected = np.stack([inferencer(str(i), return_datasamples=True).pred_sem_seg.data[0].numpy() for i in images])
    assert expected.shape == (3, 128, 128) and len(np.unique(expected)) > 1  # a map worth comparing
    pixels = np.stack([mmcv.imread(str(i), channel_order=props['repvit_mm.channel_order'].lower()) for i in images])
    batch = ((pixels - mean) / std).transpose(0, 3, 1, 2).astype(np.float32)  # a batch of 3: dynamic axis
    labels = ort_session(seg_onnx['labels']).run(['labels'], {'input': batch})[0]
    assert (labels == expected).mean() >= 0.999
    logits = ort_session(seg_onnx['logits']).run(['logits'], {'input': batch})[0]
    assert logits.shape == (3, 4, 128, 128)
    assert (logits.argmax(1) == expected).mean() >= 0.999


@pytest.mark.slow
def test_test_tool_evaluates_onnx_segmentor_as_the_checkpoint(seg_onnx, seg_ckpt, shapes_root, work):
    options = ['--work-dir', work / 'test_seg', '--cfg-options', *_data_options(shapes_root, 'segmentation')]
    reference = _metrics(run_tool('test.py', SEG_CFG, seg_ckpt, *options))
    assert 0 < reference['mIoU'] < 100
    for output, path in seg_onnx.items():
        got = _metrics(run_tool('test.py', SEG_CFG, path, *options))
        assert set(got) == set(reference), output
        assert got['mIoU'] == pytest.approx(reference['mIoU'], abs=0.1), output
        assert got['aAcc'] == pytest.approx(reference['aAcc'], abs=0.1), output


def test_test_tool_evaluates_onnx_classifier_and_refuses_another_size(cls_ckpt, shapes_root, work):
    options = ['--work-dir', work / 'test_cls', '--cfg-options', *_data_options(shapes_root, 'classification')]
    onnx_file = work / 'cls.onnx'
    proc = run_tool('export_onnx.py', CLS_CFG, cls_ckpt, onnx_file)  # default: the config's 64 px test crop
    assert 'input: input [N, 3, 64, 64]' in proc.stdout
    reference = _metrics(run_tool('test.py', CLS_CFG, cls_ckpt, *options))
    got = _metrics(run_tool('test.py', CLS_CFG, onnx_file, *options))
    assert got == pytest.approx(reference, abs=1e-6) and 'accuracy/top1' in got

    small = work / 'cls_48.onnx'
    run_tool('export_onnx.py', CLS_CFG, cls_ckpt, small, '--shape', '48')
    proc = run_tool('test.py', CLS_CFG, small, *options, check=False)
    assert_one_line_error(proc, str(small), 'takes 48x48 images', 'gives 64x64', '--shape 64 64')
    proc = run_tool('test.py', CLS_CFG, small, '--deploy', check=False)
    assert_one_line_error(proc, '--deploy', '.onnx')


# ----------------------------------------------------------------------------------------- INT8
def _qdq(path: Path) -> tuple[int, int]:
    """(number of DequantizeLinear nodes, number of them with per-channel (vector) scales)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    deq = [n for n in graph.node if n.op_type == 'DequantizeLinear']
    return len(deq), sum(1 for n in deq if inits.get(n.input[1], np.zeros(())).size > 1)


@pytest.mark.slow
@pytest.mark.parametrize('task', ['classification', 'segmentation'])
def test_int8_export_is_quantized_calibrated_and_evaluated(task, cls_ckpt, seg_ckpt, shapes_root, work):
    config, ckpt = (CLS_CFG, cls_ckpt) if task == 'classification' else (SEG_CFG, seg_ckpt)
    data = ['--cfg-options', *_data_options(shapes_root, task)]  # calibration reads the training set
    out = work / f'{task}_int8.onnx'
    proc = run_tool('export_onnx.py', config, ckpt, out, '--int8', '--calibration-images', '6', *data)
    unit = 'top-1 classes' if task == 'classification' else 'pixels'
    found = re.search(
        rf'int8: calibrated on 6 training images; int8 vs float agree on ([\d.]+)% of their {unit}', proc.stdout
    )
    assert found, proc.stdout
    n_deq, per_channel = _qdq(out)
    assert n_deq > 50 and per_channel > 20  # activations and weights quantized, weights per output channel
    import onnx

    graph = onnx.load(str(out)).graph
    writer = {o: n for n in graph.node for o in n.output}[graph.output[0].name]
    # the output stays float (8-bit class scores tie and lose mIoU), GELU is one fused node per activation
    assert writer.op_type in ('Gemm', 'Resize'), writer.op_type
    assert sum(n.op_type == 'Gelu' for n in graph.node) > 20 and not any(n.op_type == 'Erf' for n in graph.node)
    fp32 = work / f'{task}_fp32.onnx'
    run_tool('export_onnx.py', config, ckpt, fp32)
    assert out.stat().st_size < 0.5 * fp32.stat().st_size  # int8 weights
    metrics = _metrics(run_tool('test.py', config, out, '--work-dir', work / f'test_{task}_int8', *data))
    key = 'accuracy/top1' if task == 'classification' else 'mIoU'
    assert 0 <= metrics[key] <= 100


def test_quantize_qdq_fuses_gelu_and_keeps_the_output_writer_in_float(tmp_path):
    """The settings chosen on the Shapes segmentor (repvit_mm.deploy.quantize's docstring), on a small
    conv -> GELU -> conv -> resize graph as the TorchScript exporter writes it (GELU as Erf arithmetic)."""
    import onnx

    from repvit_mm.deploy.export_onnx import export_tensor_model, ort_session
    from repvit_mm.deploy.quantize import quantize_qdq

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.GELU(),
        torch.nn.Conv2d(8, 4, 1),
        torch.nn.Upsample(scale_factor=2, mode='bilinear'),
    ).eval()
    fp32, int8 = tmp_path / 'fp32.onnx', tmp_path / 'int8.onnx'
    assert export_tensor_model(net, fp32, (16, 16)) == ['logits']  # as tools/export_onnx.py writes graphs
    assert any(n.op_type == 'Erf' for n in onnx.load(str(fp32)).graph.node)
    batches = [np.random.default_rng(i).standard_normal((1, 3, 16, 16), dtype=np.float32) for i in range(4)]
    quantize_qdq(fp32, int8, batches)
    graph = onnx.load(str(int8)).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count('Gelu') == 1 and 'Erf' not in ops  # one fused node, run in float between Q/DQ
    assert ops.count('Conv') == 2 and ops.count('DequantizeLinear') >= 4  # both convs get integer inputs
    writer = {o: n for n in graph.node for o in n.output}['logits']
    assert writer.op_type == 'Resize' and not any(
        o.startswith('logits') for n in graph.node if n.op_type == 'QuantizeLinear' for o in n.input
    )
    a, b = (ort_session(f, 1).run(['logits'], {'input': batches[0]})[0] for f in (fp32, int8))
    assert np.abs(a - b).max() < 0.05 * np.abs(a).max()  # 8-bit close, not bit-equal
    assert len(np.unique(b)) > 256  # the resized scores are float, not 256 levels


def test_int8_and_output_options_refused_where_they_do_not_apply(cls_ckpt, seg_ckpt, work):
    out = work / 'refused.onnx'
    for args, fragments in (
        ((SEG_CFG, seg_ckpt, out, '--backbone-only', '--int8'), ('--int8', '--backbone-only')),
        ((CLS_CFG, cls_ckpt, out, '--output', 'labels'), ('--output labels', 'segmentor')),
        ((CLS_CFG, cls_ckpt, out, '--calibration-images', '4'), ('--calibration-images', 'need --int8')),
        ((CLS_CFG, cls_ckpt, out, '--int8', '--calibration-images', '0'), ('--calibration-images', '0')),
    ):
        assert_one_line_error(run_tool('export_onnx.py', *args, check=False), *fragments)
        assert not out.exists() and not list(work.glob('.refused.onnx.*'))


# ----------------------------------------------------------------------------------------- cost bound
@pytest.mark.parametrize(
    'tool', [('export_onnx.py', 'big.onnx'), ('export_coreml.py', 'big.mlpackage'), ('benchmark.py', None)]
)
def test_huge_shape_refused_in_one_line_before_anything_is_written(tool, seg_ckpt, work):
    script, name = tool
    args = (SEG_CFG, seg_ckpt, work / name) if name else (SEG_CFG, seg_ckpt)
    proc = run_tool(script, *args, '--shape', '20000', '20000', check=False, timeout=300)
    assert_one_line_error(proc, '20000x20000', 'GiB', 'available', '--shape')
    assert not list(work.glob('*big*')) and not list(work.glob('.big*'))


# ----------------------------------------------------------------------------------------- Core ML
def test_coreml_whole_segmentor_spec(seg_ckpt, work):
    import coremltools as ct

    out = work / 'seg.mlpackage'
    proc = run_tool('export_coreml.py', SEG_CFG, seg_ckpt, out, '--precision', 'float32')
    assert 'input: image 128x128; outputs: labels [1, 128, 128]' in proc.stdout
    spec = coreml_program_spec(out, 128, 128)
    (labels,) = spec.description.output
    assert labels.name == 'labels' and list(labels.type.multiArrayType.shape) == [1, 128, 128]
    assert labels.type.multiArrayType.dataType == ct.proto.FeatureTypes_pb2.ArrayFeatureType.INT32
    assert json.loads(spec.description.metadata.userDefined['repvit_mm.classes']) == SEG_CLASSES
    main = spec.mlProgram.functions['main']
    ops = [op.type for op in main.block_specializations[main.opset].operations]
    # the resize to the input size (a constant size), then the argmax over classes
    assert ops[-1] == 'reduce_argmax' and 'upsample_bilinear' in ops[-5:]


def test_coreml_whole_segmentor_predicts_as_pytorch(seg_ckpt, work):
    from repvit_mm.deploy.export_coreml import can_predict

    ok, why = can_predict()
    if not ok:
        pytest.skip(why)
    from repvit_mm.deploy import export_coreml

    info = export_coreml(SEG_CFG, seg_ckpt, work / 'seg_fp32.mlpackage', precision='float32')
    assert info['label_agreement'] >= 0.999


# ----------------------------------------------------------------------------------------- benchmark
@pytest.mark.slow
def test_benchmark_times_the_whole_segmentor(seg_ckpt, work):
    out = work / 'bench_seg.json'
    paths = ('fused', 'onnxruntime', 'onnxruntime_int8', 'timm_fused')
    common = ('--shape', '64', '--batch-sizes', '1', '--repeats', '2', '--warmup', '1', '--paths', *paths)
    run_tool('benchmark.py', SEG_CFG, seg_ckpt, *common, '--json', out)
    whole = json.loads(out.read_text())
    run_tool('benchmark.py', SEG_CFG, seg_ckpt, *common, '--backbone-only', '--json', work / 'bench_bb.json')
    backbone = json.loads((work / 'bench_bb.json').read_text())
    assert whole['model']['task'] == 'segmentation' and backbone['model']['task'] == 'backbone'
    assert whole['model']['macs'] > 1.5 * backbone['model']['macs']  # neck and head at stride 4
    rows = {r['path']: r for r in whole['rows']}
    assert rows['timm_fused']['status'] == 'skipped' and 'segmentor' in rows['timm_fused']['note']
    for path in paths[:3]:
        assert rows[path]['status'] == 'ok', rows[path]
        assert rows[path]['median_ms'] > 0
    assert 'INT8' in rows['onnxruntime_int8']['note']
    assert {r['path'] for r in backbone['rows'] if r['status'] == 'ok'} == set(paths)


@pytest.mark.slow
def test_benchmark_times_the_whole_detector(work):
    """A Mask R-CNN config is timed whole (as exported), one image per run; other batch sizes and timm's
    rows say why they are skipped."""
    out = work / 'bench_det.json'
    config = CONFIGS / 'detection' / 'mask-rcnn_repvit-m0.9_fpn_shapes.py'
    paths = ('fused', 'onnxruntime', 'timm_fused')
    run_tool('benchmark.py', config, '--shape', '64', '--batch-sizes', '1', '2', '--repeats', '1', '--warmup', '1',
             '--paths', *paths, '--json', out)  # fmt: skip
    result = json.loads(out.read_text())
    assert result['model']['task'] == 'detection'
    rows = {(r['path'], r['batch_size']): r for r in result['rows']}
    for path in paths[:2]:
        assert rows[path, 1]['status'] == 'ok' and rows[path, 1]['median_ms'] > 0, rows[path, 1]
        assert rows[path, 2]['status'] == 'skipped' and 'batch 1 only' in rows[path, 2]['note']
    assert rows['timm_fused', 1]['status'] == 'skipped' and 'detector' in rows['timm_fused', 1]['note']
    proc = run_tool('benchmark.py', config, '--shape', '100', '--paths', 'fused', check=False)
    assert_one_line_error(proc, '--shape 100 100', 'multiples of 32')
