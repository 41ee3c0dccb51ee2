"""``--cfg-options`` are checked against what consumes them, whether or not the config has the key yet.

The common options of mmpretrain's / mmdet's / mmseg's docs (gradient clipping, starting a backbone from a
file, an extra hook, loss fields, ``auto_scale_lr``, ``KEY=dict(...)``) are accepted and shown to take effect
in the Runner, model and optimizer they build; mistakes are one ``error:`` line naming the real problem,
before a work dir exists.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import CONFIGS, assert_one_line_error, run_tool

CLS = CONFIGS / 'classification' / 'repvit-m0.9_shapes-64px.py'
SEG = CONFIGS / 'segmentation' / 'fpn_repvit-m0.9_shapes.py'


@pytest.fixture(scope='module')
def backbone_file(tmp_path_factory) -> Path:
    """A RepViT-M0.9 backbone state dict with recognisable weights, saved as a user's own file."""
    from repvit_mm.models.backbones import RepViT

    backbone = RepViT(arch='m0_9')
    with torch.no_grad():
        for i, param in enumerate(backbone.parameters()):
            param.fill_(0.001 * (i % 7 + 1))
    path = tmp_path_factory.mktemp('pretrained') / 'my_backbone.pth'
    torch.save({'state_dict': backbone.state_dict()}, path)
    return path


def cls_options(root: Path) -> dict:
    data = str(root / 'imagenet')
    return {
        'train_dataloader.dataset.data_root': data,
        'val_dataloader.dataset.data_root': data,
        'test_dataloader.dataset.data_root': data,
        'train_dataloader.batch_size': 2,
        'train_dataloader.num_workers': 0,
        'val_dataloader.num_workers': 0,
        'train_cfg.max_iters': 1,
        'train_cfg.val_interval': 1,
    }


def build(config: Path, options: dict, work_dir: Path):
    from repvit_mm.apis import build_runner, load_config, prepare_train_cfg

    return build_runner(prepare_train_cfg(load_config(str(config), options), work_dir=str(work_dir)))


# ------------------------------------------------------------------------------------- accepted, in effect
def test_options_the_config_lacks_take_effect_in_the_runner(tiny_shapes, backbone_file, tmp_path):
    from mmengine.hooks import EarlyStoppingHook
    from mmpretrain.models.losses import LabelSmoothLoss

    options = {
        **cls_options(tiny_shapes),
        'optim_wrapper.clip_grad.max_norm': 1.0,
        'model.backbone.init_cfg.type': 'Pretrained',
        'model.backbone.init_cfg.checkpoint': str(backbone_file),
        'default_hooks.early_stopping.type': 'EarlyStoppingHook',
        'default_hooks.early_stopping.monitor': 'accuracy/top1',
        'default_hooks.early_stopping.rule': 'greater',
        'model.head.loss.type': 'LabelSmoothLoss',
        'model.head.loss.label_smooth_val': 0.1,
        'auto_scale_lr.base_batch_size': 64,
    }
    runner = build(CLS, options, tmp_path / 'work')
    optim_wrapper = runner.build_optim_wrapper(runner.optim_wrapper)
    assert optim_wrapper.clip_grad_kwargs == {'max_norm': 1.0}
    assert runner.auto_scale_lr == {'base_batch_size': 64}
    hooks = [h for h in runner.hooks if isinstance(h, EarlyStoppingHook)]
    assert len(hooks) == 1 and hooks[0].monitor == 'accuracy/top1'
    loss = runner.model.head.loss_module
    assert isinstance(loss, LabelSmoothLoss) and loss.label_smooth_val == 0.1
    # the backbone starts from the user's file (init_weights is where mmengine applies init_cfg)
    runner.model.init_weights()
    expected = torch.load(backbone_file, weights_only=True)['state_dict']
    own = runner.model.backbone.state_dict()
    assert all(torch.equal(own[k], v) for k, v in expected.items())


def test_a_dict_value_on_the_command_line_is_the_same_as_its_fields(tiny_shapes, backbone_file, tmp_path):
    def merged(
        *options: str,
    ) -> str:  # the config the command line gives, as tools/analysis_tools/print_config.py shows it
        return run_tool('analysis_tools/print_config.py', CLS, '--cfg-options', *options).stdout

    as_dict = merged(f'model.backbone.init_cfg=dict(type=Pretrained, checkpoint={backbone_file}, prefix=)')
    flat = ''.join(as_dict.split())  # (long lines are wrapped)
    assert f"checkpoint='{backbone_file}'" in flat and "prefix=''" in flat and "type='Pretrained'" in flat
    fields = ('type=Pretrained', f'checkpoint={backbone_file}', 'prefix=')
    assert as_dict == merged(*(f'model.backbone.init_cfg.{field}' for field in fields))
    as_dict = merged('optim_wrapper=dict(clip_grad=dict(max_norm=2,norm_type=1),accumulative_counts=1)')
    fields = ('clip_grad.max_norm=2', 'clip_grad.norm_type=1', 'accumulative_counts=1')
    assert as_dict == merged(*(f'optim_wrapper.{field}' for field in fields))
    assert 'clip_grad=dict(max_norm=2, norm_type=1)' in as_dict
    nested = {'optim_wrapper': {'clip_grad': {'max_norm': 2, 'norm_type': 1}, 'accumulative_counts': 1}}
    from repvit_mm.apis import load_config

    cfg = load_config(str(CLS), {**cls_options(tiny_shapes), **nested})
    assert cfg.optim_wrapper.clip_grad == {'max_norm': 2, 'norm_type': 1}
    assert cfg.optim_wrapper.optimizer.type == 'AdamW'  # merged into the config's dict, not replacing it
    runner = build(CLS, {**cls_options(tiny_shapes), **nested}, tmp_path / 'work')
    assert runner.build_optim_wrapper(runner.optim_wrapper).clip_grad_kwargs == {'max_norm': 2, 'norm_type': 1}


def test_a_field_of_a_default_dict_refines_the_default(tiny_shapes, tmp_path):
    """The Shapes head leaves ``loss`` to the head's default (CrossEntropyLoss): setting one field keeps it."""
    from mmpretrain.models.losses import CrossEntropyLoss

    runner = build(CLS, {**cls_options(tiny_shapes), 'model.head.loss.loss_weight': 0.5}, tmp_path / 'work')
    loss = runner.model.head.loss_module
    assert isinstance(loss, CrossEntropyLoss) and loss.loss_weight == 0.5


def test_segmentation_options_from_mmsegs_docs_are_accepted():
    from repvit_mm.apis import load_config

    cfg = load_config(
        str(SEG),
        {
            'model.decode_head.loss_decode.loss_weight': 0.4,
            'optim_wrapper.clip_grad.max_norm': 35,
            'optim_wrapper.clip_grad.norm_type': 2,
            'default_hooks.checkpoint.max_keep_ckpts': 1,
            'auto_scale_lr.base_batch_size': 16,
        },
    )
    assert cfg.model.decode_head.loss_decode.loss_weight == 0.4
    assert cfg.optim_wrapper.clip_grad == {'max_norm': 35, 'norm_type': 2}


@pytest.mark.slow
def test_train_tool_runs_with_the_new_sections(tiny_shapes, backbone_file, tmp_path):
    work = tmp_path / 'work'
    options = [f'{k}={v}' for k, v in cls_options(tiny_shapes).items()]
    run_tool(
        'train.py',
        CLS,
        '--work-dir',
        work,
        '--cfg-options',
        *options,
        'optim_wrapper.clip_grad.max_norm=1.0',
        f'model.backbone.init_cfg=dict(type=Pretrained,checkpoint={backbone_file})',
        'default_hooks.early_stopping=dict(type=EarlyStoppingHook,monitor=accuracy/top1,rule=greater)',
        'model.head.loss.type=LabelSmoothLoss',
        'model.head.loss.label_smooth_val=0.1',
        'default_hooks.checkpoint.interval=1',
        'default_hooks.logger.interval=1',
    )
    log = next(work.rglob('*.log')).read_text()
    assert 'grad_norm' in log  # mmengine logs the norm where clip_grad is set
    assert f'load model from: {backbone_file}' in log
    assert (work / 'iter_1.pth').is_file()


# ------------------------------------------------------------------------------------------- refused
REFUSED = {
    # a typo in a new section's field: the consumer's names
    'optim_wrapper.clip_grad.max_nrom=1': ["'max_nrom'", "'max_norm'"],
    # a new dict a registry builds needs its type
    'model.backbone.init_cfg.checkpoint=x.pth': ['model.backbone.init_cfg', 'type', 'init_cfg.type='],
    'default_hooks.early_stopping.monitor=accuracy/top1': ['default_hooks.early_stopping', 'type'],
    # an unknown type, with the registered names closest to it
    'default_hooks.early_stopping.type=EarlyStopingHook': ["'EarlyStopingHook'", "'EarlyStoppingHook'"],
    'model.backbone.type=RepVit': ["'RepVit'", "'RepViT'"],
    # what the class cannot do without
    'default_hooks.early_stopping.type=EarlyStoppingHook': ['EarlyStoppingHook', 'needs monitor'],
    'optim_wrapper.clip_grad.type=value': ['clip_grad', 'clip_value'],
    # a field of another class than the one the config (or the head's default) uses: which class takes it
    'model.head.loss.label_smooth_val=0.1': ['CrossEntropyLoss', "'label_smooth_val'", 'LabelSmoothLoss takes it'],
    # a word where the consumer takes a number
    'optim_wrapper.optimizer.lr=abc': ['lr=abc', 'AdamW takes a number'],
    # the top level: what the Runner reads
    'traincfg.max_iters=2': ["'traincfg'", "'train_cfg'"],
    # unbalanced dict(...)
    'model.backbone.init_cfg=dict(type=Pretrained': ['unbalanced'],
}


@pytest.mark.parametrize('option', list(REFUSED))
def test_a_mistaken_option_is_one_line_before_a_work_dir(option, tmp_path):
    (tmp_path / 'any.pth').touch()  # test.py: the options are checked before the checkpoint is read
    for tool, checkpoint in (('train', []), ('test', [tmp_path / 'any.pth'])):
        argv = (CLS, *checkpoint, '--work-dir', tmp_path / 'work', '--cfg-options', option)
        proc = run_tool(f'{tool}.py', *argv, check=False)
        assert_one_line_error(proc, *REFUSED[option])
    assert not (tmp_path / 'work').exists()


def test_sections_table_is_the_one_place_of_typeless_sections():
    """Every typeless section the Runner reads is in the one table, and each answers its keys."""
    from repvit_mm.utils.option_targets import SECTIONS

    for path in [(), ('train_cfg',), ('optim_wrapper', 'clip_grad'), ('env_cfg', 'mp_cfg'), ('auto_scale_lr',)]:
        assert path in SECTIONS
    assert 'max_norm' in SECTIONS[('optim_wrapper', 'clip_grad')].keys({}, 'mmpretrain', {})
    assert 'clip_value' in SECTIONS[('optim_wrapper', 'clip_grad')].keys({'type': 'value'}, 'mmpretrain', {})
    # AGCOptimWrapper reads clip_grad its own way (clip_factor): not judged by torch's clipping functions
    assert SECTIONS[('optim_wrapper', 'clip_grad')].keys({}, 'mmpretrain', {'type': 'AGCOptimWrapper'}) is None
