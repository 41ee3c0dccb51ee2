"""Bad data and config input ends in one ``error:`` line naming the file or key, before anything is written.

The tools run as a user runs them (``helpers.run_tool``); the checks they call, where a test needs their
details, through the library's public functions.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import CONFIGS, assert_one_line_error, random_checkpoint, run_tool
from mmengine.config import Config
from PIL import Image

CLS = CONFIGS / 'classification' / 'repvit-m0.9_shapes-64px.py'
DET = CONFIGS / 'detection' / 'mask-rcnn_repvit-m0.9_fpn_shapes.py'
SEG = CONFIGS / 'segmentation' / 'fpn_repvit-m0.9_shapes.py'
IN1K = CONFIGS / 'classification' / 'repvit-m0.9_8xb256-300e_in1k.py'
TASKS = {'classification': (CLS, 'mmpretrain'), 'detection': (DET, 'mmdet'), 'segmentation': (SEG, 'mmseg')}

# Its module- and session-scoped fixtures (trained models, written files) are made once: the module runs on one
# pytest-xdist worker (`make test` distributes with --dist loadgroup).
pytestmark = pytest.mark.xdist_group('input_errors')


@pytest.fixture(scope='module')
def small_shapes(tmp_path_factory) -> Path:
    """A few Shapes images per format (2 per class for classification)."""
    from repvit_mm.datasets.shapes import make_shapes

    root = tmp_path_factory.mktemp('small_shapes')
    make_shapes(
        root, num_train={'imagenet': 2, 'coco': 4, 'ade20k': 4}, num_val={'imagenet': 1, 'coco': 2, 'ade20k': 2}, seed=0
    )
    return root


@pytest.fixture
def data(small_shapes, tmp_path) -> Path:
    """A copy of the small Shapes data a test may damage."""
    copy_root = tmp_path / 'shapes'
    shutil.copytree(small_shapes, copy_root)
    return copy_root


def data_options(task: str, root: Path) -> list[str]:
    """``--cfg-options`` pointing a Shapes config at ``root`` with tiny single-process runs."""
    sub = {'classification': 'imagenet', 'detection': 'coco', 'segmentation': 'ade20k'}[task]
    options = []
    for split in ('train', 'val', 'test'):
        options += [
            f'{split}_dataloader.dataset.data_root={root / sub}',
            f'{split}_dataloader.num_workers=0',
            f'{split}_dataloader.batch_size=2',
        ]
    if task == 'detection':
        ann = root / 'coco' / 'annotations' / 'instances_val2017.json'
        options += [f'val_evaluator.ann_file={ann}', f'test_evaluator.ann_file={ann}', 'model.backbone.init_cfg=None']
    if task == 'segmentation':
        options += ['model.backbone.init_cfg=None']
    return options + ['train_cfg.max_iters=1', 'train_cfg.val_interval=1', 'default_hooks.checkpoint.interval=1']


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp('random_checkpoints')
    return {task: random_checkpoint(config, folder / f'{task}.pth') for task, (config, _) in TASKS.items()}


# --------------------------------------------------------------------------------------- --cfg-options
#: A mistyped last part of a key, and the valid name the error must offer.
MISTYPED = {
    'train_cfg.max_iter=2': "'max_iters'",
    'model.backbone.archh=m1_1': "'arch'",
    'default_hooks.logger.intervl=5': "'interval'",
    'optim_wrapper.optimizer.learning_rate=1e-3': ' lr,',
    'default_hooks.checkpoint.intervall=1': "'interval'",
    'env_cfg.cudnn_benchmrk=True': "'cudnn_benchmark'",
    'param_scheduler.0.by_epok=False': "'by_epoch'",
    'train_dataloader.dataset.data_rot=x': "'data_root'",
    'test_dataloader.batchsize=2': "'batch_size'",
    'val_cfg.fp61=True': "'fp16'",
    'randomness.sed=1': "'seed'",
    'compile.backnd=eager': "'backend'",
    'test_dataloader.dataset.pipeline.0.to_float=True': "'to_float32'",
}


@pytest.mark.parametrize('task', list(TASKS))
def test_mistyped_key_is_one_line_with_the_closest_names(task, tmp_path):
    import ast

    from repvit_mm.utils import UserInputError
    from repvit_mm.utils.config import check_cfg_options

    config = TASKS[task][0]
    cfg = Config.fromfile(str(config))
    # every mistake through the check both tools call on their --cfg-options (the error line is its message)
    for option, suggestion in MISTYPED.items():
        key, _, text = option.partition('=')
        try:
            value = ast.literal_eval(text)
        except ValueError:
            value = text
        with pytest.raises(UserInputError) as caught:
            check_cfg_options(cfg, {key: value})
        assert f"'{key}'" in str(caught.value) and suggestion in str(caught.value), str(caught.value)
    # and through each tool's command line: one line, nothing created
    checkpoint = tmp_path / 'any.pth'
    checkpoint.touch()  # a file is there (the key is checked before the file is read)
    options = list(MISTYPED.items())
    index = list(TASKS).index(task)
    for name, args, (option, suggestion) in (
        ('train', [], options[index]),
        ('test', [checkpoint], options[-1 - index]),
    ):
        argv = (config, *args, '--work-dir', tmp_path / 'work', '--cfg-options', option)
        proc = run_tool(f'{name}.py', *argv, cwd=tmp_path, check=False)
        assert_one_line_error(proc, f"'{option.split('=')[0]}'", suggestion)
    assert not (tmp_path / 'work').exists() and not (tmp_path / 'work_dirs').exists()


def test_unknown_arch_and_a_string_for_a_dict_are_one_line(tmp_path):
    proc = run_tool(
        'train.py', DET, '--work-dir', tmp_path / 'w', '--cfg-options', 'model.backbone.arch=m0_8', check=False
    )
    assert_one_line_error(proc, 'model.backbone.arch=m0_8', "unknown RepViT arch 'm0_8'", 'm0_9')
    proc = run_tool(
        'train.py', CLS, '--work-dir', tmp_path / 'w', '--cfg-options', 'auto_scale_lr=256', check=False
    )  # (auto_scale_lr=dict(base_batch_size=256) is a dict: accepted, see tests/test_options.py)
    assert_one_line_error(proc, 'auto_scale_lr', 'auto_scale_lr.base_batch_size=256')
    assert not (tmp_path / 'w').exists()


def test_valid_keys_pass_including_new_runner_sections():
    from repvit_mm.apis import load_config

    cfg = load_config(
        str(SEG),
        {
            'auto_scale_lr.base_batch_size': 256,
            'env_cfg.mp_cfg.opencv_num_threads': 1,
            'env_cfg.dist_cfg.backend': 'gloo',
            'default_hooks.checkpoint.max_keep_ckpts': 2,
            'train_dataloader.persistent_workers': False,
            'strict_data': True,
            'optim_wrapper.clip_grad': None,
            'model.backbone.arch': 'm1_1',
            'compile.mode': 'max-autotune',
        },
    )
    assert cfg.auto_scale_lr.base_batch_size == 256 and cfg.env_cfg.dist_cfg.backend == 'gloo'
    assert cfg.compile.mode == 'max-autotune'
    cfg = load_config(str(IN1K), {'optim_wrapper.paramwise_cfg.norm_decay_mult': 0.0, 'randomness.seed': 1})
    assert cfg.optim_wrapper.paramwise_cfg.norm_decay_mult == 0.0


def test_runner_sections_a_config_leaves_out_are_added_field_by_field():
    from repvit_mm.utils import UserInputError
    from repvit_mm.utils.config import check_cfg_options

    cfg = Config(dict(default_scope='mmpretrain', model=dict(type='ImageClassifier')))
    options = {'auto_scale_lr.base_batch_size': 256, 'env_cfg.mp_cfg.opencv_num_threads': 0, 'randomness.seed': 3}
    check_cfg_options(cfg, options)
    cfg.merge_from_dict(options)
    assert cfg.auto_scale_lr.base_batch_size == 256 and cfg.env_cfg.mp_cfg.opencv_num_threads == 0
    for bad, suggestion in (
        ('auto_scale_lr.base_bs', 'base_batch_size'),
        ('env_cfg.mp_cfg.threads', 'valid:'),
        ('randomness.sed', "'seed'"),
    ):
        with pytest.raises(UserInputError, match=suggestion):
            check_cfg_options(Config(dict(default_scope='mmpretrain')), {bad: 1})


def test_kwargs_are_followed_to_the_parent_class():
    from mmseg.datasets import ADE20KDataset

    from repvit_mm.segmentation import CheckedLoadAnnotations
    from repvit_mm.utils.option_targets import init_keywords

    assert {'data_root', 'pipeline', 'reduce_zero_label', 'img_suffix'} <= init_keywords(ADE20KDataset)
    assert {'num_classes', 'imdecode_backend', 'backend_args'} <= init_keywords(CheckedLoadAnnotations)

    class Opaque:  # hands **kwargs to something else: anything is accepted
        def __init__(self, a=1, **kwargs):
            self.kwargs = kwargs

    assert init_keywords(Opaque) is None


@pytest.mark.slow
def test_mistyped_keys_from_the_command_line(tmp_path):
    proc = run_tool(
        'train.py',
        CLS,
        '--work-dir',
        tmp_path / 'w',
        '--cfg-options',
        'default_hooks.checkpoint.intervall=1',
        check=False,
    )
    assert_one_line_error(proc, 'default_hooks.checkpoint', "'interval'")
    (tmp_path / 'none.pth').touch()  # a file is there (the key is checked before the file is read)
    proc = run_tool(
        'test.py',
        SEG,
        tmp_path / 'none.pth',
        '--work-dir',
        tmp_path / 'w',
        '--cfg-options',
        'env_cfg.cudnn_benchmrk=True',
        check=False,
    )
    assert_one_line_error(proc, 'env_cfg', "'cudnn_benchmark'")
    assert not (tmp_path / 'w').exists()


# --------------------------------------------------------------------------------------------- schedule length
def test_overriding_max_iters_warns_once_that_the_lr_schedule_still_ends_at_the_old_length(small_shapes, tmp_path):
    """The Shapes classifier decays its lr to iteration 400 (``param_scheduler.1.end=400``): trained for 2
    iterations through tools/train.py, one ``warning:`` line names that end and the new length, and the
    run goes on. Moving the end with it, or not changing the length, prints nothing."""
    data = [f'{s}_dataloader.dataset.data_root={small_shapes / "imagenet"}' for s in ('train', 'val', 'test')]
    short = ['train_dataloader.batch_size=2', 'train_cfg.val_interval=2', 'default_hooks.checkpoint.interval=2']
    proc = run_tool(
        'train.py',
        CLS,
        '--work-dir',
        tmp_path / 'w',
        '--cfg-options',
        *data,
        *short,
        'train_cfg.max_iters=2',
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    warnings = [line for line in proc.stderr.splitlines() if line.startswith('warning:')]
    assert len(warnings) == 1, proc.stderr[-3000:]
    assert 'train_cfg.max_iters=2' in warnings[0] and 'param_scheduler.1.end=400' in warnings[0]
    assert 'param_scheduler.0' not in warnings[0]  # the warm-up ends at 20, not at the loop's end
    assert (tmp_path / 'w' / 'iter_2.pth').is_file()
    for options in (['train_cfg.max_iters=800', 'param_scheduler.1.end=800'], ['train_cfg.max_iters=400'], []):
        proc = run_tool('analysis_tools/print_config.py', CLS, '--cfg-options', *data, *options, check=False)
        assert proc.returncode == 0 and 'warning:' not in proc.stderr + proc.stdout, (options, proc.stderr)
    proc = run_tool('analysis_tools/print_config.py', CLS, '--cfg-options', 'train_cfg.max_iters=800', check=False)
    assert [line for line in proc.stderr.splitlines() if line.startswith('warning:')] == [
        'warning: train_cfg.max_iters=800, but the lr schedule still ends at the old max_iters=400 '
        '(param_scheduler.1.end=400); set the ends (and milestones) for 800 with --cfg-options'
    ]


# --------------------------------------------------------------------------------------------- auto_scale_lr
def test_auto_scale_lr_on_a_shapes_config_scales_the_lr(small_shapes, tmp_path):
    from mmengine.runner import Runner

    from repvit_mm.apis import load_config, prepare_train_cfg

    cfg = load_config(
        str(CLS),
        {
            'train_dataloader.batch_size': 8,
            'train_dataloader.dataset.data_root': str(small_shapes / 'imagenet'),
            'val_dataloader.dataset.data_root': str(small_shapes / 'imagenet'),
        },
    )
    cfg = prepare_train_cfg(cfg, work_dir=str(tmp_path / 'w'), auto_scale_lr=True)
    runner = Runner.from_cfg(cfg)
    optim_wrapper = runner.build_optim_wrapper(runner.optim_wrapper)
    runner.scale_lr(optim_wrapper, runner.auto_scale_lr)
    assert optim_wrapper.param_groups[0]['lr'] == pytest.approx(2e-3 * 8 / 32)


def test_auto_scale_lr_without_base_batch_size_says_how_to_add_it(tmp_path):
    proc = run_tool(
        'train.py',
        CLS,
        '--auto-scale-lr',
        '--work-dir',
        tmp_path / 'w',
        '--cfg-options',
        'auto_scale_lr.enable=False',
        'auto_scale_lr.base_batch_size=None',
        check=False,
    )
    assert_one_line_error(proc, '--auto-scale-lr', 'auto_scale_lr.base_batch_size=N')


# --------------------------------------------------------------------------------------------- images
def _own_keys_rejected(node, path: list[str], scope: str, parent=None) -> list[str]:
    """Keys a config sets that the --cfg-options check would not accept as new keys."""
    from repvit_mm.utils.option_targets import accepted_keys

    rejected = []
    if isinstance(node, dict):
        if path:
            try:
                accepted = accepted_keys(tuple(path), node, scope, parent)
            except KeyError:
                accepted = None
            extra = set(map(str, node)) - (accepted or set(map(str, node))) - {'_scope_', '_delete_'}
            rejected += [f'{".".join(path)}.{key}' for key in sorted(extra)]
        for key, value in node.items():
            rejected += _own_keys_rejected(value, [*path, str(key)], scope, node)
    elif isinstance(node, (list, tuple)):
        for index, value in enumerate(node):
            rejected += _own_keys_rejected(value, [*path, str(index)], scope, node)
    return rejected


ALL_CONFIGS = sorted(
    p for task in ('classification', 'detection', 'segmentation') for p in (CONFIGS / task).glob('*.py')
)
#: One config of each kind runs in the quick test selection; the others with the slow tests.
QUICK_CONFIGS = {
    CLS,
    DET,
    SEG,
    IN1K,
    CONFIGS / 'detection' / 'mask-rcnn_repvit-m1.1_fpn_1x_coco.py',
    CONFIGS / 'segmentation' / 'fpn_repvit-m1.1_8xb4-40k_ade20k-512x512.py',
    CONFIGS / 'classification' / 'repvit-m1.1_8xb256-distill-300e_in1k.py',
}


@pytest.mark.parametrize(
    'config', [pytest.param(p, id=p.stem, marks=() if p in QUICK_CONFIGS else pytest.mark.slow) for p in ALL_CONFIGS]
)
def test_config_loads_images_checked_and_passes_its_own_key_check(config):
    """Every image-loading step of the config resolves to the checked loader under the upstream name, and
    every key the config sets is one the --cfg-options check accepts (no valid key is refused)."""
    from mmengine.registry import TRANSFORMS, DefaultScope

    import repvit_mm  # noqa: F401
    from repvit_mm.utils.image_loading import LoadImageFromFileOrFail

    assert len(ALL_CONFIGS) > 30 and QUICK_CONFIGS <= set(ALL_CONFIGS)
    cfg = Config.fromfile(config)
    for split in ('train', 'val', 'test'):
        pipeline = cfg[f'{split}_dataloader'].dataset.pipeline
        assert pipeline[0].type == 'LoadImageFromFile', split
        with DefaultScope.overwrite_default_scope(cfg.default_scope):
            assert type(TRANSFORMS.build(pipeline[0])) is LoadImageFromFileOrFail, split
    assert not _own_keys_rejected(cfg._cfg_dict.to_dict(), [], cfg.default_scope)


@pytest.mark.parametrize('task', list(TASKS))
def test_corrupt_image_at_test_time_is_one_line(task, data, checkpoints, tmp_path):
    images = {
        'classification': data / 'imagenet' / 'val',
        'detection': data / 'coco' / 'val2017',
        'segmentation': data / 'ade20k' / 'images' / 'validation',
    }[task]
    bad = sorted(p for p in images.rglob('*') if p.is_file())[0]
    bad.write_bytes(b'')
    proc = run_tool(
        'test.py',
        TASKS[task][0],
        checkpoints[task],
        '--work-dir',
        tmp_path / 'w',
        '--cfg-options',
        *data_options(task, data),
        check=False,
    )
    assert_one_line_error(proc, 'corrupt image file', str(bad), 'empty file')
    # segmentation: caught by the pre-flight (headers) before the Runner starts; the others while loading,
    # after which the run's work dir goes again
    assert not (tmp_path / 'w').exists()


@pytest.mark.slow
@pytest.mark.parametrize('task', ['classification', 'detection'])
def test_corrupt_image_at_train_time_is_one_line_also_from_a_worker(task, data, tmp_path):
    images = {'classification': data / 'imagenet' / 'train', 'detection': data / 'coco' / 'train2017'}[task]
    for image in images.rglob('*.*'):
        image.write_bytes(b'\xff\xd8 not a JPEG')
    proc = run_tool(
        'train.py',
        TASKS[task][0],
        '--work-dir',
        tmp_path / 'w',
        '--cfg-options',
        *data_options(task, data),
        'train_dataloader.num_workers=1',
        check=False,
    )
    assert_one_line_error(proc, 'corrupt image file', str(images), 'not a decodable image')
    assert not (tmp_path / 'w').exists()  # the run's work dir goes again: it holds no checkpoint


# --------------------------------------------------------------------------------------------- segmentation
def test_annotation_of_another_size_names_both_files_at_train_and_test(data, checkpoints, tmp_path):
    for split, name, args in (('training', 'train', ()), ('validation', 'test', (checkpoints['segmentation'],))):
        annotation = sorted((data / 'ade20k' / 'annotations' / split).glob('*.png'))[0]
        labels = np.asarray(Image.open(annotation))
        Image.fromarray(labels[:-8]).save(annotation)
        image = data / 'ade20k' / 'images' / split / annotation.with_suffix('.jpg').name
        proc = run_tool(
            f'{name}.py',
            SEG,
            *args,
            '--work-dir',
            tmp_path / 'w',
            '--cfg-options',
            *data_options('segmentation', data),
            check=False,
        )
        assert_one_line_error(proc, str(annotation), str(image), '128x120', '128x128')
        assert not (tmp_path / 'w').exists()


def test_checked_load_annotations_compares_with_the_image_when_loading(tmp_path):
    from repvit_mm.segmentation import CheckedLoadAnnotations
    from repvit_mm.utils import UserInputError

    Image.fromarray(np.ones((20, 30), np.uint8)).save(tmp_path / 'a.png')
    results = dict(
        seg_map_path=str(tmp_path / 'a.png'),
        img_path='a.jpg',
        ori_shape=(20, 32),
        seg_fields=[],
        reduce_zero_label=False,
    )
    with pytest.raises(UserInputError, match=r'a.png is 30x20 but its image a.jpg is 32x20'):
        CheckedLoadAnnotations(num_classes=4)(results)
    (tmp_path / 'b.png').write_bytes(b'')
    with pytest.raises(UserInputError, match=r'corrupt annotation file: .*b.png \(empty file\)'):
        CheckedLoadAnnotations(num_classes=4)(dict(results, seg_map_path=str(tmp_path / 'b.png')))


# --------------------------------------------------------------------------------------------- COCO boxes
def _break_boxes(coco: Path) -> list[int]:
    ann_file = coco / 'annotations' / 'instances_train2017.json'
    doc = json.loads(ann_file.read_text())
    anns = doc['annotations']
    anns[0]['bbox'][2] = -3.0  # negative width
    anns[1]['bbox'][0] = 1000.0  # right of the image
    anns[2]['segmentation'] = [[]]  # empty polygon
    ann_file.write_text(json.dumps(doc))
    return [anns[i]['id'] for i in range(3)]


def test_invalid_coco_boxes_are_one_warning_or_an_error_with_strict_data(data, capsys, tmp_path):
    from repvit_mm.utils.config import load_config
    from repvit_mm.utils.data_checks import check_datasets

    ids = _break_boxes(data / 'coco')
    cfg = load_config(str(DET), {'train_dataloader.dataset.data_root': str(data / 'coco')})
    capsys.readouterr()
    check_datasets(cfg, ('train',))
    warnings = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(warnings) == 1 and warnings[0].startswith('warning:'), warnings
    assert '3 of' in warnings[0] and ', '.join(map(str, ids)) in warnings[0]
    assert 'non-positive size: 1' in warnings[0] and 'outside the image: 1' in warnings[0]
    assert 'empty polygon: 1' in warnings[0]
    proc = run_tool(
        'train.py',
        DET,
        '--strict-data',
        '--work-dir',
        tmp_path / 'w',
        '--cfg-options',
        *data_options('detection', data),
        check=False,
    )
    assert_one_line_error(proc, 'instances_train2017.json', '3 of', str(ids[0]), 'strict')
    proc = run_tool(
        'train.py',
        DET,
        '--work-dir',
        tmp_path / 'w',
        '--cfg-options',
        *data_options('detection', data),
        'strict_data=True',
        check=False,
    )
    assert_one_line_error(proc, 'instances_train2017.json', '3 of')
    assert not (tmp_path / 'w').exists()


# --------------------------------------------------------------------------------------------- launchers
TORCHRUN_ENV = ('RANK', 'LOCAL_RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT')
SLURM_ENV = ('SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_NODELIST', 'SLURM_LOCALID')


def test_launcher_without_its_environment_is_one_line(small_shapes, tmp_path, monkeypatch):
    for name in TORCHRUN_ENV + SLURM_ENV:
        monkeypatch.delenv(name, raising=False)
    options = ['--cfg-options', *data_options('classification', small_shapes)]
    proc = run_tool('train.py', CLS, '--launcher', 'pytorch', '--work-dir', tmp_path / 'w', *options, check=False)
    assert_one_line_error(proc, '--launcher pytorch', 'RANK', 'torchrun', 'tools/dist_train.sh')
    proc = run_tool(
        'train.py',
        SEG,
        '--launcher',
        'slurm',
        '--work-dir',
        tmp_path / 'w',
        '--cfg-options',
        *data_options('segmentation', small_shapes),
        check=False,
    )
    assert_one_line_error(proc, '--launcher slurm', 'SLURM_PROCID', 'srun')
    assert not (tmp_path / 'w').exists()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason='the gloo fallback is for nodes without GPUs')
def test_slurm_launcher_trains_on_a_cpu_node(small_shapes, tmp_path, monkeypatch):
    env = {
        'SLURM_PROCID': '0',
        'SLURM_NTASKS': '1',
        'SLURM_NODELIST': 'localhost',
        'SLURM_LOCALID': '0',
        'MASTER_ADDR': '127.0.0.1',
        'MASTER_PORT': str(_free_port()),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for name in ('RANK', 'LOCAL_RANK', 'WORLD_SIZE'):
        monkeypatch.delenv(name, raising=False)
    proc = run_tool(
        'train.py',
        CLS,
        '--launcher',
        'slurm',
        '--work-dir',
        tmp_path / 'w',
        '--cfg-options',
        *data_options('classification', small_shapes),
        'default_hooks.checkpoint.save_best=None',
    )
    assert (tmp_path / 'w' / 'iter_1.pth').is_file(), proc.stderr[-3000:]
    logs = ''.join(p.read_text() for p in (tmp_path / 'w').rglob('*.log'))
    assert 'Distributed launcher: slurm' in logs and 'Distributed training: True' in logs
    assert "dist_cfg: {'backend': 'gloo'}" in logs


# --------------------------------------------------------------------------------------------- Shapes data
@pytest.mark.parametrize('task', list(TASKS))
def test_missing_shapes_data_says_how_to_make_it(task, tmp_path):
    proc = run_tool('train.py', TASKS[task][0], cwd=tmp_path, check=False)
    assert_one_line_error(proc, 'not found', 'python tools/make_shapes.py data/shapes')
    assert not (tmp_path / 'work_dirs').exists()
    assert os.listdir(tmp_path) == []
