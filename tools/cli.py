"""What every ``tools/*.py`` command line shares: one ``error: ...`` line instead of a traceback.

This module imports only the standard library, so ``-h``, a bad argument or a missing file is answered
before torch, mmengine or ``repvit_mm`` is imported (seconds of CPU per call): each tool parses its
arguments and checks its paths first, then imports the library inside ``main``.
"""

from __future__ import annotations

import argparse
import os
import os.path as osp
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

__all__ = [
    'ArgumentParser',
    'add_cfg_options',
    'add_export_arguments',
    'add_shape_argument',
    'cfg_options',
    'existing_file',
    'export_shape',
    'parse_shape',
    'run_cli',
    'user_error',
]

#: Standard errors whose message already names the file at fault.
_OS_ERRORS = (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError, NotADirectoryError)


class UsageError(ValueError):
    """A bad argument or path found by a tool before the library is imported."""


class ArgumentParser(argparse.ArgumentParser):
    """``argparse`` with bad arguments reported as one ``error: ...`` line (exit 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f'error: {message} (see {self.prog} --help)\n')


def existing_file(path: str, what: str) -> str:
    """``path`` if it is a readable file (or a URL, which the library reads); else a :class:`UsageError`."""
    if '://' in path:
        return path
    if not osp.isfile(path):
        raise UsageError(f'{what} not found: {path}')
    if not os.access(path, os.R_OK):
        raise UsageError(f'{what} not readable: {path}')
    return path


def add_cfg_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        default=None,
        metavar='KEY=VALUE',
        help='override config settings, e.g. train_dataloader.batch_size=32 '
        '(values as in mmengine: 1, 1e-3, a,b, [1,2], "(1,2)", True, None)',
    )


def cfg_options(values: Sequence[str] | None) -> dict | None:
    """``--cfg-options KEY=VALUE ...`` as mmengine's ``DictAction`` parses them (imports mmengine), plus
    ``KEY=dict(a=1,b=x)`` values (mmengine recurses on them until a ``RecursionError``)."""
    if not values:
        return None
    from mmengine.config import DictAction

    parsed = argparse.Namespace()
    plain, dicts = [], {}
    for item in values:
        key, sep, value = item.partition('=')
        if sep and value.strip('\'"').replace(' ', '').startswith('dict('):
            dicts[key] = _dict_value(value.strip('\'"').replace(' ', ''), item)
        else:
            plain.append(item)
    try:
        DictAction(option_strings=['--cfg-options'], dest='cfg_options')(None, parsed, plain)
    except (ValueError, AssertionError) as err:  # ``KEY`` without ``=VALUE``, unbalanced brackets
        raise UsageError(f'--cfg-options: {err}') from None
    return {**(parsed.cfg_options or {}), **dicts}


def _dict_value(text: str, item: str) -> dict:
    """``dict(a=1,b=dict(c=x))`` as a dict; the values as mmengine's ``DictAction`` parses them."""
    from mmengine.config import DictAction

    if not text.endswith(')') or text.count('(') != text.count(')') or text.count('[') != text.count(']'):
        raise UsageError(f'--cfg-options {item}: unbalanced brackets in dict(...)')
    inner, fields, depth, start = text[len('dict(') : -1], [], 0, 0
    for index, char in enumerate(inner + ','):
        depth += (char in '([') - (char in ')]')
        if char == ',' and depth == 0:
            fields.append(inner[start:index])
            start = index + 1
    result = {}
    for field in filter(None, fields):
        name, sep, value = field.partition('=')
        if not sep or not name.isidentifier():
            raise UsageError(f'--cfg-options {item}: {field!r} is not NAME=VALUE')
        result[name] = _dict_value(value, item) if value.startswith('dict(') else DictAction._parse_iterable(value)
    return result


def add_shape_argument(parser: argparse.ArgumentParser, default_help: str) -> None:
    parser.add_argument(
        '--shape',
        type=int,
        nargs='+',
        default=None,
        metavar='N',
        help=f'input height and width (one number: square); default {default_help}',
    )


def parse_shape(values: Sequence[int] | None, default: tuple[int, int] | None) -> tuple[int, int] | None:
    """``--shape H W`` or ``--shape S`` as ``(H, W)``; ``default`` when not given."""
    if values is None:
        return default
    if len(values) not in (1, 2) or min(values) < 1:
        raise UsageError(f'--shape takes one or two positive numbers (H W), got {list(values)}')
    return (values[0], values[0]) if len(values) == 1 else (values[0], values[1])


def add_export_arguments(parser: argparse.ArgumentParser, out_help: str) -> None:
    """CONFIG CHECKPOINT OUT, ``--shape``, ``--backbone-only`` and ``--force``: what every exporter takes."""
    parser.add_argument('config', help='config file (classifier, detector or segmentor)')
    parser.add_argument('checkpoint', help='training or fused checkpoint')
    parser.add_argument('out', help=out_help)
    add_shape_argument(
        parser, "the classifier's test crop, the segmentor's training crop (data_preprocessor.size), 512 for a backbone"
    )
    parser.add_argument(
        '--backbone-only',
        action='store_true',
        help='export the backbone only: feature maps out (default: the whole classifier or segmentor)',
    )
    parser.add_argument('--force', action='store_true', help='replace OUT if it exists')


def export_shape(args: argparse.Namespace) -> tuple[int, int] | None:
    """The export resolution ``--shape``; None when not given (the library reads the default off the config)."""
    return parse_shape(args.shape, None)


def user_error(err: BaseException) -> bool:
    """Whether ``err`` reports bad input (its message is for the user) rather than a bug."""
    if isinstance(err, (UsageError, *_OS_ERRORS)):
        return True
    if 'repvit_mm' not in sys.modules:  # nothing of the library ran, so none of its errors can be here
        return False
    from repvit_mm.utils.errors import UserInputError
    from repvit_mm.utils.safe_checkpoint import UnsafeCheckpointError

    return isinstance(err, (UserInputError, UnsafeCheckpointError))


def run_cli(main: Callable[[], object]) -> None:
    """Run ``main``; print user errors as ``error: ...`` (exit 2), Ctrl-C (and the library's SIGTERM, a
    ``KeyboardInterrupt`` with an ``exit_code``) as one line with the shell's 130 / 143.
    ``REPVIT_MM_DEBUG=1`` shows tracebacks."""
    try:
        main()
    except KeyboardInterrupt as err:
        if os.environ.get('REPVIT_MM_DEBUG'):
            raise
        print(f'error: {err or "interrupted (Ctrl-C)"}', file=sys.stderr)
        sys.exit(getattr(err, 'exit_code', 130))
    except Exception as err:
        if not user_error(err) or os.environ.get('REPVIT_MM_DEBUG'):
            raise
        print(f'error: {_own_message(err)}', file=sys.stderr)
        sys.exit(2)


def _own_message(err: BaseException) -> str:
    """The error's message; for one re-raised from a DataLoader worker (which carries the worker's whole
    traceback in its message), the original error's message only."""
    if 'repvit_mm' in sys.modules:
        from repvit_mm.utils.errors import original_message

        return original_message(err)
    return str(err)
