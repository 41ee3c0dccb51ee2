"""Failures a newcomer meets end in one ``error:`` line, before anything is created.

Through the tools' command lines (``helpers.run_tool``) and the
upstream inferencers: a checkpoint URL that cannot be downloaded, a config file naming an unknown backbone,
values that cannot work (a zero batch size or interval, a word for the learning rate), outputs that cannot be
written, a file that is no checkpoint, an empty image, a 1x1 image.
"""

from __future__ import annotations

import http.server
import os
import random
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import CONFIGS, assert_one_line_error, run_tool
from PIL import Image

CLS = CONFIGS / 'classification' / 'repvit-m0.9_shapes-64px.py'
SEG = CONFIGS / 'segmentation' / 'fpn_repvit-m0.9_shapes.py'
#: Nothing listens on port 9 (discard) of the loopback: the connection is refused at once, no internet needed.
UNREACHABLE = 'http://127.0.0.1:9/repvit-mm-unreachable.pth'


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory) -> Path:
    """The Shapes classifier, randomly initialised, as tools/train.py would save it."""
    from mmengine.config import Config
    from mmengine.registry import MODELS, DefaultScope

    cfg = Config.fromfile(str(CLS))
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(cfg.model)
    path = tmp_path_factory.mktemp('ckpt') / 'classifier.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {'dataset_meta': {'classes': cfg.classes}}}, path)
    return path


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    """An empty torch.hub cache: a download cannot be answered from an earlier one."""
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    return tmp_path / 'torch_home'


@pytest.fixture
def read_only_dir(tmp_path) -> Path:
    """A folder nothing can be created in: permission bits for a user, a read-only file system for root
    (whom the bits do not stop)."""
    folder = tmp_path / 'read_only'
    folder.mkdir()
    folder.chmod(0o555)
    try:
        os.rmdir(tempfile.mkdtemp(dir=folder))
    except OSError:
        yield folder
    else:
        if not Path('/sys').is_dir():
            pytest.skip('running as root without /sys: no folder that root cannot write in')
        yield Path('/sys')
    folder.chmod(0o755)


def data_options(root: Path) -> list[str]:
    data = root / 'imagenet'
    return [
        f'train_dataloader.dataset.data_root={data}',
        f'val_dataloader.dataset.data_root={data}',
        f'test_dataloader.dataset.data_root={data}',
        'train_dataloader.num_workers=0',
        'val_dataloader.num_workers=0',
        'test_dataloader.num_workers=0',
    ]


# ------------------------------------------------------------------------------------ checkpoint URLs
def test_an_unreachable_checkpoint_url_is_one_line_naming_it(tiny_shapes, torch_home, tmp_path):
    image = next((tiny_shapes / 'imagenet' / 'val').rglob('*.JPEG'))
    work = tmp_path / 'work'
    runs = {
        'test': (CLS, UNREACHABLE, '--work-dir', work, '--cfg-options', *data_options(tiny_shapes)),
        'demo': (image, CLS, UNREACHABLE, '--out', tmp_path / 'demo.png'),
        'fuse': (CLS, UNREACHABLE, tmp_path / 'fused.pth'),
        'train': (CLS, '--work-dir', work, '--cfg-options', *data_options(tiny_shapes), f'load_from={UNREACHABLE}'),
    }
    resume = ('train', (CLS, '--work-dir', work, '--resume', UNREACHABLE, '--cfg-options', *data_options(tiny_shapes)))
    init_cfg = (
        'train',
        (
            CLS,
            '--work-dir',
            work,
            '--cfg-options',
            *data_options(tiny_shapes),
            f'model.backbone.init_cfg=dict(type=Pretrained,checkpoint={UNREACHABLE})',
        ),
    )
    for tool, argv in [*runs.items(), resume, init_cfg]:
        proc = run_tool(f'{tool}.py', *argv, check=False)
        assert_one_line_error(proc, f'cannot download checkpoint {UNREACHABLE}', 'Connection refused')
    assert not work.exists() and not (tmp_path / 'demo.png').exists() and not (tmp_path / 'fused.pth').exists()


class _NotFound(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (the name http.server calls)
        self.send_error(404)

    def log_message(self, *args):
        pass


def test_a_checkpoint_url_answering_404_is_one_line(torch_home, tmp_path):
    server = http.server.HTTPServer(('127.0.0.1', 0), _NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f'http://127.0.0.1:{server.server_address[1]}/gone.pth'
    try:
        proc = run_tool('fuse.py', CLS, url, tmp_path / 'fused.pth', check=False)
    finally:
        server.shutdown()
    assert_one_line_error(proc, url, 'HTTP 404')
    assert not list(torch_home.rglob('*.pth')) and not (tmp_path / 'fused.pth').exists()


# ------------------------------------------------------------------------------------ a config file
@pytest.mark.parametrize(
    ('override', 'fragments'),
    [
        ("backbone=dict(arch='m0_8')", ['model.backbone.arch', "'m0_8'"]),
        ("backbone=dict(type='RepVit')", ['model.backbone.type', "'RepVit'", "'RepViT'"]),
    ],
)
def test_an_unknown_backbone_in_a_config_file_is_one_line_without_a_work_dir(override, fragments, tmp_path):
    config = tmp_path / 'my_config.py'
    config.write_text(f"_base_ = ['{CLS}']\nmodel = dict({override})\n")
    proc = run_tool('train.py', config, '--work-dir', tmp_path / 'work', check=False)
    assert_one_line_error(proc, str(config), *fragments)
    assert not (tmp_path / 'work').exists()


# ------------------------------------------------------------------------------------ values
@pytest.mark.parametrize(
    ('option', 'fragments'),
    [
        ('train_dataloader.batch_size=0', ['train_dataloader.batch_size=0', '>= 1']),
        ('optim_wrapper.optimizer.lr=abc', ['lr=abc', 'number']),
        ('train_cfg.val_interval=0', ['train_cfg.val_interval=0', '>= 1']),
        ('train_cfg.max_iters=0', ['train_cfg.max_iters=0', '>= 1']),
        ('val_dataloader.num_workers=-1', ['val_dataloader.num_workers=-1', '>= 0']),
        # the Shapes data has 3 classes: label 2 would stop training mid-run ("Target 2 is out of bounds")
        ('model.head.num_classes=2', ['model.head.num_classes=2', '3 classes', 'model.head.num_classes=3']),
    ],
)
def test_values_that_cannot_work_are_refused_before_anything_starts(option, fragments, tiny_shapes, tmp_path):
    work = tmp_path / 'work'
    proc = run_tool(
        'train.py', CLS, '--work-dir', work, '--cfg-options', *data_options(tiny_shapes), option, check=False
    )
    assert_one_line_error(proc, *fragments)
    assert not work.exists()


def test_a_work_dir_that_cannot_be_written_is_one_line(read_only_dir, tiny_shapes, checkpoint):
    work = read_only_dir / 'work'
    proc = run_tool('train.py', CLS, '--work-dir', work, '--cfg-options', *data_options(tiny_shapes), check=False)
    assert_one_line_error(proc, f'work dir {work}', 'cannot write')
    proc = run_tool(
        'test.py', CLS, checkpoint, '--work-dir', work, '--cfg-options', *data_options(tiny_shapes), check=False
    )
    assert_one_line_error(proc, f'work dir {work}', 'cannot write')


def test_test_out_that_cannot_be_written_is_refused_before_the_evaluation(
    read_only_dir, tiny_shapes, checkpoint, tmp_path
):
    out = read_only_dir / 'results.pkl'
    work = tmp_path / 'work'
    argv = (CLS, checkpoint, '--work-dir', work, '--out', out, '--cfg-options', *data_options(tiny_shapes))
    proc = run_tool('test.py', *argv, check=False)
    assert_one_line_error(proc, f'--out {out}', 'cannot write')
    assert 'metrics' not in proc.stdout and not work.exists()


# ------------------------------------------------------------------------------------ files
def test_random_bytes_as_a_checkpoint_do_not_advise_weights_only_false(tiny_shapes, tmp_path):
    rng = random.Random(0)
    for index in range(4):
        bad = tmp_path / f'random{index}.pth'
        bad.write_bytes(bytes(rng.randrange(256) for _ in range(4096)))
        proc = run_tool('test.py', CLS, bad, '--work-dir', tmp_path / 'work', check=False)
        assert_one_line_error(proc, str(bad), 'checkpoint')
        assert 'weights_only' not in proc.stderr
    assert not (tmp_path / 'work').exists()


def test_classification_inferencer_on_an_empty_file_names_it(checkpoint, tmp_path):
    from mmpretrain import ImageClassificationInferencer

    from repvit_mm.utils import UserInputError

    empty = tmp_path / 'empty.jpg'
    empty.touch()
    inferencer = ImageClassificationInferencer(str(CLS), pretrained=str(checkpoint), device='cpu')
    try:
        with pytest.raises(UserInputError) as caught:
            inferencer(str(empty))
    finally:  # mmpretrain leaves its progress display (and the failed call's task) behind after any error in a
        # call; later rich displays (mmseg's inferencer) would refuse to start
        from mmpretrain.utils.progress import global_live, global_progress

        global_live.stop()
        for task_id in global_progress.task_ids:
            global_progress.remove_task(task_id)
    assert str(caught.value) == f'corrupt image file: {empty} (empty file)'
    image = tmp_path / 'fine.png'
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(image)
    assert inferencer(str(image))[0]['pred_class'] in ('circle', 'square', 'triangle')


def test_segmentation_inferencer_draws_a_1x1_image(tiny_shapes, tmp_path):
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmseg.apis import MMSegInferencer
    from mmseg.registry import MODELS

    cfg = Config.fromfile(str(SEG))
    cfg.model.backbone.init_cfg = None
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = MODELS.build(cfg.model)
    ckpt = tmp_path / 'segmentor.pth'
    torch.save(
        {'state_dict': model.state_dict(), 'meta': {'dataset_meta': dict(cfg.train_dataloader.dataset.metainfo)}}, ckpt
    )
    image = tmp_path / 'one_pixel.png'
    Image.fromarray(np.full((1, 1, 3), 200, np.uint8)).save(image)
    inferencer = MMSegInferencer(str(SEG), str(ckpt), device='cpu')
    result = inferencer(str(image), out_dir=str(tmp_path / 'out'))
    assert result['predictions'].shape == (1, 1)
    drawn = np.asarray(Image.open(tmp_path / 'out' / 'vis' / 'one_pixel.png'))
    assert drawn.shape[:2] == (1, 1)
