"""A checkpoint's metadata never runs code: config text stored in a checkpoint (``meta.cfg``,
``message_hub.runtime_info.cfg``, ``meta.config``) is parsed as data on every route that reads it --
mmengine's inferencers without a model config (mmdet, mmseg), ``Config.fromstring`` as ``Runner.resume``
calls it, ``tools/publish_model.py`` -- and a file carrying code is refused with one line naming the file
and the line; checkpoints written the way training writes them (``Config.pretty_text``) still load."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from helpers import CONFIGS, ROOT, assert_one_line_error, run_tool, tool_env
from mmengine.config import Config

CLS_CONFIG = CONFIGS / 'classification' / 'repvit-m0.9_shapes-64px.py'
DET_CONFIG = CONFIGS / 'detection' / 'mask-rcnn_repvit-m0.9_fpn_shapes.py'
SEG_CONFIG = CONFIGS / 'segmentation' / 'fpn_repvit-m0.9_shapes.py'


def runner_checkpoint(config: Path, path: Path, extra: str = '', key: str = 'cfg') -> Path:
    """A checkpoint as mmengine's Runner writes one: the config's model weights, ``meta[key]`` the config's
    ``pretty_text`` (plus ``extra`` lines) and ``meta.dataset_meta``."""
    from repvit_mm.deploy.model import build_model, class_names, read_config

    cfg = read_config(config)
    model = build_model(cfg)
    meta = {key: cfg.pretty_text + extra, 'dataset_meta': {'classes': tuple(class_names(cfg))}, 'epoch': 0, 'iter': 1}
    torch.save({'state_dict': model.state_dict(), 'meta': meta}, path)
    return path


def marker_line(marker: Path) -> str:
    return f'\n_ = open({str(marker)!r}, "w").write("ran")\n'


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    """``code`` in a new interpreter (import order matters), this tree first on the path."""
    return subprocess.run(
        [sys.executable, '-c', textwrap.dedent(code)],
        cwd=cwd,
        env=tool_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )


def refused_in_one_line(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    """The script printed ``refused: <message>`` for an UnsafeConfigError: one line, naming each fragment."""
    lines = [line for line in proc.stdout.splitlines() if line.startswith('refused: ')]
    assert proc.returncode == 0 and len(lines) == 1, proc.stdout + proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# ----------------------------------------------------------------------------------------- the parser
def test_every_config_of_ours_reads_back_from_its_pretty_text():
    """What training stores (``pretty_text``) of each task's configs parses to the same dict, its types all
    registered: nothing valid is refused."""
    import repvit_mm  # noqa: F401  (Config.fromstring is the safe one)

    assert Config.fromstring.__name__ == 'config_from_text'
    for config in (
        CLS_CONFIG,
        DET_CONFIG,
        SEG_CONFIG,
        CONFIGS / 'classification' / 'repvit-m0.9_8xb256-distill-300e_in1k.py',
        CONFIGS / 'detection' / 'mask-rcnn_repvit-m0.9_fpn_1x_coco.py',
        CONFIGS / 'segmentation' / 'fpn_repvit-m0.9_8xb4-40k_ade20k-512x512.py',
        *sorted((CONFIGS / 'own_data').glob('*.py')),
    ):
        cfg = Config.fromfile(str(config))
        parsed = Config.fromstring(cfg.pretty_text, '.py')
        assert _same(parsed.to_dict(), cfg.to_dict()), config


def _same(a, b) -> bool:
    """Equal up to tuples written as lists (``pretty_text`` keeps tuples, ConfigDict may not)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@pytest.mark.parametrize(
    ('text', 'fragment'),
    [
        ('model = dict(type="ImageClassifier")\nimport os\n', "line 2 ('import os')"),
        ('x = __import__("os").system("true")\n', 'line 1'),
        ('x = dict(a=1)\nx["b"] = 2\n', 'line 2'),
        ('x = [i for i in range(3)]\n', 'not a literal'),
        ('x = dict(**{"a": 1})\n', 'key=literal'),
        ('x = {**{"a": 1}}\n', '** expansion'),
        ('x = 1 +\n', 'not Python config text'),
        ('def f():\n    pass\n', "line 1 ('def f():')"),
        ('model = dict(type="subprocess.Popen", args="true", shell=True)\n', "model.type='subprocess.Popen'"),
        ('model = dict(type="mmcv.imwrite")\n', "'mmcv.imwrite' is not in any registry"),
        ('custom_imports = dict(imports=["os"])\n', "custom_imports names 'os'"),
        ('filename = "x"\n', 'not a config'),
        ('x = {[1]: 2}\n', 'unhashable'),
    ],
)
def test_config_text_that_is_not_plain_data_is_refused(text, fragment):
    import repvit_mm  # noqa: F401
    from repvit_mm.utils.safe_config import UnsafeConfigError

    with pytest.raises(UnsafeConfigError) as err:
        Config.fromstring(text, '.py')
    assert fragment in str(err.value) and '\n' not in str(err.value), str(err.value)


def test_yaml_and_json_text_is_read_safely(tmp_path):
    import repvit_mm  # noqa: F401
    from repvit_mm.utils.safe_config import UnsafeConfigError

    marker = tmp_path / 'marker'
    evil = f'x: !!python/object/apply:os.system ["touch {marker}"]\n'
    with pytest.raises(UnsafeConfigError, match='not yaml text'):
        Config.fromstring(evil, '.yaml')
    assert not marker.exists()
    assert Config.fromstring('a: [1, 2]\nb: {type: ImageClassifier}\n', '.yml').to_dict() == {
        'a': [1, 2],
        'b': {'type': 'ImageClassifier'},
    }
    assert Config.fromstring('{"a": 1}', '.json').a == 1


# ----------------------------------------------------------------------------------------- the routes
@pytest.fixture(scope='module')
def evil(tmp_path_factory) -> dict[str, Path]:
    """Checkpoints whose weights pass ``weights_only`` and whose stored config writes a marker file."""
    folder = tmp_path_factory.mktemp('evil')
    marker = folder / 'marker'
    return {
        'marker': marker,
        'detection': runner_checkpoint(DET_CONFIG, folder / 'det.pth', marker_line(marker)),
        'segmentation': runner_checkpoint(SEG_CONFIG, folder / 'seg.pth', marker_line(marker)),
        'classification': runner_checkpoint(CLS_CONFIG, folder / 'cls.pth', marker_line(marker)),
        'resume': runner_checkpoint(CLS_CONFIG, folder / 'resume.pth', marker_line(marker), key='config'),
        'popen': runner_checkpoint(
            DET_CONFIG,
            folder / 'popen.pth',
            f'\nx = dict(type="subprocess.Popen", args="touch {marker}", shell=True)\n',
        ),
    }


@pytest.mark.parametrize('order', ['mmdet first', 'repvit_mm first'])
def test_det_inferencer_without_a_model_refuses_code_in_the_checkpoint(evil, tmp_path, order):
    imports = ['from mmdet.apis import DetInferencer', 'import repvit_mm']
    proc = run_python(
        f"""
        {'; '.join(imports if order == 'mmdet first' else imports[::-1])}
        from repvit_mm.utils.safe_config import UnsafeConfigError
        try:
            DetInferencer(weights={str(evil['detection'])!r}, device='cpu')
        except UnsafeConfigError as err:
            print('refused:', err)
        """,
        tmp_path,
    )
    refused_in_one_line(proc, str(evil['detection']), 'meta.cfg line', 'open(')
    assert not evil['marker'].exists()


def test_mmseg_inferencer_without_a_model_refuses_code_in_the_checkpoint(evil, tmp_path):
    proc = run_python(
        f"""
        import repvit_mm
        from mmseg.apis import MMSegInferencer
        from repvit_mm.utils.safe_config import UnsafeConfigError
        try:
            MMSegInferencer(model=None, weights={str(evil['segmentation'])!r}, device='cpu')
        except UnsafeConfigError as err:
            print('refused:', err)
        """,
        tmp_path,
    )
    refused_in_one_line(proc, str(evil['segmentation']), 'meta.cfg line')
    assert not evil['marker'].exists()


def test_a_declarative_config_naming_code_as_a_type_is_refused(evil, tmp_path):
    """``type='subprocess.Popen'`` is plain data, but mmengine would import and call it when building."""
    proc = run_python(
        f"""
        import repvit_mm
        from mmdet.apis import DetInferencer
        from repvit_mm.utils.safe_config import UnsafeConfigError
        try:
            DetInferencer(weights={str(evil['popen'])!r}, device='cpu')
        except UnsafeConfigError as err:
            print('refused:', err)
        """,
        tmp_path,
    )
    refused_in_one_line(proc, str(evil['popen']), "x.type='subprocess.Popen'")
    assert not evil['marker'].exists()


def test_mmpretrain_routes_read_only_the_weights(evil):
    """mmpretrain's ``get_model`` / inferencer take the config from the name or file given, never from the
    checkpoint: the evil file loads as weights, its text is not run."""
    from mmpretrain import ImageClassificationInferencer, get_model

    import repvit_mm  # noqa: F401

    weights = torch.load(evil['classification'], weights_only=True)['state_dict']
    model = get_model(str(CLS_CONFIG), pretrained=str(evil['classification']), device='cpu')
    assert torch.equal(model.state_dict()['head.head.linear.weight'], weights['head.head.linear.weight'])
    inferencer = ImageClassificationInferencer(str(CLS_CONFIG), pretrained=str(evil['classification']), device='cpu')
    assert torch.equal(inferencer.model.state_dict()['head.head.linear.weight'], weights['head.head.linear.weight'])
    assert not evil['marker'].exists()


def test_resume_reads_a_legacy_config_key_as_data(evil):
    """``Runner.resume`` reads ``meta['config']`` with ``Config.fromstring`` (for its ``gpu_ids``)."""
    from mmengine.runner import CheckpointLoader

    import repvit_mm  # noqa: F401
    from repvit_mm.utils.safe_config import UnsafeConfigError

    checkpoint = CheckpointLoader.load_checkpoint(str(evil['resume']), map_location='cpu')
    with pytest.raises(UnsafeConfigError, match=rf"{evil['resume']}'s meta.config line \d+ \('_ = open"):
        Config.fromstring(checkpoint['meta']['config'], file_format='.py')
    assert not evil['marker'].exists()


def test_config_text_read_and_saved_again_is_a_plain_str(evil, tmp_path):
    """The text names its file in errors only while in memory: saved again (mmengine's ``save_checkpoint`` of
    what was read), it is a plain ``str`` that a weights-only load takes, and errors name the new file."""
    from mmengine.runner import CheckpointLoader, save_checkpoint

    import repvit_mm  # noqa: F401
    from repvit_mm.utils.safe_config import UnsafeConfigError

    checkpoint = CheckpointLoader.load_checkpoint(str(evil['resume']), map_location='cpu')
    save_checkpoint(checkpoint, str(tmp_path / 'again.pth'))
    again = torch.load(tmp_path / 'again.pth', weights_only=True)
    assert type(again['meta']['config']) is str and again['meta']['config'] == checkpoint['meta']['config']
    reread = CheckpointLoader.load_checkpoint(str(tmp_path / 'again.pth'), map_location='cpu')
    with pytest.raises(UnsafeConfigError, match=rf"{tmp_path / 'again.pth'}'s meta.config line \d+"):
        Config.fromstring(reread['meta']['config'], file_format='.py')
    assert not evil['marker'].exists()


def test_publish_model_refuses_a_checkpoint_carrying_code(evil, tmp_path):
    proc = run_tool('publish_model.py', evil['detection'], tmp_path / 'release.pth', check=False)
    assert_one_line_error(proc, str(evil['detection']), 'meta.cfg line')
    assert list(tmp_path.iterdir()) == [] and not evil['marker'].exists()


# ----------------------------------------------------------------------------------------- nothing valid refused
@pytest.fixture(scope='module')
def honest(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp('honest')
    return {
        'detection': runner_checkpoint(DET_CONFIG, folder / 'det.pth'),
        'segmentation': runner_checkpoint(SEG_CONFIG, folder / 'seg.pth'),
    }


def test_inferencers_rebuild_the_model_from_an_honest_checkpoint(honest, shapes_root):
    from mmdet.apis import DetInferencer
    from mmseg.apis import MMSegInferencer

    import repvit_mm  # noqa: F401

    image = str(min((shapes_root / 'coco' / 'val2017').glob('*.jpg')))
    det = DetInferencer(weights=str(honest['detection']), device='cpu', show_progress=False)
    result = det(image, return_datasamples=True, no_save_vis=True, no_save_pred=True)
    assert det.model.dataset_meta['classes'] == ('circle', 'square', 'triangle')
    assert 'pred_instances' in result['predictions'][0]
    seg = MMSegInferencer(model=None, weights=str(honest['segmentation']), device='cpu')
    seg.show_progress = False
    sample = seg(image, return_datasamples=True)
    assert tuple(sample.pred_sem_seg.data.shape[-2:]) == tuple(sample.ori_shape)


def test_a_trained_checkpoint_publishes_and_its_config_reads_back(shapes_root, tmp_path):
    """A real training run's checkpoint: its stored config parses, it publishes, and so does its fused copy."""
    from helpers import short_classifier_run

    from repvit_mm.utils.safe_checkpoint import safe_torch_load
    from repvit_mm.utils.safe_config import checkpoint_config_texts, config_from_text

    options = [f'{k}={v}' for k, v in short_classifier_run(shapes_root, iters=1).items()]
    run_tool('train.py', CLS_CONFIG, '--work-dir', tmp_path / 'work', '--cfg-options', *options)
    ckpt = tmp_path / 'work' / 'iter_1.pth'
    texts = dict(checkpoint_config_texts(safe_torch_load(str(ckpt))))
    assert 'meta.cfg' in texts
    for text in texts.values():
        assert config_from_text(text, '.py').model.backbone.type == 'RepViT'
    proc = run_tool('publish_model.py', ckpt, tmp_path / 'release.pth')
    assert 'published:' in proc.stdout
    # a fused checkpoint names its config file in meta.config: a file name, published as well
    run_tool('fuse.py', CLS_CONFIG, ckpt, tmp_path / 'fused.pth')
    assert safe_torch_load(str(tmp_path / 'fused.pth'))['meta']['config'].endswith('.py')
    proc = run_tool('publish_model.py', tmp_path / 'fused.pth', tmp_path / 'fused-release.pth')
    assert 'published:' in proc.stdout


def test_the_guarantee_needs_no_particular_import_order():
    """``Config.fromstring`` is replaced on the class: modules that imported ``Config`` earlier call the safe one."""
    proc = run_python(
        """
        from mmengine.config import Config
        from mmengine.infer import infer
        import repvit_mm
        print(Config.fromstring.__name__, infer.Config.fromstring.__name__)
        """,
        ROOT,
    )
    assert proc.stdout.split() == ['config_from_text', 'config_from_text'], proc.stderr
