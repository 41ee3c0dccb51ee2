"""Deployment and measurement tools: fuse, ONNX and Core ML export, benchmark, FLOPs, demo pictures.

Everything runs RepViT-M0.9 at 64-128 px on randomly initialised weights (with non-trivial BatchNorm
statistics, so that folding them is really exercised); no timing is asserted.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import CONFIGS, ROOT, assert_one_line_error, coreml_program_spec, randomize_bn_, run_tool

import repvit_mm  # noqa: F401  (registration, safe checkpoint loading)
import repvit_mm.deploy  # noqa: F401

CLS_CFG = CONFIGS / 'classification' / 'repvit-m0.9_shapes-64px.py'
DET_CFG = CONFIGS / 'detection' / 'mask-rcnn_repvit-m0.9_fpn_shapes.py'
SEG_CFG = CONFIGS / 'segmentation' / 'fpn_repvit-m0.9_shapes.py'
IN1K_CFG = CONFIGS / 'classification' / 'repvit-m0.9_8xb256-distill-300e_in1k.py'
CLASSES = ['circle', 'square', 'triangle']


# ----------------------------------------------------------------------------------------- helpers
# Its module- and session-scoped fixtures (trained models, written files) are made once: the module runs on one
# pytest-xdist worker (`make test` distributes with --dist loadgroup).
pytestmark = pytest.mark.xdist_group('deploy')


def _assert_same(got: torch.Tensor, expected: torch.Tensor, rel: float = 1e-5) -> None:
    """Equal up to float32 rounding: the largest difference within ``rel`` of the largest value."""
    assert got.shape == expected.shape
    scale = max(1.0, float(expected.abs().max()))
    diff = float((got - expected).abs().max())
    assert diff <= rel * scale, f'max abs diff {diff:.3g} for values up to {scale:.3g}'


def _save_random_checkpoint(config: Path, path: Path, meta: dict | None = None) -> Path:
    from repvit_mm.deploy import load_model

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = load_model(config).model
    randomize_bn_(model)
    torch.save({'state_dict': model.state_dict(), 'meta': meta or {}}, path)
    return path


def _deploy_model(config: Path, fused_ckpt: Path, task: str) -> torch.nn.Module:
    """The config built with the documented deploy flags, the fused checkpoint loaded strictly."""
    from repvit_mm.apis import load_config
    from repvit_mm.deploy.model import build_model

    options = {'model.backbone.deploy': True}
    if task == 'classification':
        options['model.head.deploy'] = True
    model = build_model(load_config(str(config), options))
    state = torch.load(fused_ckpt, map_location='cpu', weights_only=True)['state_dict']
    model.load_state_dict(state, strict=True)
    return model.eval()


def _image(path: Path, size: tuple[int, int]) -> Path:
    from PIL import Image, ImageDraw

    image = Image.new('RGB', size, (110, 110, 110))
    draw = ImageDraw.Draw(image)
    draw.ellipse((8, 8, size[0] // 2, size[1] // 2), fill=(220, 20, 60))
    draw.rectangle((size[0] // 2 + 4, size[1] // 2 + 4, size[0] - 8, size[1] - 8), fill=(30, 144, 255))
    image.save(path)
    return path


@pytest.fixture(scope='module')
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp('deploy')


@pytest.fixture(scope='module')
def cls_ckpt(work) -> Path:
    return _save_random_checkpoint(CLS_CFG, work / 'cls.pth', {'dataset_meta': {'classes': CLASSES}})


@pytest.fixture(scope='module')
def cls_fused(work, cls_ckpt) -> tuple[Path, subprocess.CompletedProcess]:
    out = work / 'cls_fused.pth'
    return out, run_tool('fuse.py', CLS_CFG, cls_ckpt, out)


@pytest.fixture(scope='module')
def det_ckpt(work) -> Path:
    return _save_random_checkpoint(DET_CFG, work / 'det.pth')


@pytest.fixture(scope='module')
def seg_ckpt(work) -> Path:
    return _save_random_checkpoint(SEG_CFG, work / 'seg.pth')


# ----------------------------------------------------------------------------------------- fuse
def test_package_import_is_light():
    code = (
        'import sys, repvit_mm.deploy; '
        'print(sorted(m for m in ("coremltools", "onnxruntime", "onnx", "timm") if m in sys.modules))'
    )
    proc = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == '[]'


def test_fuse_classifier_equals_unfused_and_loads_into_deploy_config(cls_ckpt, cls_fused):
    from repvit_mm.deploy import load_model

    fused_path, proc = cls_fused
    assert 'model.backbone.deploy=True model.head.deploy=True' in proc.stdout
    ckpt = torch.load(fused_path, map_location='cpu', weights_only=True)
    assert ckpt['meta']['deploy'] is True
    assert ckpt['meta']['dataset_meta']['classes'] == CLASSES
    assert not any('.bn.' in k or 'running_var' in k for k in ckpt['state_dict'])  # every BN folded

    unfused = load_model(CLS_CFG, cls_ckpt).model
    deployed = _deploy_model(CLS_CFG, fused_path, 'classification')
    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = unfused(x, mode='tensor'), deployed(x, mode='tensor')
    assert expected.abs().max() > 0.05  # a meaningful comparison, not two zero tensors
    _assert_same(got, expected)
    # the deploy tools also take the fused checkpoint with the training config
    again = load_model(CLS_CFG, fused_path)
    assert again.fused
    with torch.no_grad():
        _assert_same(again.model(x, mode='tensor'), expected)


def test_fuse_detector_equals_unfused(work, det_ckpt):
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    from repvit_mm.deploy import fuse_checkpoint, load_model

    out = work / 'det_fused.pth'
    info = fuse_checkpoint(DET_CFG, det_ckpt, out)
    assert info['cfg_options'] == {'model.backbone.deploy': True}
    assert info['params_after'] < info['params_before']
    unfused = load_model(DET_CFG, det_ckpt).model
    deployed = _deploy_model(DET_CFG, out, 'detection')

    x = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(2))
    meta = dict(
        img_shape=(128, 128),
        ori_shape=(128, 128),
        pad_shape=(128, 128),
        batch_input_shape=(128, 128),
        scale_factor=(1.0, 1.0),
    )
    samples = [DetDataSample(metainfo=meta) for _ in range(2)]
    # fixed proposals: the RoI heads' raw outputs are compared without NMS choosing between near-ties
    proposals = [
        InstanceData(bboxes=torch.tensor([[8.0, 8.0, 60.0, 60.0], [60.0, 60.0, 120.0, 120.0]])) for _ in range(2)
    ]
    outputs = []
    with torch.no_grad():
        for model in (unfused, deployed):
            feats = model.extract_feat(x)
            rpn = model.rpn_head(feats)
            roi = model.roi_head.forward(feats, proposals, samples)
            outputs.append([*feats, *rpn[0], *rpn[1], *roi])
    assert len(outputs[0]) == len(outputs[1]) > 10
    for expected, got in zip(*outputs, strict=True):
        _assert_same(got, expected)


def test_fuse_segmentor_equals_unfused(work, seg_ckpt):
    from repvit_mm.deploy import fuse_checkpoint, load_model

    out = work / 'seg_fused.pth'
    fuse_checkpoint(SEG_CFG, seg_ckpt, out)
    unfused = load_model(SEG_CFG, seg_ckpt).model
    deployed = _deploy_model(SEG_CFG, out, 'segmentation')
    x = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected, got = unfused(x, mode='tensor'), deployed(x, mode='tensor')
    assert expected.shape[:2] == (2, 4)
    _assert_same(got, expected)


# ----------------------------------------------------------------------------------------- ONNX
@pytest.mark.slow
def test_export_onnx_classifier_matches_pytorch_with_dynamic_batch(work, cls_ckpt):
    import onnx
    import onnxruntime as ort

    from repvit_mm.deploy import load_model

    out = work / 'cls.onnx'
    proc = run_tool('export_onnx.py', CLS_CFG, cls_ckpt, out, '--shape', '64', '64')
    reported = float(re.search(r'max abs diff: (\S+)', proc.stdout).group(1))
    assert reported < 1e-4

    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(props['repvit_mm.classes']) == CLASSES
    assert json.loads(props['repvit_mm.mean']) == [123.675, 116.28, 103.53]
    session = ort.InferenceSession(str(out), providers=['CPUExecutionProvider'])
    model = load_model(CLS_CFG, cls_ckpt).model  # the unfused PyTorch model
    for batch in (1, 3):
        x = torch.randn(batch, 3, 64, 64, generator=torch.Generator().manual_seed(batch))
        (got,) = session.run(['logits'], {'input': x.numpy()})
        with torch.no_grad():
            expected = model(x, mode='tensor').numpy()
        assert got.shape == (batch, 3)
        assert np.abs(got - expected).max() < 1e-4

    # --plain-se: the same model with squeeze-and-excitation as ReduceMean + broadcast Mul
    plain = work / 'cls_plain_se.onnx'
    run_tool('export_onnx.py', CLS_CFG, cls_ckpt, plain, '--shape', '64', '64', '--plain-se')
    ops = {path: [n.op_type for n in onnx.load(str(path)).graph.node] for path in (out, plain)}
    assert 'Resize' in ops[out] and 'Resize' not in ops[plain] and 'ReduceMean' in ops[plain]
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(9)).numpy()
    (a,), (b,) = (
        ort.InferenceSession(str(p), providers=['CPUExecutionProvider']).run(None, {'input': x}) for p in (out, plain)
    )
    assert np.abs(a - b).max() < 1e-5


def test_export_onnx_detector_backbone_features(work, det_ckpt):
    import onnxruntime as ort

    from repvit_mm.deploy import export_onnx, load_model

    out = work / 'det_backbone.onnx'
    info = export_onnx(DET_CFG, det_ckpt, out, shape=(96, 128), backbone_only=True)
    assert list(info['outputs']) == ['feat0', 'feat1', 'feat2', 'feat3']
    session = ort.InferenceSession(str(out), providers=['CPUExecutionProvider'])
    x = torch.randn(2, 3, 96, 128, generator=torch.Generator().manual_seed(4))
    got = session.run(None, {'input': x.numpy()})
    with torch.no_grad():
        expected = load_model(DET_CFG, det_ckpt).model.backbone(x)
    for stride, g, e in zip((4, 8, 16, 32), got, expected, strict=True):
        assert g.shape == (2, e.shape[1], 96 // stride, 128 // stride)
        assert np.abs(g - e.numpy()).max() <= 1e-4 * max(1.0, float(e.abs().max()))


def test_export_onnx_dynamo_exporter_agrees(work, cls_ckpt):
    import onnxruntime as ort

    from repvit_mm.deploy import export_onnx

    out = work / 'cls_dynamo.onnx'
    info = export_onnx(CLS_CFG, cls_ckpt, out, shape=(64, 64), exporter='dynamo')
    assert info['opset'] == 18 and info['max_abs_diff'] < 1e-4
    x = torch.randn(5, 3, 64, 64, generator=torch.Generator().manual_seed(6)).numpy()
    (got,) = ort.InferenceSession(str(out), providers=['CPUExecutionProvider']).run(None, {'input': x})
    assert got.shape == (5, 3)


def _ort_optimized_ops(onnx_path: Path) -> list[tuple[str, str]]:
    """(domain, op type) of every node of the graph ONNX Runtime runs on CPU after all optimisations."""
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(onnx_path.with_suffix('.ort-optimized.onnx'))
    options.log_severity_level = 3
    ort.InferenceSession(str(onnx_path), options, providers=['CPUExecutionProvider'])
    return [(n.domain, n.op_type) for n in onnx.load(options.optimized_model_filepath).graph.node]


def test_onnx_squeeze_excite_rewrite_is_exact_and_keeps_blocked_layout(work):
    """The exported SE (GlobalAveragePool, scale repeated by Resize) computes what the plain export does,
    and ONNX Runtime then runs the whole backbone in its blocked CPU layout (no layout conversions but
    for the output)."""
    import onnx
    import onnxruntime as ort

    from repvit_mm.deploy.export_onnx import export_tensor_model
    from repvit_mm.models import RepViT, switch_to_deploy

    torch.manual_seed(0)
    # M0.9: every width a multiple of ONNX Runtime's channel block (16 with AVX-512; its blocked pooling
    # needs that), unlike M0.6's 40 channels
    model = switch_to_deploy(randomize_bn_(RepViT('m0_9', out_indices=(3,))).eval())
    num_se = sum(1 for m in model.modules() if type(m).__name__ == 'SqueezeExcite')
    assert num_se == 1 + 1 + 7 + 1  # every other block of depths [2, 2, 14, 2]
    plain, blocked = work / 'se_plain.onnx', work / 'se_blocked.onnx'
    export_tensor_model(model, plain, (64, 96), blocked_layout=False)
    export_tensor_model(model, blocked, (64, 96))

    def ops(path):
        return [n.op_type for n in onnx.load(str(path)).graph.node]

    assert ops(plain).count('ReduceMean') == num_se and 'Resize' not in ops(plain)
    assert ops(blocked).count('GlobalAveragePool') == num_se and ops(blocked).count('Resize') == num_se
    assert 'ReduceMean' not in ops(blocked)

    x = torch.randn(3, 3, 64, 96, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        expected = model(x)[0].numpy()
    for path in (plain, blocked):
        session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
        (got,) = session.run(None, {'input': x.numpy()})
        assert np.abs(got - expected).max() <= 1e-5 * max(1.0, float(np.abs(expected).max()))

    plain_ops, blocked_ops = _ort_optimized_ops(plain), _ort_optimized_ops(blocked)
    if any(domain == 'com.microsoft.nchwc' for domain, _ in plain_ops):  # CPUs with AVX2 / AVX-512 / NEON
        conversions = {'ReorderInput', 'ReorderOutput'}
        assert sum(op in conversions for _, op in plain_ops) >= 2 * num_se
        assert sum(op in conversions for _, op in blocked_ops) == 1  # the backbone's output only


# ----------------------------------------------------------------------------------------- Core ML
def _mil_ops(spec):
    main = spec.mlProgram.functions['main']
    return list(main.block_specializations[main.opset].operations)


def _const_floats(ops, name_part: str) -> list[float]:
    for op in ops:
        if op.type == 'const' and name_part in op.outputs[0].name:
            return list(op.attributes['val'].immediateValue.tensor.floats.values)
    raise AssertionError(f'no const {name_part!r} in the program')


@pytest.fixture(scope='module')
def coreml_classifier(work, cls_ckpt) -> tuple[Path, subprocess.CompletedProcess]:
    out = work / 'cls.mlpackage'
    return out, run_tool('export_coreml.py', CLS_CFG, cls_ckpt, out, '--shape', '64')


def test_export_coreml_classifier_spec(coreml_classifier):
    out, proc = coreml_classifier
    assert 'probs [1, 3] (3 class labels)' in proc.stdout
    spec = coreml_program_spec(out, 64, 64)
    assert [o.name for o in spec.description.output] == ['classLabel', 'classLabel_probs']
    assert spec.description.predictedProbabilitiesName == 'classLabel_probs'
    ops = _mil_ops(spec)
    # the normalisation: the image input's bias subtracts the per-channel mean, no global scale...
    assert _const_floats(ops, 'image__biased') == pytest.approx([-123.675, -116.28, -103.53])
    assert not any('image__scaled' in op.outputs[0].name for op in ops if op.outputs)
    # ...and the class probabilities come from a softmax, labelled with the checkpoint's classes
    types = [op.type for op in ops]
    assert 'softmax' in types and types[-1] == 'classify'
    classes = ops[-1].inputs['classes'].arguments[0].value.immediateValue.list.values
    assert [c.immediateValue.tensor.strings.values[0] for c in classes] == CLASSES


def test_export_coreml_backbone_spec(work, seg_ckpt):
    import coremltools as ct

    from repvit_mm.deploy import export_coreml

    out = work / 'seg_backbone.mlpackage'
    info = export_coreml(SEG_CFG, seg_ckpt, out, shape=(64, 96), backbone_only=True, precision='float32')
    spec = ct.models.MLModel(str(out), skip_model_load=True).get_spec()
    shapes = {o.name: list(o.type.multiArrayType.shape) for o in spec.description.output}
    assert shapes == {
        'feat0': [1, 48, 16, 24],
        'feat1': [1, 96, 8, 12],
        'feat2': [1, 192, 4, 6],
        'feat3': [1, 384, 2, 3],
    }
    assert info['outputs'] == shapes
    image = spec.description.input[0].type.imageType
    assert (image.height, image.width) == (64, 96)


def test_std_folded_into_first_conv_is_exact(cls_ckpt):
    from repvit_mm.deploy import load_model, tensor_model
    from repvit_mm.deploy.export_coreml import fold_input_std

    mean = torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1)
    std = torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1)
    module = tensor_model(load_model(CLS_CFG, cls_ckpt, fuse=True), softmax=True)
    folded = fold_input_std(module, std.flatten().tolist(), (64, 64))
    assert type(folded) is type(module)  # folded into the stem's convolution, no extra op
    pixels = torch.randint(0, 256, (2, 3, 64, 64), generator=torch.Generator().manual_seed(5)).float()
    with torch.no_grad():
        _assert_same(folded(pixels - mean), module((pixels - mean) / std))


def test_coreml_prediction_matches_pytorch(coreml_classifier, work, cls_ckpt):
    from repvit_mm.deploy.export_coreml import can_predict

    ok, why = can_predict()
    if not ok:
        pytest.skip(why)
    from repvit_mm.deploy import export_coreml

    info = export_coreml(CLS_CFG, cls_ckpt, work / 'cls_fp32.mlpackage', shape=(64, 64), precision='float32')
    assert info['max_abs_diff'] < 1e-3


# ----------------------------------------------------------------------------------------- benchmark, FLOPs
@pytest.mark.slow
def test_benchmark_json_has_every_row(work, cls_ckpt):
    from repvit_mm.deploy.benchmark import PATHS

    out = work / 'bench.json'
    proc = run_tool(
        'benchmark.py',
        CLS_CFG,
        cls_ckpt,
        '--shape',
        '64',
        '--batch-sizes',
        '1',
        '2',
        '--repeats',
        '2',
        '--warmup',
        '1',
        '--json',
        out,
    )
    result = json.loads(out.read_text())
    rows = {(r['path'], r['batch_size']): r for r in result['rows']}
    assert set(rows) == {(p, b) for p in PATHS for b in (1, 2)}
    for (path, batch), row in rows.items():
        assert f'| {path} | {batch} |' in proc.stdout
        if path == 'torch_compile' and row['status'] == 'skipped':
            assert row['note']  # compiling may be impossible on a machine; it must say why
            continue
        assert row['status'] == 'ok', row
        assert row['repeats'] == 2 and 0 < row['p25_ms'] <= row['median_ms'] <= row['p75_ms']
        assert row['images_per_s'] == pytest.approx(batch / (row['median_ms'] / 1e3))
        assert row['gflops_per_s'] == pytest.approx(2 * result['model']['macs'] * row['images_per_s'] / 1e9)
        assert row['vs_timm'] == pytest.approx(row['images_per_s'] / rows['timm_fused', batch]['images_per_s'])
    assert rows['timm_fused', 1]['vs_timm'] == pytest.approx(1.0)
    assert result['model']['timm_reference'] == 'repvit_m0_9'
    assert 0.05e9 < result['model']['macs'] < 0.09e9  # M0.9 at 64x64: (64/224)^2 of 0.82 GMACs
    assert {t['batch_size'] for t in result['targets']} == {1}  # batch 32 was not run
    assert {t['reference'] for t in result['targets']} == {'timm_fused', 'timm_onnxruntime', 'onnxruntime'}
    for t in result['targets']:
        assert t['ratio'] == pytest.approx(rows[t['path'], 1]['images_per_s'] / rows[t['reference'], 1]['images_per_s'])
        assert t['met'] == (t['ratio'] >= t['minimum'])
    assert result['machine']['cpu_count'] >= 1


def _flops_rows(stdout: str) -> dict[str, tuple[float, float]]:
    rows = {}
    for label in ('unfused (training)', 'fused (deploy)'):
        m = re.search(re.escape(label) + r'\s+([\d.]+) M\s+([\d.]+) G', stdout)
        rows[label] = (float(m.group(1)), float(m.group(2)))
    return rows


def test_get_flops_reproduces_paper_numbers():
    proc = run_tool('get_flops.py', IN1K_CFG)
    assert "as in the paper's table (fused): 5.1M params, 0.8G MACs" in proc.stdout
    rows = _flops_rows(proc.stdout)
    assert rows['unfused (training)'][0] > rows['fused (deploy)'][0]  # BN and the second head folded
    assert 'input 1x3x224x224' in proc.stdout


def test_get_flops_full_detector_counts_every_part():
    from repvit_mm.deploy import model_complexity

    result = model_complexity(DET_CFG, shape=(128, 128))
    parts = result['fused']['by_module']
    assert set(parts) == {'backbone', 'neck', 'rpn_head', 'roi_head'}
    assert all(p['macs'] > 0 for p in parts.values())
    assert result['fused']['macs'] == pytest.approx(sum(p['macs'] for p in parts.values()), rel=0.01)
    assert result['unfused']['by_module']['backbone']['params'] > parts['backbone']['params']


# ----------------------------------------------------------------------------------------- demo
@pytest.mark.slow
@pytest.mark.parametrize('task', ['classification', 'detection', 'segmentation'])
def test_demo_writes_enlarged_picture(task, work, request):
    from PIL import Image

    config, ckpt = {
        'classification': (CLS_CFG, 'cls_ckpt'),
        'detection': (DET_CFG, 'det_fused_ckpt'),
        'segmentation': (SEG_CFG, 'seg_ckpt'),
    }[task]
    if ckpt == 'det_fused_ckpt':  # a fused checkpoint works as well as a training one
        ckpt = work / 'det_fused.pth'
        if not ckpt.exists():
            from repvit_mm.deploy import fuse_checkpoint

            fuse_checkpoint(DET_CFG, request.getfixturevalue('det_ckpt'), ckpt)
    else:
        ckpt = request.getfixturevalue(ckpt)
    image = _image(work / f'{task}.jpg', (120, 96))
    out = work / f'{task}.png'
    proc = run_tool('demo.py', image, config, ckpt, '--out', out, '--score-thr', '0')
    assert f'{task} picture (320x256)' in proc.stdout  # a small image is drawn with a short side of 256 px
    if task == 'classification':
        assert re.search(r'^top-3: (circle|square|triangle) [\d.]+, ', proc.stdout, re.M), proc.stdout
    elif task == 'detection':
        assert int(re.search(r'^(\d+) instances with score >= 0$', proc.stdout, re.M).group(1)) > 0
    else:
        assert re.search(r'^classes: \w+ \d+%', proc.stdout, re.M), proc.stdout
    with Image.open(out) as picture:
        assert picture.format == 'PNG' and picture.size == (320, 256)
        pixels = np.asarray(picture.convert('RGB'))
    enlarged = Image.open(image).convert('RGB').resize((320, 256), Image.BICUBIC)
    assert not np.array_equal(pixels, np.asarray(enlarged))  # something was drawn


# ----------------------------------------------------------------------------------------- bad input
def test_wrong_config_for_checkpoint_names_keys_and_writes_nothing(work, cls_ckpt):
    wrong = work / 'repvit-m0.6_shapes.py'
    wrong.write_text(f"_base_ = '{CLS_CFG}'\nmodel = dict(backbone=dict(arch='m0_6'), head=dict(in_channels=320))\n")
    out = work / 'never.pth'
    proc = run_tool('fuse.py', wrong, cls_ckpt, out, check=False)
    assert_one_line_error(
        proc,
        str(cls_ckpt),
        "does not fit the model (ImageClassifier with RepViT arch 'm0_6'",
        "fits arch 'm0_9'",
        'keys with wrong shapes',
        'backbone.',
        str(wrong),
    )
    assert not out.exists()


@pytest.mark.slow
def test_existing_output_is_kept_without_force(work, cls_ckpt, cls_fused):
    from repvit_mm.deploy import export_onnx
    from repvit_mm.utils import UserInputError

    (work / 'exists.pth').write_text('keep')
    proc = run_tool('fuse.py', CLS_CFG, cls_ckpt, work / 'exists.pth', check=False)
    assert_one_line_error(proc, str(work / 'exists.pth'), 'already exists', '--force')
    assert (work / 'exists.pth').read_text() == 'keep'

    package = work / 'exists.mlpackage'  # a directory
    package.mkdir()
    (package / 'keep.txt').write_text('keep')
    proc = run_tool('export_coreml.py', CLS_CFG, cls_ckpt, package, '--shape', '64', check=False)
    assert_one_line_error(proc, 'already exists')
    assert [p.name for p in package.iterdir()] == ['keep.txt']

    image = _image(work / 'img.jpg', (64, 64))
    (work / 'exists.png').write_text('keep')
    proc = run_tool('demo.py', image, CLS_CFG, cls_ckpt, '--out', work / 'exists.png', check=False)
    assert_one_line_error(proc, 'already exists')
    assert (work / 'exists.png').read_text() == 'keep'

    (work / 'exists.onnx').write_text('keep')
    with pytest.raises(UserInputError, match='already exists'):
        export_onnx(CLS_CFG, cls_ckpt, work / 'exists.onnx', shape=(64, 64))
    assert (work / 'exists.onnx').read_text() == 'keep'
    # --force replaces it
    run_tool('fuse.py', CLS_CFG, cls_ckpt, work / 'exists.pth', '--force')
    fused = torch.load(work / 'exists.pth', map_location='cpu', weights_only=True)
    assert fused['meta']['deploy'] is True


def test_failed_export_leaves_existing_output_untouched(work, cls_ckpt):
    out = work / 'forced.onnx'
    out.write_text('keep')
    proc = run_tool('export_onnx.py', DET_CFG, cls_ckpt, out, '--force', check=False)
    assert_one_line_error(proc, 'does not fit')
    assert out.read_text() == 'keep'
    assert [p.name for p in work.iterdir() if p.name.startswith('.forced')] == []  # no temporary left


def test_unwritable_output_is_one_line(work, cls_ckpt):
    out = work / 'missing-dir' / 'fused.pth'
    proc = run_tool('fuse.py', CLS_CFG, cls_ckpt, out, check=False)
    assert_one_line_error(proc, 'cannot write', 'does not exist')
    proc = run_tool('export_onnx.py', CLS_CFG, cls_ckpt, work / 'model.txt', check=False)
    assert_one_line_error(proc, 'model.txt: expected a .onnx file name')
    proc = run_tool('benchmark.py', CLS_CFG, '--json', work / 'missing-dir' / 'b.json', check=False)
    assert_one_line_error(proc, 'cannot write', 'does not exist')
    assert not (work / 'missing-dir').exists()


def test_task_mismatch_is_one_line(work, cls_ckpt):
    image = _image(work / 'img.jpg', (64, 64))
    proc = run_tool('demo.py', image, CLS_CFG, cls_ckpt, '--out', work / 'x.png', '--task', 'detection', check=False)
    assert_one_line_error(proc, '--task detection', 'classification config')
    assert not (work / 'x.png').exists()
