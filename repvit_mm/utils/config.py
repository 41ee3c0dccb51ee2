"""Loading configs for the tools, with ``--cfg-options`` checked against what reads them.

An option may set a key the config does not have yet, as long as what consumes that dict takes it (the
``__init__`` arguments of the class its ``type`` names, or the reader of a typeless section in
:data:`~repvit_mm.utils.option_targets.SECTIONS`). A dict the options create (``optim_wrapper.clip_grad``,
``model.backbone.init_cfg``, ``default_hooks.early_stopping``) is checked as a whole once every option is
in: it needs a registered ``type`` where a registry builds it, and every argument its class cannot do
without. Where the consumer has a dict default for the key (a head's ``loss``), the options are merged into
that default, as the class would use it.
"""

from __future__ import annotations

import copy
import difflib
import os.path as osp
import sys
from collections.abc import Iterable, Iterator
from typing import Any

from mmengine.config import Config, ConfigDict

from .errors import UserInputError
from .option_targets import (
    SECTIONS,
    accepted_keys,
    arch_error,
    number_expected,
    parameter_default,
    required_keys,
    resolve_type,
    type_error,
    types_taking,
)


def _closest(word: str, choices) -> str:
    """``word``'s closest valid names, for the error message."""
    choices = sorted(map(str, choices))
    close = difflib.get_close_matches(word, choices, n=3, cutoff=0.6)
    if close:
        return 'did you mean ' + ' or '.join(repr(c) for c in close) + '?'
    return f'valid: {", ".join(choices[:25])}' + (', ...' if len(choices) > 25 else '')


def _dotted(path: tuple[str, ...]) -> str:
    return '.'.join(path) or 'the config'


def flatten_options(options: dict[str, Any]) -> dict[str, Any]:
    """``{'a': {'b': 1}}`` as ``{'a.b': 1}``: a dict value sets those fields (as mmengine's merge does)."""
    flat: dict[str, Any] = {}
    for key, value in options.items():
        if isinstance(value, dict) and value:
            flat.update({f'{key}.{sub}': v for sub, v in flatten_options(value).items()})
        else:
            flat[key] = value
    return flat


class _OptionCheck:
    """Applies the options to a copy of the config, checking each key against what reads its dict."""

    def __init__(self, cfg: Config) -> None:
        self.scope = cfg.get('default_scope') or 'mmengine'
        self.original = cfg._cfg_dict
        self.root: dict = copy.deepcopy(cfg._cfg_dict.to_dict())
        self.created: dict[tuple[str, ...], str] = {}  # dict path -> the first option that created it
        self.retyped: dict[tuple[str, ...], str] = {}  # dict path -> the option that set its type
        self.seeds: dict[str, dict] = {}  # dotted path of a created dict -> what it starts as (a default or {})
        self.set_keys: list[tuple[str, tuple[str, ...], str, Any]] = []  # (option, dict path, key, value)

    def apply(self, full_key: str, value: Any) -> None:
        """Walk ``full_key`` through the config, creating the dicts it names (no key check yet)."""
        node: Any = self.root
        parts = full_key.split('.')
        for depth, part in enumerate(parts):
            path, is_leaf = tuple(parts[:depth]), depth == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise UserInputError(
                        f"--cfg-options key '{full_key}': {_dotted(path)} is a list of {len(node)} "
                        f"items, '{part}' is not an index in it"
                    )
                if is_leaf:
                    node[int(part)] = value
                    return
                node = node[int(part)]
                continue
            if not isinstance(node, dict):
                raise UserInputError(
                    f"--cfg-options key '{full_key}': {_dotted(path)} is a {type(node).__name__}, not a dict"
                )
            if is_leaf:
                self.set_keys.append((full_key, path, part, value))
                node[part] = value
                if part == 'type':
                    self.retyped.setdefault(path, full_key)
                return
            if node.get(part) is None:  # absent (or None): the option creates the dict
                self.set_keys.append((full_key, path, part, {}))
                default = parameter_default(node, part, self.scope)
                # e.g. a head's loss: the options refine the class's default dict
                self.seeds[_dotted((*path, part))] = copy.deepcopy(default) if isinstance(default, dict) else {}
                node[part] = copy.deepcopy(self.seeds[_dotted((*path, part))])
                self.created.setdefault((*path, part), full_key)
            node = node[part]

    def _node(self, path: tuple[str, ...]) -> tuple[Any, Any]:
        node, parent = self.root, None
        for part in path:
            parent, node = node, node[int(part)] if isinstance(node, list) else node[part]
        return node, parent

    def _whole(self, path: tuple[str, ...]) -> bool:
        """Whether the dict at ``path`` is checked as a whole (created or retyped by the options)."""
        return path in self.created or path in self.retyped

    def _new(self, path: tuple[str, ...]) -> bool:
        """Whether the dict at ``path`` is (inside) one the options created or retyped."""
        return any(self._whole(path[:n]) for n in range(len(path) + 1))

    def check(self) -> None:
        for full_key, path, part, value in self.set_keys:
            if not self._whole(path):
                self._check_key(full_key, path, part)
            self._check_value(full_key, path, part, value)
        for path in sorted({*self.created, *self.retyped}, key=len):  # the outermost problem first
            self._check_dict(path, self.created.get(path) or self.retyped[path])

    def _check_key(self, full_key: str, path: tuple[str, ...], part: str) -> None:
        """``part`` must be a key that the consumer of the dict at ``path`` reads."""
        # a dict the options only add keys to is judged as the config has it (the top level by its own keys)
        node, parent = self._node(path) if self._new(path) else self._original_node(path)
        try:
            valid = accepted_keys(path, node, self.scope, parent)
        except KeyError:  # a nested dict without a type: nothing known reads new keys
            original = self._original_keys(path)
            if part in original:
                return
            raise UserInputError(
                f"--cfg-options key '{full_key}': '{part}' does not exist in {_dotted(path)} "
                f'({_closest(part, original)})'
            ) from None
        if valid is None or part in valid:
            return
        if not path:
            raise UserInputError(
                f"--cfg-options key '{full_key}': '{part}' is not a setting of the config or the "
                f'Runner ({_closest(part, valid)})'
            )
        reader = f'{_dotted(path)} ({node["type"]})' if 'type' in node else _dotted(path)
        hint = _closest(part, valid - {'_scope_'})
        others = types_taking(node['type'], part, self.scope) if 'type' in node and hint.startswith('valid') else []
        if others:  # a key of another class of the same kind: say which, and how to switch to it
            hint = f'{" and ".join(others)} take{"s" if len(others) == 1 else ""} it: set {_dotted(path)}.type too'
        raise UserInputError(f"--cfg-options key '{full_key}': {reader} takes no '{part}' ({hint})")

    def _original_node(self, path: tuple[str, ...]) -> tuple[Any, Any]:
        node, parent = self.original, None
        for part in path:
            parent, node = node, node[int(part)] if isinstance(node, list) else node.get(part, {})
        return node, parent

    def _original_keys(self, path: tuple[str, ...]) -> list[str]:
        node = self._original_node(path)[0]
        return list(map(str, node)) if isinstance(node, dict) else []

    def _check_value(self, full_key: str, path: tuple[str, ...], part: str, value: Any) -> None:
        """Values checked before anything is built: a backbone's ``arch``, a registered ``type``, a number
        where the consumer takes one, a section that must stay a dict."""
        node, _ = self._node(path)
        section = SECTIONS.get((*path, part))
        if section is not None and section.example and not isinstance(value, dict):
            raise UserInputError(
                f'--cfg-options {full_key}={value!r}: {full_key} is a dict; set its fields one by one, '
                f'e.g. {section.example}'
            )
        if part == 'type' and path not in SECTIONS:
            problem = type_error(value, self.scope)
            if problem:
                raise UserInputError(f'--cfg-options {full_key}={value}: {problem}')
        if part == 'arch' and 'type' in node:
            for cls in resolve_type(node['type'], self.scope):
                message = arch_error(cls, value)
                if message:
                    raise UserInputError(f'--cfg-options {full_key}={value}: {message}')
        if isinstance(value, str) and number_expected(node, part, self.scope):
            raise UserInputError(f'--cfg-options {full_key}={value}: {node["type"]} takes a number as {part}')

    def _check_dict(self, path: tuple[str, ...], full_key: str) -> None:
        """A dict the options created or retyped: built as its consumer builds it."""
        node, parent = self._node(path)
        where = _dotted(path)
        section = SECTIONS.get(path)
        if section is None and 'type' not in node:
            raise UserInputError(
                f"--cfg-options key '{full_key}': {where} is not in the config and is built from a registry: "
                f'give its type as well ({where}.type=...)'
            )
        if 'type' in node and section is None and type_error(node['type'], self.scope):
            raise UserInputError(f'--cfg-options {where}.type={node["type"]}: {type_error(node["type"], self.scope)}')
        for key in node:
            self._check_key(f'{where}.{key}', path, str(key))
        if section is not None and section.check is not None:
            problem = section.check(node, parent)
            if problem:
                raise UserInputError(f"--cfg-options key '{full_key}': {where} {problem}")
        missing = sorted(required_keys(path, node, self.scope) - set(node))
        if missing:
            raise UserInputError(
                f"--cfg-options key '{full_key}': {where} ({node['type']}) needs "
                + ', '.join(missing)
                + f' (add {where}.{missing[0]}=...)'
            )


def check_cfg_options(cfg: Config, options: dict[str, Any]) -> dict[str, dict]:
    """Reject ``--cfg-options`` keys or values that what consumes them would not take; ``cfg`` is not changed.

    Every intermediate part of a dotted key that is not in the config must be a key its dict's consumer
    reads (``optim_wrapper.clip_grad``: an ``OptimWrapper`` argument), list items go by index. A new last
    part must be read by what consumes its dict: an ``__init__`` argument of the class its ``type`` names
    (``model.backbone.archh`` fails), a setting of a typeless section (``train_cfg.max_iter`` fails against
    the training loop's arguments), or a top-level key the Runner reads. Dicts the options create or
    retype are then checked as a whole (a registered ``type`` where a registry builds them, the arguments
    their class needs). The error names the key and the closest valid names.

    Returns:
        The dicts the options create (dotted path -> the consumer's default dict, or ``{}``), which
        :func:`merge_cfg_options` puts into the config before merging the options.
    """
    check = _OptionCheck(cfg)
    for full_key, value in flatten_options(options).items():
        check.apply(full_key, value)
    check.check()
    return check.seeds


def merge_cfg_options(cfg: Config, options: dict[str, Any]) -> None:
    """Check ``options`` (:func:`check_cfg_options`) and merge them into ``cfg``."""
    options = flatten_options(options)
    for dotted, start in check_cfg_options(cfg, options).items():  # outer dicts first (insertion order)
        *path, last = dotted.split('.')
        node = cfg._cfg_dict
        for part in path:
            node = node[int(part)] if isinstance(node, list) else node[part]
        node[last] = ConfigDict(start)  # assigned: mmengine's merge will not turn a None into a dict
    cfg.merge_from_dict(options)


def load_config(path: str, cfg_options: dict[str, Any] | None = None) -> Config:
    """Read a config file and merge checked ``--cfg-options`` into it."""
    if not osp.isfile(path):
        raise UserInputError(f'config file not found: {path}')
    try:
        cfg = Config.fromfile(path)
    except Exception as err:  # syntax errors, missing _base_ files, bad imports
        raise UserInputError(f'cannot read config {path}: {type(err).__name__}: {err}') from err
    check_model_types(cfg)
    if cfg_options:
        length = _train_length(cfg)
        merge_cfg_options(cfg, cfg_options)
        _warn_schedule_length(cfg, length)
    check_values(cfg)
    _no_persistent_workers_without_workers(cfg)
    return cfg


def _train_length(cfg: Config) -> tuple[str, Any]:
    """The training loop's length: ``('max_iters', N)`` or ``('max_epochs', N)`` (``None``: neither set)."""
    train_cfg = cfg.get('train_cfg') or {}
    for key in ('max_iters', 'max_epochs'):
        if key in train_cfg:
            return key, train_cfg[key]
    return 'max_iters', None


def _warn_schedule_length(cfg: Config, before: tuple[str, Any]) -> None:
    """One ``warning:`` line when ``--cfg-options`` changed the loop's length but the ``param_scheduler``
    still ends where the old length ended (``end`` = old or old + 1: mmengine reaches a scheduler's last
    value at ``end - 1``): a longer run would keep the final lr from the old end on, a shorter one never
    decays. The schedule is the user's to rescale (milestones, warm-up and ``end`` all mean something), so
    it is named, not changed."""
    key, length = _train_length(cfg)
    if key != before[0] or not _whole_number(length, 1) or not _whole_number(before[1], 1) or length == before[1]:
        return
    schedulers = cfg.get('param_scheduler') or []
    schedulers = [schedulers] if isinstance(schedulers, dict) else schedulers
    by_epoch = key == 'max_epochs'  # the unit of the loop: a scheduler's begin / end are in its own unit
    stale = [
        f'param_scheduler.{i}.end={s["end"]}'
        if isinstance(cfg.param_scheduler, list)
        else f'param_scheduler.end={s["end"]}'
        for i, s in enumerate(schedulers)
        if isinstance(s, dict)
        and bool(s.get('by_epoch', True)) == by_epoch
        and s.get('end') in (before[1], before[1] + 1)
    ]
    if stale:
        print(
            f'warning: train_cfg.{key}={length}, but the lr schedule still ends at the old {key}={before[1]} '
            f'({", ".join(stale)}); set the ends (and milestones) for {length} with --cfg-options',
            file=sys.stderr,
        )


def check_model_types(cfg: Config) -> None:
    """Every ``type`` of the config's model is registered, and the backbone's ``arch`` is one of its
    architectures: a config file with a typo fails here, before a Runner or work dir exists."""
    scope = cfg.get('default_scope') or 'mmengine'

    model = cfg.get('model')
    if not isinstance(model, dict):
        return
    # the model and its parts (backbone, neck, heads, data preprocessor): what MODELS builds; deeper dicts
    # may name a type some other way (mmdet's RoI layers are attributes of mmcv.ops)
    parts = [('model', model)] + [(f'model.{k}', v) for k, v in model.items() if isinstance(v, dict)]
    for path, node in parts:
        type_ = node.get('type')
        if not isinstance(type_, str):
            continue
        problem = type_error(type_, scope)
        if problem:
            raise UserInputError(f'{cfg.filename}: {path}.type: {problem}')
        for cls in resolve_type(type_, scope) if 'arch' in node else []:
            message = arch_error(cls, node['arch'])
            if message:
                raise UserInputError(f'{cfg.filename}: {path}.arch: {message}')


def _whole_number(value: Any, least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def check_values(cfg: Config) -> None:
    """Batch sizes, worker counts, loop lengths, intervals and the learning rate, checked before anything
    starts (a zero batch size or interval would fail only inside the Runner, ``max_iters=0`` would do nothing)."""
    where = osp.basename(cfg.filename or 'the config')
    checks: list[tuple[str, Any, int]] = []
    for split in ('train', 'val', 'test'):
        loader = cfg.get(f'{split}_dataloader')
        if isinstance(loader, dict):
            checks += [
                (f'{split}_dataloader.{k}', loader[k], least)
                for k, least in (('batch_size', 1), ('num_workers', 0))
                if k in loader
            ]
    train_cfg = cfg.get('train_cfg')
    if isinstance(train_cfg, dict):
        checks += [
            (f'train_cfg.{k}', train_cfg[k], 1) for k in ('max_iters', 'max_epochs', 'val_interval') if k in train_cfg
        ]
    for key, value, least in checks:
        if not _whole_number(value, least):
            raise UserInputError(f'{key}={value!r} ({where}): must be a whole number >= {least}')
    optimizer = (cfg.get('optim_wrapper') or {}).get('optimizer')
    lr = optimizer.get('lr') if isinstance(optimizer, dict) else None
    if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float)) or lr < 0):
        raise UserInputError(f'optim_wrapper.optimizer.lr={lr!r} ({where}): must be a number >= 0')


#: Where a model's class count is (the heads, and mmpretrain's data preprocessor for batch mixing).
_NUM_CLASSES_AT = (
    'head',
    'decode_head',
    'auxiliary_head',
    'bbox_head',
    'roi_head.bbox_head',
    'roi_head.mask_head',
    'data_preprocessor',
)


def check_num_classes(cfg: Config) -> None:
    """A head's ``num_classes`` against the classes a dataset config names, before training (labels past the
    head's classes would stop it mid-run: "Target 2 is out of bounds"). Not at load: a model of another class
    count built from a config (to read a checkpoint) is fine."""
    where = osp.basename(cfg.filename or 'the config')
    model = cfg.get('model')
    named = [
        (f'{split}_dataloader.dataset', classes)
        for split in ('train', 'val', 'test')
        for dataset in split_datasets(cfg, (split,))
        for classes in [dataset.get('classes') or (dataset.get('metainfo') or {}).get('classes')]
        if isinstance(classes, (list, tuple)) and classes
    ]
    if not isinstance(model, dict) or not named:
        return
    for part in _NUM_CLASSES_AT:
        nodes: Any = model
        for key in part.split('.'):
            nodes = nodes.get(key) if isinstance(nodes, dict) else None
        for index, node in enumerate(nodes if isinstance(nodes, list) else [nodes]):
            count = node.get('num_classes') if isinstance(node, dict) else None
            if not isinstance(count, int) or isinstance(count, bool):
                continue
            for dataset, classes in named:
                if count != len(classes):
                    at = f'model.{part}' + (f'.{index}' if isinstance(nodes, list) else '')
                    raise UserInputError(
                        f'{at}.num_classes={count} ({where}) but {dataset} has {len(classes)} classes '
                        f'({", ".join(map(str, classes[:8]))}{", ..." if len(classes) > 8 else ""}); '
                        f'set {at}.num_classes={len(classes)}'
                    )


def _no_persistent_workers_without_workers(cfg: Config) -> None:
    """``num_workers=0`` (e.g. from ``--cfg-options``) on a loader with ``persistent_workers=True`` would stop
    torch's DataLoader with a ValueError; with no workers there is nothing to keep alive."""
    for split in ('train', 'val', 'test'):
        loader = cfg.get(f'{split}_dataloader')
        if isinstance(loader, dict) and loader.get('persistent_workers') and not loader.get('num_workers'):
            loader['persistent_workers'] = False


def leaf_datasets(dataset_cfg: dict) -> Iterator[dict]:
    """The dataset configs inside (possibly nested) dataset wrappers such as ``RepeatDataset``
    (``dataset=...``) and ``ConcatDataset`` (``datasets=[...]``); a plain dataset config itself."""
    for key in ('dataset', 'datasets'):
        inner = dataset_cfg.get(key)
        if isinstance(inner, dict):
            yield from leaf_datasets(inner)
            return
        if isinstance(inner, (list, tuple)):
            for item in inner:
                yield from leaf_datasets(item)
            return
    yield dataset_cfg


def split_datasets(cfg: Config, splits: Iterable[str]) -> Iterator[dict]:
    """The dataset configs of ``{split}_dataloader`` for each split the config has, wrappers unwrapped."""
    for split in splits:
        dataset = (cfg.get(f'{split}_dataloader') or {}).get('dataset')
        if dataset:
            yield from leaf_datasets(dataset)
