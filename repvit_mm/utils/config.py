"""Loading configs for the tools, with ``--cfg-options`` checked against the config."""

from __future__ import annotations

import difflib
import inspect
import os.path as osp
from collections.abc import Iterable, Iterator
from typing import Any

from mmengine.config import Config, ConfigDict
from mmengine.runner import Runner

from .errors import UserInputError
from .option_targets import accepted_keys, arch_error, resolve_type

# Top-level keys the Runner (or ``Runner.from_cfg``/``wrap_model``) reads although configs often omit them.
_RUNNER_KEYS = frozenset(inspect.signature(Runner.__init__).parameters) - {'self'} | {
    'find_unused_parameters',
    'sync_bn',
    'runner_type',
    'model_wrapper_cfg',
    'custom_imports',
    'strict_data',
}
# Runner sections a config may leave out, whose fields ``--cfg-options`` may set one by one.
_NEW_SECTIONS = frozenset(
    {('auto_scale_lr',), ('compile',), ('env_cfg',), ('randomness',), ('env_cfg', 'mp_cfg'), ('env_cfg', 'dist_cfg')}
)
# Sections that must stay dicts, with an example of setting one field.
_DICT_SECTIONS = {
    'auto_scale_lr': 'auto_scale_lr.base_batch_size=256',
    'env_cfg': 'env_cfg.cudnn_benchmark=True',
    'randomness': 'randomness.seed=0',
}


def _closest(word: str, choices) -> str:
    """``word``'s closest valid names, for the error message."""
    choices = sorted(map(str, choices))
    close = difflib.get_close_matches(word, choices, n=3, cutoff=0.6)
    if close:
        return 'did you mean ' + ' or '.join(repr(c) for c in close) + '?'
    return f'valid: {", ".join(choices[:25])}' + (', ...' if len(choices) > 25 else '')


def _check_new_key(full_key: str, path: tuple[str, ...], node: dict, part: str, scope: str, parent: Any) -> None:
    """A key the config does not have yet must be one its consumer reads."""
    where = '.'.join(path) or 'the config'
    if not path:
        valid = _RUNNER_KEYS | set(map(str, node))
        if part in valid:
            return
        raise UserInputError(
            f"--cfg-options key '{full_key}': '{part}' is not a setting of the config or the "
            f'Runner ({_closest(part, valid)})'
        )
    try:
        valid = accepted_keys(path, node, scope, parent)
    except KeyError:
        raise UserInputError(
            f"--cfg-options key '{full_key}': '{part}' does not exist in {where} ({_closest(part, node)})"
        ) from None
    if valid is None or part in valid:
        return
    reader = f'{where} ({node["type"]})' if 'type' in node else where
    raise UserInputError(f"--cfg-options key '{full_key}': {reader} takes no '{part}' ({_closest(part, valid)})")


def _check_value(full_key: str, node: dict, part: str, value: Any, scope: str) -> None:
    """Values checked before anything is built: a backbone's ``arch`` name, a section that must be a dict."""
    if part == 'arch' and 'type' in node:
        for cls in resolve_type(node['type'], scope):
            message = arch_error(cls, value)
            if message:
                raise UserInputError(f'--cfg-options {full_key}={value}: {message}')
    if full_key in _DICT_SECTIONS and not isinstance(value, dict):
        raise UserInputError(
            f'--cfg-options {full_key}={value!r}: {full_key} is a dict; set its fields one by one, '
            f'e.g. {_DICT_SECTIONS[full_key]}'
        )


def check_cfg_options(cfg: Config, options: dict[str, Any]) -> None:
    """Reject ``--cfg-options`` keys that name nothing in ``cfg`` or nothing its consumer reads.

    Every intermediate part of a dotted key must exist (list items by index), except a Runner section the
    config leaves out (``auto_scale_lr.base_batch_size=256``, ``env_cfg.cudnn_benchmark=True``). A new last
    part must be read by what consumes its dict: an ``__init__`` argument of the class its ``type`` names
    (``model.backbone.archh`` fails), a setting of a Runner section (``train_cfg.max_iter`` fails against
    the training loop's arguments, ``env_cfg`` keys against ``Runner.setup_env``), or a top-level key the
    Runner reads. The error names the key and the closest valid names; the backbone ``arch`` value is
    checked against the backbone's architectures.
    """
    scope = cfg.get('default_scope') or 'mmengine'
    for full_key, value in options.items():
        node: Any = cfg._cfg_dict
        parent: Any = None
        parts = full_key.split('.')
        for depth, part in enumerate(parts):
            is_leaf = depth == len(parts) - 1
            path = tuple(parts[:depth])
            where = '.'.join(path) or 'the config'
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise UserInputError(
                        f"--cfg-options key '{full_key}': {where} is a list of {len(node)} "
                        f"items, '{part}' is not an index in it"
                    )
                parent, node = node, node[int(part)]
                continue
            if not isinstance(node, dict):
                raise UserInputError(f"--cfg-options key '{full_key}': {where} is a {type(node).__name__}, not a dict")
            if part in node:
                if is_leaf:
                    _check_value(full_key, node, part, value, scope)
                parent, node = node, node[part]
                continue
            if not is_leaf and tuple(parts[: depth + 1]) in _NEW_SECTIONS:
                parent, node = node, ConfigDict()  # a Runner section the config leaves out
                continue
            if not is_leaf:
                raise UserInputError(
                    f"--cfg-options key '{full_key}': '{part}' does not exist in {where} ({_closest(part, node)})"
                )
            _check_new_key(full_key, path, node, part, scope, parent)
            _check_value(full_key, node, part, value, scope)


def load_config(path: str, cfg_options: dict[str, Any] | None = None) -> Config:
    """Read a config file and merge checked ``--cfg-options`` into it."""
    if not osp.isfile(path):
        raise UserInputError(f'config file not found: {path}')
    try:
        cfg = Config.fromfile(path)
    except Exception as err:  # syntax errors, missing _base_ files, bad imports
        raise UserInputError(f'cannot read config {path}: {type(err).__name__}: {err}') from err
    if cfg_options:
        check_cfg_options(cfg, cfg_options)
        cfg.merge_from_dict(cfg_options)
    _no_persistent_workers_without_workers(cfg)
    return cfg


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
