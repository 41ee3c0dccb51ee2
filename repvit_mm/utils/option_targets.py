"""What reads each dict of a config, so that ``--cfg-options`` can check a new key against it.

A config dict is consumed by the class its ``type`` names (looked up in the registries of the config's
``default_scope``, or of the scope a ``scope.Type`` prefix names) or, for the typeless sections the Runner
reads, by a fixed class or function (``train_cfg`` by the training loop, ``env_cfg`` by
``Runner.setup_env``, ...). :func:`accepted_keys` answers which keys such a consumer takes; ``None`` means
it cannot be told (an unknown type, a class passing ``**kwargs`` somewhere other than its parent).
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable
from typing import Any

import torch
from mmengine.registry import Registry

#: Keys of ``env_cfg`` read by mmengine's ``Runner.setup_env``.
ENV_CFG_KEYS = frozenset({'cudnn_benchmark', 'mp_cfg', 'dist_cfg', 'resource_limit'})
#: Keys of ``auto_scale_lr`` read by ``Runner.scale_lr``.
AUTO_SCALE_LR_KEYS = frozenset({'enable', 'base_batch_size'})
#: Keys of ``compile`` (a dict form of ``compile=True``): what ``torch.compile`` takes besides the model.
COMPILE_KEYS = frozenset(inspect.signature(torch.compile).parameters) - {'model'}
#: ``paramwise_cfg`` keys read by mmengine's ``DefaultOptimWrapperConstructor``.
PARAMWISE_KEYS = frozenset(
    {
        'custom_keys',
        'bias_lr_mult',
        'bias_decay_mult',
        'norm_decay_mult',
        'dwconv_decay_mult',
        'flat_decay_mult',
        'bypass_duplicate',
        'dcn_offset_lr_mult',
    }
)
#: Keys of ``optim_wrapper`` that its builder (the optim wrapper constructor) reads besides the wrapper's own.
_OPTIM_WRAPPER_EXTRA = frozenset({'type', 'optimizer', 'constructor', 'paramwise_cfg'})
#: Classes whose ``**kwargs`` go somewhere that accepts nothing more (mmengine's CheckpointHook passes them to
#: ``Runner.save_checkpoint``, whose arguments it already sets itself).
_CLOSED_KWARGS = ('CheckpointHook',)
_PASSES_KWARGS_UP = re.compile(r'super\([^)]*\)\s*\.\s*__init__\([^)]*\*\*kwargs')


def _parameters(func: Callable) -> tuple[set[str], bool]:
    """Named parameters of ``func`` (``self`` left out) and whether it takes ``**kwargs``."""
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return set(), True
    named = {p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)} - {'self'}
    return named, any(p.kind == p.VAR_KEYWORD for p in params)


def _passes_kwargs_to_parent(klass: type) -> bool:
    try:
        source = inspect.getsource(klass.__init__)
    except (OSError, TypeError):
        return False
    return bool(_PASSES_KWARGS_UP.search(source))


def init_keywords(cls: Any) -> set[str] | None:
    """The keyword arguments ``cls(...)`` accepts, following ``**kwargs`` to the parent class where the
    class hands them on with ``super().__init__(..., **kwargs)``; ``None`` when they go elsewhere."""
    if not inspect.isclass(cls):
        named, open_ = _parameters(cls)  # a registered function (e.g. a collate function)
        return None if open_ else named
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass in (object, torch.nn.Module) or '__init__' not in vars(klass):
            continue
        named, open_ = _parameters(klass.__init__)
        names |= named
        if not open_ or klass.__name__ in _CLOSED_KWARGS:
            return names
        if not _passes_kwargs_to_parent(klass):
            return None
    return names


def _scope_registries(scope: str) -> list[Registry]:
    """Every registry of a scope (``mmpretrain.registry.MODELS``, ``...TRANSFORMS``, ...)."""
    try:
        module = importlib.import_module(f'{scope}.registry')
    except ImportError:
        module = importlib.import_module('mmengine.registry')
    return [value for value in vars(module).values() if isinstance(value, Registry)]


def resolve_type(type_: Any, scope: str) -> list[Any]:
    """The classes (or functions) a ``type`` value can name: any registry of ``scope`` that knows it."""
    if not isinstance(type_, str):
        return [type_] if callable(type_) else []
    found = []
    for registry in _scope_registries(scope):
        try:
            obj = registry.get(type_)
        except Exception:  # mmengine falls back to importing the name as a module path
            obj = None
        if obj is not None and obj not in found:
            found.append(obj)
    return found


def _typed_keys(node: dict, scope: str, default: Any = None, extra: frozenset = frozenset()) -> set[str] | None:
    candidates = resolve_type(node['type'], scope) if 'type' in node else [default] if default else []
    if not candidates:
        return None
    accepted: set[str] = set(extra) | {'type'}
    for cls in candidates:
        keys = init_keywords(cls)
        if keys is None:
            return None
        accepted |= keys
    return accepted


def _train_loop_keys(node: dict, scope: str) -> set[str] | None:
    from mmengine.runner import EpochBasedTrainLoop, IterBasedTrainLoop

    loop = EpochBasedTrainLoop if node.get('by_epoch', True) else IterBasedTrainLoop
    keys = _typed_keys(node, scope, loop, frozenset() if 'type' in node else frozenset({'by_epoch'}))
    return None if keys is None else keys - {'runner', 'dataloader'}


def _loop_keys(loop_name: str) -> Callable[[dict, str], set[str] | None]:
    def keys(node: dict, scope: str) -> set[str] | None:
        import mmengine.runner as runner

        accepted = _typed_keys(node, scope, getattr(runner, loop_name))
        return None if accepted is None else accepted - {'runner', 'dataloader', 'evaluator'}

    return keys


def _dist_cfg_keys(node: dict, scope: str) -> set[str]:
    from mmengine.dist import utils as dist_utils

    keys: set[str] = set()
    for func in (dist_utils.init_dist, dist_utils._init_dist_slurm, torch.distributed.init_process_group):
        keys |= _parameters(func)[0]
    return keys - {'launcher'}


def _mp_cfg_keys(node: dict, scope: str) -> set[str]:
    from mmengine.utils.dl_utils import set_multi_processing

    return _parameters(set_multi_processing)[0] - {'distributed'}


def _randomness_keys(node: dict, scope: str) -> set[str]:
    from mmengine.runner import Runner

    return _parameters(Runner.set_randomness)[0]


def _optim_wrapper_keys(node: dict, scope: str) -> set[str] | None:
    from mmengine.optim import OptimWrapper

    return _typed_keys(node, scope, OptimWrapper, _OPTIM_WRAPPER_EXTRA)


def _paramwise_keys(node: dict, scope: str, parent: dict) -> set[str] | None:
    return set(PARAMWISE_KEYS) if 'constructor' not in parent else None


def _dataloader_keys(node: dict, scope: str) -> set[str]:
    """``Runner.build_dataloader`` takes these itself and hands the rest to torch's ``DataLoader``."""
    return _parameters(torch.utils.data.DataLoader.__init__)[0] | {
        'dataset',
        'sampler',
        'batch_sampler',
        'collate_fn',
        'worker_init_fn',
        'num_batch_per_epoch',
        'disable_subprocess_warning',
    }


def _log_processor_keys(node: dict, scope: str) -> set[str] | None:
    from mmengine.runner import LogProcessor

    return _typed_keys(node, scope, LogProcessor)


#: Typeless top-level sections (by their path in the config) and what reads them.
_SECTIONS: dict[tuple[str, ...], Callable[[dict, str], set[str] | None]] = {
    ('train_cfg',): _train_loop_keys,
    ('val_cfg',): _loop_keys('ValLoop'),
    ('test_cfg',): _loop_keys('TestLoop'),
    ('optim_wrapper',): _optim_wrapper_keys,
    ('env_cfg',): lambda node, scope: set(ENV_CFG_KEYS),
    ('env_cfg', 'mp_cfg'): _mp_cfg_keys,
    ('env_cfg', 'dist_cfg'): _dist_cfg_keys,
    ('randomness',): _randomness_keys,
    ('auto_scale_lr',): lambda node, scope: set(AUTO_SCALE_LR_KEYS),
    ('compile',): lambda node, scope: set(COMPILE_KEYS),
    ('log_processor',): _log_processor_keys,
    **{(f'{split}_dataloader',): _dataloader_keys for split in ('train', 'val', 'test')},
}


def accepted_keys(path: tuple[str, ...], node: dict, scope: str, parent: Any = None) -> set[str] | None:
    """The keys the consumer of the dict at ``path`` accepts, or ``None`` when that cannot be told.

    Raises ``KeyError`` when nothing is known to read the dict (a nested dict without ``type``): then only
    the keys it already has are valid.
    """
    if path in _SECTIONS:
        return _SECTIONS[path](node, scope)
    if path == ('optim_wrapper', 'paramwise_cfg'):
        return _paramwise_keys(node, scope, parent or {})
    if 'type' in node:
        keys = _typed_keys(node, scope)
        # mmcv's build_norm_layer takes requires_grad itself and gives the rest to the norm class
        return keys | {'requires_grad'} if keys is not None and path[-1].endswith('norm_cfg') else keys
    if len(path) == 1:
        return None  # another top-level section: its reader is not known here
    raise KeyError(path)


def arch_error(cls: Any, arch: Any) -> str | None:
    """Why ``arch`` is not an architecture of backbone ``cls`` (its ``get_arch_settings``/``arch_zoo``)."""
    if hasattr(cls, 'get_arch_settings'):
        try:
            cls.get_arch_settings(arch)
        except (ValueError, TypeError) as err:
            return str(err)
        return None
    zoo = getattr(cls, 'arch_zoo', None)
    if isinstance(zoo, dict) and isinstance(arch, str) and arch not in zoo:
        return f'unknown {cls.__name__} arch {arch!r}; choose from {sorted(zoo)}'
    return None
