"""Pre-flight checks of the datasets a config names, run by the tools before the Runner starts.

A missing data root or annotation file should stop ``tools/train.py`` with one line naming the path,
before any work dir is written or a model is built. Each task registers the checks of its dataset types:

    @register_data_check('CocoDataset')
    def check_coco(dataset_cfg: dict) -> None: ...   # raise UserInputError naming the file
"""

from __future__ import annotations

import os.path as osp
import sys
from collections.abc import Callable

from mmengine.config import Config

from .config import split_datasets
from .errors import DataWarning, UserInputError
from .paths import is_remote

DataCheck = Callable[[dict], None]
_DATA_CHECKS: dict[str, list[DataCheck]] = {}
EvaluatorCheck = Callable[[dict, dict], None]
_EVALUATOR_CHECKS: dict[str, list[EvaluatorCheck]] = {}


def register_data_check(*dataset_types: str) -> Callable[[DataCheck], DataCheck]:
    """Register a check for datasets of these types (names without a scope prefix)."""

    def register(check: DataCheck) -> DataCheck:
        for name in dataset_types:
            _DATA_CHECKS.setdefault(name, []).append(check)
        return check

    return register


def register_evaluator_check(*evaluator_types: str) -> Callable[[EvaluatorCheck], EvaluatorCheck]:
    """Register a check ``check(evaluator_cfg, dataset_cfg)`` for evaluators of these types (e.g. a metric
    that reads its own annotation file must agree with the dataset's classes)."""

    def register(check: EvaluatorCheck) -> EvaluatorCheck:
        for name in evaluator_types:
            _EVALUATOR_CHECKS.setdefault(name, []).append(check)
        return check

    return register


def _check_evaluators(cfg: Config, split: str) -> None:
    evaluators = cfg.get(f'{split}_evaluator') or []
    datasets = list(split_datasets(cfg, (split,)))
    for evaluator in evaluators if isinstance(evaluators, (list, tuple)) else [evaluators]:
        if not isinstance(evaluator, dict) or len(datasets) != 1:
            continue
        for check in _EVALUATOR_CHECKS.get(str(evaluator.get('type', '')).split('.')[-1], []):
            check(evaluator, datasets[0])


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
    the annotation files its evaluators read. A :class:`DataWarning` (data the loader would partly drop) is
    printed as one ``warning:`` line, or raised when the config sets ``strict_data=True`` (``--strict-data``)."""
    for split in splits:
        for dataset_cfg in split_datasets(cfg, (split,)):
            type_name = str(dataset_cfg.get('type', '')).split('.')[-1]
            for check in _DATA_CHECKS.get(type_name, []):
                try:
                    check(dataset_cfg)
                except DataWarning as err:
                    if cfg.get('strict_data', False):
                        raise UserInputError(f'{err} (strict data checking is on)') from None
                    print(f'warning: {err} (--strict-data makes this an error)', file=sys.stderr)
                except UserInputError as err:
                    raise UserInputError(f'{err}{_shapes_hint(dataset_cfg, str(err))}') from None
        _check_evaluator_files(cfg, split)
        _check_evaluators(cfg, split)


def _shapes_hint(dataset_cfg: dict, message: str) -> str:
    """How to make the Shapes data, when that is what is missing."""
    root = osp.normpath(str(dataset_cfg.get('data_root') or ''))
    if 'shapes' not in root.split(osp.sep) or 'not found' not in message:
        return ''
    return f'; make the Shapes data with: python tools/make_shapes.py {osp.dirname(root)}'
