"""What the deploy tools' command lines share."""
from __future__ import annotations

import argparse
from collections.abc import Sequence

from ..utils.errors import UserInputError

__all__ = ['add_shape_argument', 'parse_shape', 'add_export_arguments', 'export_shape']


def add_shape_argument(parser: argparse.ArgumentParser, default_help: str) -> None:
    parser.add_argument('--shape', type=int, nargs='+', default=None, metavar='N',
                        help=f'input height and width (one number: square); default {default_help}')


def parse_shape(values: Sequence[int] | None, default: tuple[int, int] | None) -> tuple[int, int] | None:
    """``--shape H W`` or ``--shape S`` as ``(H, W)``; ``default`` when not given."""
    if values is None:
        return default
    if len(values) not in (1, 2) or min(values) < 1:
        raise UserInputError(f'--shape takes one or two positive numbers (H W), got {list(values)}')
    return (values[0], values[0]) if len(values) == 1 else (values[0], values[1])


def add_export_arguments(parser: argparse.ArgumentParser, out_help: str) -> None:
    """CONFIG CHECKPOINT OUT, ``--shape``, ``--backbone-only`` and ``--force``: what every exporter takes."""
    parser.add_argument('config', help='config file (classifier, detector or segmentor)')
    parser.add_argument('checkpoint', help='training or fused checkpoint')
    parser.add_argument('out', help=out_help)
    add_shape_argument(parser, '224, 512 with --backbone-only')
    parser.add_argument('--backbone-only', action='store_true', help='export the backbone: feature maps out')
    parser.add_argument('--force', action='store_true', help='replace OUT if it exists')


def export_shape(args: argparse.Namespace) -> tuple[int, int]:
    """The export resolution: ``--shape``, else 224 for a classifier and 512 for a dense backbone."""
    return parse_shape(args.shape, (512, 512) if args.backbone_only else (224, 224))
