"""What reads each dict of a config, so that ``--cfg-options`` can check a key against it.

A config dict is consumed by the class its ``type`` names (looked up in the registries of the config's
``default_scope``, or of the scope a ``scope.Type`` prefix names) or, for the typeless sections, by a fixed
class or function (``train_cfg`` by the training loop, ``env_cfg`` by ``Runner.setup_env``,
``optim_wrapper.clip_grad`` by ``torch.nn.utils.clip_grad_norm_``, ...): :data:`SECTIONS` is the one table
of those. :func:`accepted_keys` answers which keys a consumer takes (``None``: it cannot be told, e.g. a
class passing ``**kwargs`` somewhere other than its parent), :func:`required_keys` which it cannot do
without, :func:`parameter_default` what it uses for a key the config leaves out.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from mmengine.registry import Registry

#: Classes whose ``**kwargs`` go somewhere that accepts nothing more (mmengine's CheckpointHook passes them to
#: ``Runner.save_checkpoint``, whose arguments it already sets itself).
_CLOSED_KWARGS = ('CheckpointHook',)
_PASSES_KWARGS_UP = re.compile(r'super\([^)]*\)\s*\.\s*__init__\([^)]*\*\*kwargs')
#: Arguments the builders hand over themselves (the Runner gives a loop its runner and dataloader, mmcv's
#: layer builders a norm layer its channels): never required from the config.
_SUPPLIED = frozenset({'runner', 'dataloader', 'evaluator', 'num_features', 'in_channels', 'out_channels'})


def _parameters(func: Callable) -> tuple[dict[str, inspect.Parameter], bool]:
    """Named parameters of ``func`` (``self`` left out) and whether it takes ``**kwargs``."""
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return {}, True
    named = {p.name: p for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name != 'self'}
    return named, any(p.kind == p.VAR_KEYWORD for p in params)


def _passes_kwargs_to_parent(klass: type) -> bool:
    try:
        source = inspect.getsource(klass.__init__)
    except (OSError, TypeError):
        return False
    return bool(_PASSES_KWARGS_UP.search(source))


def init_parameters(cls: Any) -> dict[str, inspect.Parameter] | None:
    """The keyword parameters ``cls(...)`` accepts, following ``**kwargs`` to the parent class where the
    class hands them on with ``super().__init__(..., **kwargs)``; ``None`` when they go elsewhere. The
    class's own parameter wins over its parent's of the same name (its default is the one used)."""
    if not inspect.isclass(cls):
        named, open_ = _parameters(cls)  # a registered function (e.g. a collate function)
        return None if open_ else named
    found: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        if klass in (object, torch.nn.Module) or '__init__' not in vars(klass):
            continue
        named, open_ = _parameters(klass.__init__)
        found = {**named, **found}
        if not open_ or klass.__name__ in _CLOSED_KWARGS:
            return found
        if not _passes_kwargs_to_parent(klass):
            return None
    return found


def init_keywords(cls: Any) -> set[str] | None:
    """The keyword arguments ``cls(...)`` accepts (see :func:`init_parameters`)."""
    params = init_parameters(cls)
    return None if params is None else set(params)


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


def type_error(type_: Any, scope: str) -> str | None:
    """Why ``type_`` names nothing in the registries of ``scope`` (with the closest registered names)."""
    if resolve_type(type_, scope):
        return None
    names: set[str] = set()
    for registry in _scope_registries(scope):
        while registry is not None:
            names |= set(registry.module_dict)
            registry = registry.parent
    close = difflib.get_close_matches(str(type_), sorted(names), n=3, cutoff=0.6)
    hint = f'; did you mean {" or ".join(map(repr, close))}?' if close else ''
    return f'type {type_!r} is not registered in {scope} (nor in mmengine){hint}'


def types_taking(type_: Any, key: str, scope: str, limit: int = 3) -> list[str]:
    """Other registered types, of the registry that holds ``type_``, whose class takes ``key`` (for the
    message when ``type_`` does not: ``label_smooth_val`` is an argument of ``LabelSmoothLoss``)."""
    found: list[str] = []
    for registry in _scope_registries(scope):
        try:
            if registry.get(type_) is None:
                continue
        except Exception:
            continue
        while registry is not None and len(found) < limit:
            for name, obj in sorted(registry.module_dict.items()):
                if name not in found and inspect.isclass(obj) and key in _parameters(obj.__init__)[0]:
                    found.append(name)
                    if len(found) == limit:
                        break
            registry = registry.parent
    return found


# --------------------------------------------------------------------------------- the typeless sections
def _keys_of(*funcs: Callable, minus: frozenset = frozenset()) -> Callable[..., set[str]]:
    def keys(node: dict, scope: str, parent: Any) -> set[str]:
        return set().union(*(_parameters(f)[0] for f in funcs)) - minus

    return keys


def _fixed(*names: str) -> Callable[..., set[str]]:
    return lambda node, scope, parent: set(names)


def _typed_or(default_path: str, drop: frozenset = frozenset(), extra: frozenset = frozenset()) -> Callable:
    """The keys of the class the dict's ``type`` names, else of the class the Runner uses by default."""

    def keys(node: dict, scope: str, parent: Any) -> set[str] | None:
        module, name = default_path.rsplit('.', 1)
        default = getattr(importlib.import_module(module), name)
        accepted = _typed_keys(node, scope, default, extra)
        return None if accepted is None else accepted - drop

    return keys


def _train_loop_keys(node: dict, scope: str, parent: Any) -> set[str] | None:
    loop = 'EpochBasedTrainLoop' if node.get('by_epoch', True) else 'IterBasedTrainLoop'
    extra = frozenset() if 'type' in node else frozenset({'by_epoch'})
    return _typed_or(f'mmengine.runner.{loop}', frozenset({'runner', 'dataloader'}), extra)(node, scope, parent)


def _dist_cfg_keys(node: dict, scope: str, parent: Any) -> set[str]:
    from mmengine.dist import utils as dist_utils

    funcs = (dist_utils.init_dist, dist_utils._init_dist_slurm, torch.distributed.init_process_group)
    return _keys_of(*funcs, minus=frozenset({'launcher'}))(node, scope, parent)


def _mp_cfg_keys(node: dict, scope: str, parent: Any) -> set[str]:
    from mmengine.utils.dl_utils import set_multi_processing

    return _keys_of(set_multi_processing, minus=frozenset({'distributed'}))(node, scope, parent)


def _runner_keys(node: dict, scope: str, parent: Any) -> set[str]:
    from mmengine.runner import Runner

    sections = {path[0] for path in SECTIONS if len(path) == 1}  # compile: read by Runner.from_cfg
    return set(_parameters(Runner.__init__)[0]) | set(map(str, node)) | _RUNNER_EXTRA | sections


def _randomness_keys(node: dict, scope: str, parent: Any) -> set[str]:
    from mmengine.runner import Runner

    return set(_parameters(Runner.set_randomness)[0])


def _paramwise_keys(node: dict, scope: str, parent: Any) -> set[str] | None:
    return set(_PARAMWISE_KEYS) if 'constructor' not in (parent or {}) else None


def _dataloader_keys(node: dict, scope: str, parent: Any) -> set[str]:
    """``Runner.build_dataloader`` takes these itself and hands the rest to torch's ``DataLoader``."""
    return set(_parameters(torch.utils.data.DataLoader.__init__)[0]) | {
        'dataset',
        'sampler',
        'batch_sampler',
        'collate_fn',
        'worker_init_fn',
        'num_batch_per_epoch',
        'disable_subprocess_warning',
    }


#: Optim wrappers that read ``clip_grad`` as mmengine's ``OptimWrapper`` does (others, such as
#: ``AGCOptimWrapper``, read it their own way).
_MMENGINE_CLIPPING = (None, 'OptimWrapper', 'AmpOptimWrapper')


def _clip_grad_keys(node: dict, scope: str, parent: Any) -> set[str] | None:
    """mmengine's ``OptimWrapper`` pops ``type`` ('norm' or 'value') and calls torch's clipping function."""
    if (parent or {}).get('type') not in _MMENGINE_CLIPPING:
        return None
    clip = torch.nn.utils.clip_grad_value_ if node.get('type') == 'value' else torch.nn.utils.clip_grad_norm_
    return set(_parameters(clip)[0]) - {'parameters'} | {'type'}


#: Top-level keys the Runner (or ``Runner.from_cfg``/``wrap_model``) reads although configs often omit them.
_RUNNER_EXTRA = frozenset(
    {'find_unused_parameters', 'sync_bn', 'runner_type', 'model_wrapper_cfg', 'custom_imports', 'strict_data'}
)
#: ``paramwise_cfg`` keys read by mmengine's ``DefaultOptimWrapperConstructor``.
_PARAMWISE_KEYS = frozenset(
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


@dataclass(frozen=True)
class Section:
    """A dict of the config read by a fixed function or class rather than one its ``type`` names.

    Attributes:
        keys: ``(node, scope, parent) -> accepted keys`` (``None``: cannot be told).
        optional: a config may leave the section out; ``--cfg-options`` then creates it field by field.
        example: the section must stay a dict: how to set one of its fields instead.
        check: ``(node, parent) -> problem or None``, for the section built as a whole.
    """

    keys: Callable[[dict, str, Any], set[str] | None]
    optional: bool = False
    example: str | None = None
    check: Callable[[dict, Any], str | None] | None = None


def _clip_grad_problem(node: dict, parent: Any) -> str | None:
    if (parent or {}).get('type') not in _MMENGINE_CLIPPING:
        return None
    if node.get('type', 'norm') not in ('norm', 'value'):
        return f"type is 'norm' or 'value', not {node['type']!r}"
    needed = 'clip_value' if node.get('type') == 'value' else 'max_norm'
    return None if needed in node else f'needs {needed} (e.g. optim_wrapper.clip_grad.{needed}=1.0)'


#: The one table of typeless config sections, by their path in the config (``()`` is the top level).
SECTIONS: dict[tuple[str, ...], Section] = {
    (): Section(_runner_keys),
    ('train_cfg',): Section(_train_loop_keys),
    ('val_cfg',): Section(_typed_or('mmengine.runner.ValLoop', frozenset({'runner', 'dataloader', 'evaluator'}))),
    ('test_cfg',): Section(_typed_or('mmengine.runner.TestLoop', frozenset({'runner', 'dataloader', 'evaluator'}))),
    ('optim_wrapper',): Section(
        _typed_or('mmengine.optim.OptimWrapper', extra=frozenset({'type', 'optimizer', 'constructor', 'paramwise_cfg'}))
    ),
    ('optim_wrapper', 'clip_grad'): Section(_clip_grad_keys, optional=True, check=_clip_grad_problem),
    ('optim_wrapper', 'paramwise_cfg'): Section(_paramwise_keys, optional=True),
    ('env_cfg',): Section(
        _fixed('cudnn_benchmark', 'mp_cfg', 'dist_cfg', 'resource_limit'),
        optional=True,
        example='env_cfg.cudnn_benchmark=True',
    ),
    ('env_cfg', 'mp_cfg'): Section(_mp_cfg_keys, optional=True),
    ('env_cfg', 'dist_cfg'): Section(_dist_cfg_keys, optional=True),
    ('randomness',): Section(_randomness_keys, optional=True, example='randomness.seed=0'),
    ('auto_scale_lr',): Section(
        _fixed('enable', 'base_batch_size'), optional=True, example='auto_scale_lr.base_batch_size=256'
    ),
    # a dict form of ``compile=True``: what ``torch.compile`` takes besides the model
    ('compile',): Section(_keys_of(torch.compile, minus=frozenset({'model'})), optional=True),
    ('log_processor',): Section(_typed_or('mmengine.runner.LogProcessor')),
    **{(f'{split}_dataloader',): Section(_dataloader_keys) for split in ('train', 'val', 'test')},
}


def _typed_keys(node: dict, scope: str, default: Any = None, extra: frozenset = frozenset()) -> set[str] | None:
    candidates = resolve_type(node['type'], scope) if 'type' in node else [default] if default else []
    if not candidates:
        return None
    accepted: set[str] = set(extra) | {'type', '_scope_'}
    for cls in candidates:
        keys = init_keywords(cls)
        if keys is None:
            return None
        accepted |= keys
    return accepted


def accepted_keys(path: tuple[str, ...], node: dict, scope: str, parent: Any = None) -> set[str] | None:
    """The keys the consumer of the dict at ``path`` accepts, or ``None`` when that cannot be told.

    Raises ``KeyError`` when nothing is known to read the dict (a nested dict without ``type``): then only
    the keys it already has are valid.
    """
    if path in SECTIONS:
        return SECTIONS[path].keys(node, scope, parent)
    if 'type' in node:
        keys = _typed_keys(node, scope)
        # mmcv's build_norm_layer takes requires_grad itself and gives the rest to the norm class
        return keys | {'requires_grad'} if keys is not None and path[-1].endswith('norm_cfg') else keys
    if len(path) == 1:
        return None  # another top-level section: its reader is not known here
    raise KeyError(path)


def required_keys(path: tuple[str, ...], node: dict, scope: str) -> set[str]:
    """Arguments without a default of the class the dict's ``type`` names, which its builder does not
    supply (a layer config such as ``norm_cfg`` gets its channels from the layer builder)."""
    if 'type' not in node or (path[-1].endswith('_cfg') and path[-1] != 'init_cfg'):
        return set()
    required: set[str] | None = None
    for cls in resolve_type(node['type'], scope):
        params = init_parameters(cls)
        if params is None:
            return set()
        own = {n for n, p in params.items() if p.default is inspect.Parameter.empty} - _SUPPLIED
        required = own if required is None else required & own  # what every candidate needs
    return required or set()


def parameter_default(node: dict, key: str, scope: str) -> Any:
    """The default the class of a typed dict uses for ``key`` (``inspect.Parameter.empty`` if unknown)."""
    if 'type' not in node:
        return inspect.Parameter.empty
    for cls in resolve_type(node['type'], scope):
        params = init_parameters(cls) or {}
        if key in params:
            return params[key].default
    return inspect.Parameter.empty


def number_expected(node: dict, key: str, scope: str) -> bool:
    """Whether the consumer's ``key`` takes a number (its default or annotation is ``int``/``float``)."""
    for cls in resolve_type(node['type'], scope) if 'type' in node else []:
        param = (init_parameters(cls) or {}).get(key)
        if param is None:
            continue
        default, annotation = param.default, str(param.annotation)
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            return True
        if annotation in ('float', 'int', "<class 'float'>", "<class 'int'>"):
            return True
    return False


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
