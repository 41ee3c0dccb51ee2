"""Pre-flight checks of the datasets a config names, run by the tools before the Runner starts.

A missing data root or annotation file should stop ``tools/train.py`` with one line naming the path,
before any work dir is written or a model is built. Each task registers the checks of its dataset types:

    @register_data_check('CocoDataset')
    def check_coco(dataset_cfg: dict) -> None: ...   # raise UserInputError naming the file
"""
from __future__ import annotations

import os.path as osp
from typing import Callable, Iterator

from mmengine.config import Config

from .errors import UserInputError
from .paths import is_remote

DataCheck = Callable[[dict], None]
_DATA_CHECKS: dict[str, list[DataCheck]] = {}

# Dataset wrappers: where the wrapped dataset config(s) sit.
_WRAPPED_KEYS = ('dataset', 'datasets')


def register_data_check(*dataset_types: str) -> Callable[[DataCheck], DataCheck]:
    """Register a check for datasets of these types (names without a scope prefix)."""
    def register(check: DataCheck) -> DataCheck:
        for name in dataset_types:
            _DATA_CHECKS.setdefault(name, []).append(check)
        return check
    return register


def _leaf_datasets(dataset_cfg) -> Iterator[dict]:
    """The real datasets inside (possibly nested) dataset wrappers such as RepeatDataset."""
    for key in _WRAPPED_KEYS:
        inner = dataset_cfg.get(key)
        if isinstance(inner, dict):
            yield from _leaf_datasets(inner)
            return
        if isinstance(inner, (list, tuple)):
            for item in inner:
                yield from _leaf_datasets(item)
            return
    yield dataset_cfg


def _check_evaluator_files(cfg: Config, split: str) -> None:
    """Evaluators that read their own annotation file (e.g. CocoMetric): the file must exist. In mmdet
    configs it is spelled ``data_root + ...`` in the base file, so overriding only ``data_root`` misses it."""
    evaluators = cfg.get(f'{split}_evaluator') or []
    for evaluator in evaluators if isinstance(evaluators, (list, tuple)) else [evaluators]:
        ann_file = evaluator.get('ann_file') if isinstance(evaluator, dict) else None
        if ann_file and not is_remote(ann_file) and not osp.isfile(ann_file):
            raise UserInputError(f'{split}_evaluator.ann_file not found: {ann_file}')


def check_datasets(cfg: Config, splits: tuple[str, ...]) -> None:
    """Run the registered checks on ``{split}_dataloader.dataset`` for each split the config has, and check
    the annotation files its evaluators read."""
    for split in splits:
        _check_evaluator_files(cfg, split)
        loader = cfg.get(f'{split}_dataloader')
        if not loader or not loader.get('dataset'):
            continue
        for dataset_cfg in _leaf_datasets(loader['dataset']):
            type_name = str(dataset_cfg.get('type', '')).split('.')[-1]
            for check in _DATA_CHECKS.get(type_name, []):
                check(dataset_cfg)
