"""Loading configs for the tools, with ``--cfg-options`` checked against the config."""
from __future__ import annotations

import inspect
import os.path as osp
from typing import Any

from mmengine.config import Config
from mmengine.runner import Runner

from .errors import UserInputError

# Top-level keys the Runner (or ``Runner.from_cfg``/``wrap_model``) reads although configs often omit them.
_RUNNER_KEYS = frozenset(inspect.signature(Runner.__init__).parameters) - {'self'} | {
    'find_unused_parameters', 'sync_bn', 'runner_type', 'model_wrapper_cfg', 'custom_imports'}


def check_cfg_options(cfg: Config, options: dict[str, Any]) -> None:
    """Reject ``--cfg-options`` keys that name nothing in ``cfg``.

    Every intermediate part of a dotted key must exist (list items by index). A new last part is accepted
    only where it is an argument of something the config builds (its dict has a ``type``), a setting of a
    top-level section (``train_cfg.max_iters``), or a top-level key the Runner reads; so a typo such as
    ``model.bakbone.arch`` fails here instead of silently adding a key nobody reads.
    """
    for full_key in options:
        node: Any = cfg._cfg_dict
        parts = full_key.split('.')
        for depth, part in enumerate(parts):
            is_leaf = depth == len(parts) - 1
            where = '.'.join(parts[:depth]) or 'the config'
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise UserInputError(f"--cfg-options key '{full_key}': {where} is a list of {len(node)} "
                                         f"items, '{part}' is not an index in it")
                node = node[int(part)]
                continue
            if not isinstance(node, dict):
                raise UserInputError(f"--cfg-options key '{full_key}': {where} is a "
                                     f'{type(node).__name__}, not a dict')
            if part in node:
                node = node[part]
                continue
            if is_leaf and (depth == 0 and part in _RUNNER_KEYS or depth == 1 or 'type' in node):
                break
            known = ', '.join(sorted(map(str, node))[:25])
            raise UserInputError(f"--cfg-options key '{full_key}': '{part}' does not exist in {where} "
                                 f'(it has: {known})')


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
    return cfg

