"""Train and test any repvit-mm config (classification, detection, segmentation) with mmengine's Runner.

The config's ``default_scope`` (mmpretrain, mmdet or mmseg) decides which registries the Runner uses;
these functions only apply the command-line choices the tools offer.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os.path as osp
import shutil
import signal
from collections.abc import Iterator

import torch
from mmengine.config import Config
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from ..engine.precision import amp_twin, fp32_optim_wrapper
from ..models.build import build_model
from ..models.checkpoints import allow_head_reinit, fit_checkpoint, read_checkpoint
from ..utils.config import check_num_classes
from ..utils.data_checks import check_datasets
from ..utils.errors import UserInputError
from ..utils.outputs import check_writable
from ..utils.paths import is_remote
from .launchers import check_launcher_env, init_cpu_process_group
from .workdir import (
    TrainingInterrupted,
    WorkDirLocked,
    check_work_dir,
    disk_full,
    last_complete_checkpoint,
    signals_as_interrupts,
    take_notes,
    work_dir_lock,
)


def _default_work_dir(cfg: Config) -> str:
    return osp.join('./work_dirs', osp.splitext(osp.basename(cfg.filename))[0])


def _check_train_checkpoints(cfg: Config) -> None:
    """Load every checkpoint the training run will load into a model built from the config -- the
    resumed checkpoint, ``load_from``, ``init_cfg`` Pretrained weights, the distillation teacher -- so
    that one that does not fit fails before the Runner creates the work dir (the Runner reads them again)."""
    resume_from = None
    if cfg.get('resume'):
        resume_from = cfg.get('load_from') or _last_checkpoint(cfg.work_dir)
    load_from = None if cfg.get('resume') else cfg.get('load_from')
    teacher = (cfg.model.get('teacher') or {}).get('checkpoint')
    pretrained = _pretrained_paths(cfg.model)
    if not (resume_from or load_from or pretrained or teacher):
        return
    model = build_model(cfg, teacher=bool(teacher))  # the teacher's weights are loaded (and checked) here
    if pretrained:
        model.init_weights()  # init_cfg Pretrained: strict, heads of another shape re-initialised
    if resume_from:
        ckpt = read_checkpoint(resume_from)
        if not ckpt.is_training_checkpoint:
            raise UserInputError(
                f'--resume {resume_from}: not a training checkpoint (no meta.epoch / meta.iter / '
                'message_hub); --resume continues a run that tools/train.py saved. To start from these '
                f'weights instead: --cfg-options load_from={resume_from}'
            )
        fit_checkpoint(model, ckpt)
    elif load_from:
        fit_checkpoint(model, read_checkpoint(load_from), finetune=True)


def _last_checkpoint(work_dir: str) -> str | None:
    """The checkpoint ``work_dir/last_checkpoint`` names (``--resume`` without a file), if any."""
    pointer = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(pointer):
        return None
    with open(pointer) as f:
        path = f.read().strip()
    if not is_remote(path) and not osp.isfile(path):
        raise UserInputError(
            f'{pointer} names {path or "nothing"}, which does not exist; resume from a '
            f'checkpoint of {work_dir} with --resume FILE'
        )
    return path


def _check_test_checkpoint(cfg: Config, checkpoint: str) -> bool:
    """Check that ``checkpoint`` fits the config's model (any known layout); whether it is fused."""
    ckpt = read_checkpoint(checkpoint)
    return fit_checkpoint(build_model(cfg), ckpt, accept_fused=True).fused


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
        raise UserInputError(
            f'teacher checkpoint not found: {teacher.checkpoint} (set it with --cfg-options '
            'model.teacher.checkpoint=PATH)'
        )
    for path in _pretrained_paths(cfg.model):
        if not is_remote(path) and not osp.isfile(path):
            raise UserInputError(
                f'pretrained checkpoint not found: {path} (model init_cfg; set it with '
                '--cfg-options model.backbone.init_cfg.checkpoint=PATH)'
            )


def _use_amp(cfg: Config) -> None:
    """Swap the optim wrapper for its mixed-precision twin (``OptimWrapper`` -> ``AmpOptimWrapper``,
    ``AGCOptimWrapper`` -> ``AmpAGCOptimWrapper``)."""
    from mmengine.registry import OPTIM_WRAPPERS

    if not torch.cuda.is_available():
        raise UserInputError("--amp needs a CUDA GPU (mmengine's AmpOptimWrapper runs on GPUs only)")
    wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
    if wrapper.startswith('Amp'):
        return
    if OPTIM_WRAPPERS.get(amp_twin(wrapper)) is None:
        raise UserInputError(
            f"--amp: the config's optim_wrapper {wrapper} has no mixed-precision "
            f'variant ({amp_twin(wrapper)} is not registered)'
        )
    cfg.optim_wrapper.type = amp_twin(wrapper)
    cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')


def _use_fp32(cfg: Config) -> None:
    """Swap a mixed-precision optim wrapper for its fp32 twin (``AmpAGCOptimWrapper`` -> ``AGCOptimWrapper``)."""
    cfg.optim_wrapper = fp32_optim_wrapper(cfg.optim_wrapper)


def _use_launcher(cfg: Config, launcher: str) -> None:
    cfg.launcher = launcher
    check_launcher_env(launcher)
    if launcher == 'none' or torch.cuda.is_available():
        return
    # CPU-only distributed run (e.g. torchrun on a laptop or CI): gloo instead of nccl, and a DDP wrapper
    # that does not pin the model to a GPU.
    cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})['backend'] = 'gloo'
    if cfg.get('model_wrapper_cfg') is None:
        cfg.model_wrapper_cfg = dict(
            type='CPUDistributedDataParallel', find_unused_parameters=cfg.get('find_unused_parameters', False)
        )


def prepare_train_cfg(
    cfg: Config,
    *,
    work_dir: str | None = None,
    resume: str | None = None,
    amp: bool | None = None,
    launcher: str = 'none',
    auto_scale_lr: bool = False,
    strict_data: bool = False,
    force: bool = False,
) -> Config:
    """Apply the ``tools/train.py`` options to a loaded config.

    Args:
        resume: ``'auto'`` resumes from the latest checkpoint in the work dir (the one ``last_checkpoint``
            names, else the newest complete ``iter_N.pth``), a path resumes from that file.
        amp: ``True`` trains in mixed precision (needs a GPU), ``False`` in fp32, ``None`` as the config says
            (the ImageNet configs: mixed precision where CUDA is present, fp32 on a CPU).
        auto_scale_lr: scale the learning rate by (actual total batch) / ``auto_scale_lr.base_batch_size``.
        strict_data: data the loaders would partly drop (invalid COCO boxes) is an error, not a warning
            (also ``strict_data = True`` in the config).
        force: train into a work dir that holds an earlier run's checkpoints; they are kept, this run's
            checkpoints go to its own folder (:func:`~repvit_mm.apis.workdir.check_work_dir`).

    Raises:
        UserInputError: among others, the work dir holds an earlier run's checkpoints (without ``force``)
            or another training holds its lock.
    """
    cfg.work_dir = work_dir or cfg.get('work_dir') or _default_work_dir(cfg)
    check_writable(cfg.work_dir, 'work dir')
    if resume is not None:
        cfg.resume = True
        cfg.load_from = None if resume == 'auto' else resume
    if cfg.get('load_from') and not is_remote(cfg.load_from) and not osp.isfile(cfg.load_from):
        raise UserInputError(f'checkpoint not found: {cfg.load_from}')  # before the (slower) data checks
    if amp:
        _use_amp(cfg)
    elif amp is False:
        _use_fp32(cfg)
    if auto_scale_lr:
        if not isinstance(cfg.get('auto_scale_lr'), dict) or not cfg.auto_scale_lr.get('base_batch_size'):
            raise UserInputError(
                f'--auto-scale-lr: {cfg.filename} has no auto_scale_lr.base_batch_size (the total '
                'batch size its lr is meant for); add it with --cfg-options '
                'auto_scale_lr.base_batch_size=N'
            )
        cfg.auto_scale_lr.enable = True
    _use_launcher(cfg, launcher)
    check_work_dir(cfg, force=force)
    cfg.strict_data = strict_data or cfg.get('strict_data', False)
    check_datasets(cfg, ('train', 'val') if cfg.get('val_cfg') is not None else ('train',))
    check_num_classes(cfg)
    _check_pretrained(cfg)  # init_weights runs before a checkpoint is loaded or resumed, too
    _check_train_checkpoints(cfg)
    return cfg


def _show_predictions(cfg: Config, show_dir: str) -> None:
    """Switch on the framework's own visualization hook, drawing every test prediction into ``show_dir``
    (mmseg's hook saves through the visualizer: ``show_dir/vis_data/vis_image/``). The framework's default
    visualizer becomes ours that first enlarges small images (short side 256 px, as tools/demo.py draws)."""
    show_dir = osp.abspath(show_dir)
    if osp.exists(show_dir) and not osp.isdir(show_dir):
        raise UserInputError(f'--show-dir {show_dir} is a file')
    check_writable(show_dir, '--show-dir')
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
    upstream = {'mmpretrain': 'UniversalVisualizer', 'mmdet': 'DetLocalVisualizer', 'mmseg': 'SegLocalVisualizer'}
    if cfg.get('visualizer') and cfg.visualizer.get('type') == upstream[scope]:  # a visualizer of one's own stays
        cfg.visualizer['type'] = f'Enlarging{upstream[scope]}'


def prepare_test_cfg(
    cfg: Config,
    checkpoint: str | None,
    *,
    work_dir: str | None = None,
    launcher: str = 'none',
    deploy: bool = False,
    out: str | None = None,
    show_dir: str | None = None,
    strict_data: bool = False,
) -> Config:
    """Apply the ``tools/test.py`` options to a loaded config.

    Args:
        checkpoint: ours, a fused (deploy) one -- then the fused model is evaluated, with or without
            ``deploy`` --, the authors' ImageNet / COCO / ADE20K release or a timm state dict: converted in
            memory; it must fit the config's model exactly. None: the config's model carries its own
            weights (an exported file, :func:`repvit_mm.deploy.ort_model.onnx_test_cfg`).
        deploy: evaluate the reparameterized (BN-fused) model: the checkpoint is loaded into the training
            structure and fused before the first test batch.
        out: also dump the raw predictions to this pickle file (mmengine ``DumpResults``).
        show_dir: also draw every prediction into this folder (the framework's visualization hook).
        strict_data: data the loaders would partly drop is an error, not a warning.
    """
    if isinstance(cfg.get('model'), dict) and cfg.model.get('teacher') is not None:
        cfg.model.teacher = None  # evaluating a distillation config needs no teacher
    cfg.work_dir = work_dir or cfg.get('work_dir') or _default_work_dir(cfg)
    check_writable(cfg.work_dir, 'work dir')
    fused = checkpoint is not None and _check_test_checkpoint(cfg, checkpoint)
    cfg.load_from = checkpoint
    cfg.resume = False
    if deploy or fused:
        cfg.custom_hooks = [*cfg.get('custom_hooks', []), dict(type='ReparameterizeHook', before_load=fused)]
    if out is not None:
        if osp.exists(out):
            raise UserInputError(f'--out {out} already exists; not overwriting it')
        if not out.endswith(('.pkl', '.pickle')):
            raise UserInputError(f'--out must be a .pkl file, got {out}')
        check_writable(out, '--out')  # before the evaluation, not after it
        dump = dict(type='DumpResults', out_file_path=out)
        evaluators = cfg.test_evaluator if isinstance(cfg.test_evaluator, list) else [cfg.test_evaluator]
        cfg.test_evaluator = [*evaluators, dump]
    if show_dir is not None:
        _show_predictions(cfg, show_dir)
    _use_launcher(cfg, launcher)
    cfg.strict_data = strict_data or cfg.get('strict_data', False)
    check_datasets(cfg, ('test',))
    return cfg


def build_runner(cfg: Config) -> Runner:
    """The Runner the config asks for (``runner_type``), else mmengine's default one."""
    init_cpu_process_group(cfg.get('launcher', 'none'))
    if isinstance(cfg.get('visualizer'), dict):
        # mmengine hands back the existing Visualizer of a name, with the save_dir of an earlier run in this
        # process (a notebook, the Python API): each run gets its own
        cfg.visualizer.name = f'{cfg.visualizer.get("name", "visualizer")}_run{next(_RUN_NUMBERS)}'
    if cfg.get('compile') and not any(h.get('type') == 'CompileTrainStepHook' for h in cfg.get('custom_hooks', [])):
        # mmengine's compile=True traces the whole train_step: the hook makes the optimizer step traceable and
        # keeps the random batch augments out of the graph
        cfg.custom_hooks = [*cfg.get('custom_hooks', []), dict(type='CompileTrainStepHook')]
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)


_RUN_NUMBERS = itertools.count(1)


@contextlib.contextmanager
def _no_work_dir_left_on_user_error(cfg: Config) -> Iterator[None]:
    """Bad data found only while loading (an image that does not decode: checking 1.28 M images up front
    would take longer than an epoch) ends a run after the Runner made its work dir: remove that dir again,
    unless it existed before or holds a checkpoint (one process only; ranks would race)."""
    work_dir = cfg.work_dir
    created_here = not osp.exists(work_dir) and cfg.get('launcher', 'none') == 'none'
    try:
        yield
    except UserInputError as err:
        if isinstance(err, WorkDirLocked):
            raise  # the dir is the other run's now
        if created_here and osp.isdir(work_dir) and not glob.glob(osp.join(work_dir, '**', '*.pth'), recursive=True):
            shutil.rmtree(work_dir, ignore_errors=True)
        raise


def train(cfg: Config) -> Runner:
    """Train with the config's Runner, holding the work dir's lock (:func:`~repvit_mm.apis.workdir.work_dir_lock`).

    Raises:
        TrainingInterrupted: Ctrl-C or SIGTERM; its message names the last complete checkpoint.
        UserInputError: among others, the disk filled up (no partial file is left).
    """
    notes = take_notes(cfg)
    with _no_work_dir_left_on_user_error(cfg), signals_as_interrupts() as received:
        try:
            with work_dir_lock(cfg) as took_over:
                runner = build_runner(cfg)
                for note in [took_over, *notes]:
                    if note:
                        runner.logger.warning(note)
                with allow_head_reinit(not cfg.get('resume', False)):  # fine-tuning from load_from; resuming is strict
                    runner.train()
        except BaseException as err:
            if received:  # also an error mmengine made of the interrupt
                raise _interrupted(cfg, received[0]) from None
            full = disk_full(err)
            if full is not None and not isinstance(err, UserInputError):  # e.g. the Runner's config dump
                raise UserInputError(f'{full.strerror} while writing in {cfg.work_dir}: {_continue_from(cfg)}') from err
            raise
    return runner


def _continue_from(cfg: Config) -> str:
    last = last_complete_checkpoint(cfg.work_dir)
    return f'the last complete checkpoint is {last} (continue with --resume)' if last else 'no checkpoint was saved'


def _interrupted(cfg: Config, signum: int) -> TrainingInterrupted:
    name = 'Ctrl-C' if signum == signal.SIGINT else signal.Signals(signum).name
    return TrainingInterrupted(signum, f'training interrupted ({name}); {_continue_from(cfg)}')


def test(cfg: Config) -> dict:
    with _no_work_dir_left_on_user_error(cfg):
        runner = build_runner(cfg)
        return runner.test()
