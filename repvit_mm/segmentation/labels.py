"""Which values a label png may hold, and the one error message for values it must not."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..utils.errors import UserInputError

_SHOWN = 8  # bad values listed in a message


def allowed_labels(num_classes: int, reduce_zero_label: bool, ignore_index: int = 255) -> str:
    """Human-readable set of the values a label png may contain."""
    if reduce_zero_label:
        # mmseg maps 0 and 255 to 255 and shifts 1..n down to 0..n-1.
        return f'0 (ignored), 1..{num_classes} (classes), 255 (ignored)'
    return f'0..{num_classes - 1} (classes), {ignore_index} (ignored)'


def invalid_raw_labels(
    values: np.ndarray, num_classes: int, reduce_zero_label: bool, ignore_index: int = 255
) -> np.ndarray:
    """The distinct values of a raw (on-disk) label map that are neither a class nor ignored."""
    values = np.unique(values)
    if reduce_zero_label:
        # 0 is fine too: mmseg turns it into 255.
        valid = ((values >= 0) & (values <= num_classes)) | (values == 255)
    else:
        valid = ((values >= 0) & (values < num_classes)) | (values == ignore_index)
    return values[~valid]


def label_range_error(
    path: str, bad: Sequence[int], num_classes: int, reduce_zero_label: bool, ignore_index: int = 255
) -> UserInputError:
    """``UserInputError`` naming the file, the offending values and what is allowed."""
    bad = [int(v) for v in bad]
    shown = ', '.join(map(str, bad[:_SHOWN])) + (', ...' if len(bad) > _SHOWN else '')
    allowed = allowed_labels(num_classes, reduce_zero_label, ignore_index)
    return UserInputError(
        f'{path}: label value(s) {shown} out of range for {num_classes} classes with '
        f'reduce_zero_label={reduce_zero_label} (allowed: {allowed})'
    )
