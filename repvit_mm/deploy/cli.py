"""What the deploy tools' command lines share."""
from __future__ import annotations

import argparse
from collections.abc import Sequence

from ..utils.errors import UserInputError

__all__ = ['add_shape_argument', 'parse_shape']


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
