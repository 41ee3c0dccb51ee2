"""Train and test any repvit-mm config (classification, detection, segmentation) with mmengine's Runner.

The config's ``default_scope`` (mmpretrain, mmdet or mmseg) decides which registries the Runner uses;
these functions only apply the command-line choices the tools offer.
"""
from __future__ import annotations

import os
import os.path as osp

import torch
from mmengine.config import Config
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from ..engine.precision import amp_twin, fp32_optim_wrapper
from ..utils.data_checks import check_datasets
from ..utils.errors import UserInputError
from ..utils.safe_checkpoint import safe_torch_load


def _default_work_dir(cfg: Config) -> str:
    return osp.join('./work_dirs', osp.splitext(osp.basename(cfg.filename))[0])


def _check_checkpoint(path: str) -> None:
    """Fail before the Runner starts (and writes logs) when a checkpoint cannot be loaded."""
    if not osp.isfile(path):
        raise UserInputError(f'checkpoint not found: {path}')
    if not os.access(path, os.R_OK):
        raise UserInputError(f'checkpoint not readable: {path}')
    safe_torch_load(path, map_location='cpu')


def _pretrained_paths(node) -> list[str]:
    """Local checkpoint files named by ``init_cfg=dict(type='Pretrained', checkpoint=...)`` anywhere."""
    found = []
    if isinstance(node, dict):
        init = node.get('init_cfg')
        for item in init if isinstance(init, list) else [init]:
            if isinstance(item, dict) and item.get('type') == 'Pretrained' and item.get('checkpoint'):
                found.append(str(item['checkpoint']))
        for value in node.values():
            found += _pretrained_paths(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            found += _pretrained_paths(value)
    return found


def _check_pretrained(cfg: Config) -> None:
    """A missing pretrained (or distillation teacher) file would otherwise fail only after the Runner has
    created its work dir."""
    teacher = cfg.model.get('teacher') or {}
    if teacher.get('checkpoint') and not teacher.get('random_init') and not osp.isfile(teacher.checkpoint):
        raise UserInputError(f'teacher checkpoint not found: {teacher.checkpoint} (set it with --cfg-options '
                             'model.teacher.checkpoint=PATH)')
    for path in _pretrained_paths(cfg.model):
        if '://' not in path and not osp.isfile(path):
            raise UserInputError(f'pretrained checkpoint not found: {path} (model init_cfg; set it with '
                                 '--cfg-options model.backbone.init_cfg.checkpoint=PATH)')


def _use_amp(cfg: Config) -> None:
    """Swap the optim wrapper for its mixed-precision twin (``OptimWrapper`` -> ``AmpOptimWrapper``,
    ``AGCOptimWrapper`` -> ``AmpAGCOptimWrapper``)."""
    from mmengine.registry import OPTIM_WRAPPERS
    if not torch.cuda.is_available():
        raise UserInputError('--amp needs a CUDA GPU (mmengine\'s AmpOptimWrapper runs on GPUs only)')
    wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
    if wrapper.startswith('Amp'):
        return
    if OPTIM_WRAPPERS.get(amp_twin(wrapper)) is None:
        raise UserInputError(f'--amp: the config\'s optim_wrapper {wrapper} has no mixed-precision '
                             f'variant ({amp_twin(wrapper)} is not registered)')
    cfg.optim_wrapper.type = amp_twin(wrapper)
    cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')


def _use_fp32(cfg: Config) -> None:
    """Swap a mixed-precision optim wrapper for its fp32 twin (``AmpAGCOptimWrapper`` -> ``AGCOptimWrapper``)."""
    cfg.optim_wrapper = fp32_optim_wrapper(cfg.optim_wrapper)


def _use_launcher(cfg: Config, launcher: str) -> None:
    cfg.launcher = launcher
    if launcher == 'none' or torch.cuda.is_available():
        return
    # CPU-only distributed run (e.g. torchrun on a laptop or CI): gloo instead of nccl, and a DDP wrapper
    # that does not pin the model to a GPU.
    cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = 'gloo'
    if cfg.get('model_wrapper_cfg') is None:
        cfg.model_wrapper_cfg = dict(type='CPUDistributedDataParallel',
                                     find_unused_parameters=cfg.get('find_unused_parameters', False))


def prepare_train_cfg(cfg: Config, *, work_dir: str | None = None, resume: str | None = None,
                      amp: bool | None = None, launcher: str = 'none', auto_scale_lr: bool = False) -> Config:
    """Apply the ``tools/train.py`` options to a loaded config.

    Args:
        resume: ``'auto'`` resumes from the latest checkpoint in the work dir, a path resumes from that file.
        amp: ``True`` trains in mixed precision (needs a GPU), ``False`` in fp32, ``None`` as the config says
            (the ImageNet configs: mixed precision where CUDA is present, fp32 on a CPU).
        auto_scale_lr: scale the learning rate by (actual total batch) / ``auto_scale_lr.base_batch_size``.
    """
    cfg.work_dir = work_dir or cfg.get('work_dir') or _default_work_dir(cfg)
    if resume is not None:
        cfg.resume = True
        if resume == 'auto':
            cfg.load_from = None
        else:
            _check_checkpoint(resume)
            cfg.load_from = resume
    elif cfg.get('load_from'):
        _check_checkpoint(cfg.load_from)
    if amp:
        _use_amp(cfg)
    elif amp is False:
        _use_fp32(cfg)
    if auto_scale_lr:
        if 'auto_scale_lr' not in cfg or 'base_batch_size' not in cfg.auto_scale_lr:
            raise UserInputError(f'--auto-scale-lr: {cfg.filename} has no auto_scale_lr.base_batch_size')
        cfg.auto_scale_lr.enable = True
    _use_launcher(cfg, launcher)
    check_datasets(cfg, ('train', 'val') if cfg.get('val_cfg') is not None else ('train',))
    _check_pretrained(cfg)  # init_weights runs before a checkpoint is loaded or resumed, too
    return cfg


def _show_predictions(cfg: Config, show_dir: str) -> None:
    """Switch on the framework's own visualization hook, drawing every test prediction into ``show_dir``
    (mmseg's hook saves through the visualizer: ``show_dir/vis_data/vis_image/``)."""
    show_dir = osp.abspath(show_dir)
    if osp.exists(show_dir) and not osp.isdir(show_dir):
        raise UserInputError(f'--show-dir {show_dir} is a file')
    hooks = cfg.setdefault('default_hooks', {})
    scope = cfg.get('default_scope')
    if scope == 'mmpretrain':
        hooks['visualization'] = dict(type='VisualizationHook', enable=True, interval=1, out_dir=show_dir)
    elif scope == 'mmdet':
        hooks['visualization'] = dict(type='DetVisualizationHook', draw=True, interval=1, test_out_dir=show_dir)
    elif scope == 'mmseg':
        hooks['visualization'] = dict(type='SegVisualizationHook', draw=True, interval=1)
        cfg.visualizer['save_dir'] = show_dir
    else:
        raise UserInputError(f'--show-dir: no visualization hook known for default_scope {scope!r}')


def prepare_test_cfg(cfg: Config, checkpoint: str, *, work_dir: str | None = None, launcher: str = 'none',
                     deploy: bool = False, out: str | None = None, show_dir: str | None = None) -> Config:
    """Apply the ``tools/test.py`` options to a loaded config.

    Args:
        deploy: evaluate the reparameterized (BN-fused) model: the checkpoint is loaded into the training
            structure and fused before the first test batch.
        out: also dump the raw predictions to this pickle file (mmengine ``DumpResults``).
        show_dir: also draw every prediction into this folder (the framework's visualization hook).
    """
    _check_checkpoint(checkpoint)
    cfg.work_dir = work_dir or cfg.get('work_dir') or _default_work_dir(cfg)
    # The authors' release files and timm state dicts are converted to our layout (classifiers only).
    from ..classification.released import resolve_released_checkpoint
    checkpoint = resolve_released_checkpoint(checkpoint, cfg)
    cfg.load_from = checkpoint
    cfg.resume = False
    if deploy:
        cfg.custom_hooks = [*cfg.get('custom_hooks', []), dict(type='ReparameterizeHook')]
    if out is not None:
        if osp.exists(out):
            raise UserInputError(f'--out {out} already exists; not overwriting it')
        if not out.endswith(('.pkl', '.pickle')):
            raise UserInputError(f'--out must be a .pkl file, got {out}')
        dump = dict(type='DumpResults', out_file_path=out)
        evaluators = cfg.test_evaluator if isinstance(cfg.test_evaluator, list) else [cfg.test_evaluator]
        cfg.test_evaluator = [*evaluators, dump]
    if show_dir is not None:
        _show_predictions(cfg, show_dir)
    _use_launcher(cfg, launcher)
    check_datasets(cfg, ('test',))
    return cfg


def _init_cpu_process_group(cfg: Config) -> None:
    """Join torchrun's process group with gloo ourselves when there is no GPU: mmengine's ``init_dist``
    calls ``torch.cuda.set_device`` first, which fails on a CPU-only machine."""
    if cfg.get('launcher', 'none') != 'pytorch' or torch.cuda.is_available():
        return
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend='gloo')


def build_runner(cfg: Config) -> Runner:
    """The Runner the config asks for (``runner_type``), else mmengine's default one."""
    _init_cpu_process_group(cfg)
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)


def train(cfg: Config) -> Runner:
    runner = build_runner(cfg)
    runner.train()
    return runner


def test(cfg: Config) -> dict:
    runner = build_runner(cfg)
    return runner.test()
