"""Writing the tools' outputs: refuse to overwrite without ``force``, never leave half-written files.

A tool first calls :func:`check_output` (cheap, before any model is built), then writes through
:func:`atomic_output`: the result (a file or a directory) goes to a temporary sibling and replaces ``out``
only once complete, so a failed export or an interrupted dataset build leaves an existing output untouched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import UserInputError

__all__ = ['check_output', 'atomic_output', 'check_writable']


def check_output(out: str | os.PathLike, force: bool = False, *, suffixes: tuple[str, ...] = ()) -> Path:
    """Check that ``out`` can be written; return it as a :class:`Path`.

    Raises:
        UserInputError: ``out`` exists and ``force`` is false, its directory is missing or not writable,
            or its name does not end with one of ``suffixes``.
    """
    path = Path(out).expanduser()
    if suffixes and not path.name.endswith(suffixes):
        raise UserInputError(f'output {path}: expected a {" or ".join(suffixes)} file name')
    if path.exists() and not force:
        raise UserInputError(f'output {path} already exists; not overwriting it (pass --force to replace it)')
    if path.is_dir() and not path.name.endswith('.mlpackage'):
        raise UserInputError(f'output {path} is a directory')
    parent = path.parent.resolve()
    if not parent.is_dir():
        raise UserInputError(f'cannot write {path}: directory {parent} does not exist')
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserInputError(f'cannot write {path}: directory {parent} is not writable')
    return path


def check_writable(path: str | os.PathLike, what: str) -> None:
    """Check that the folder ``path`` (or the file it names, with ``what`` saying which) can be created or
    written: its nearest existing folder takes a new entry. Tried, not read from the permission bits: those
    do not stop root, a read-only mount does.

    Raises:
        UserInputError: naming ``what`` and the folder that refuses it.
    """
    existing = Path(path).expanduser().absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserInputError(f'{what} {path}: {existing} is a file, not a folder')
    try:
        os.rmdir(tempfile.mkdtemp(prefix='.write-check-', dir=existing))
    except OSError as err:
        raise UserInputError(f'{what} {path}: cannot write in {existing} ({err.strerror})') from None


@contextlib.contextmanager
def atomic_output(out: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``out``; move it onto ``out`` when the block succeeds.

    Works for files and directories (``.mlpackage``). If the block raises, the temporary is removed
    and ``out`` is left as it was.
    """
    tmp_dir = Path(tempfile.mkdtemp(prefix=f'.{out.name}.', dir=out.parent))
    tmp = tmp_dir / out.name
    try:
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f'nothing was written to {tmp}')
        if out.is_dir() and not out.is_symlink():
            # os.replace cannot replace a non-empty directory: move the old one aside first
            old = tmp_dir / (out.name + '.old')
            os.replace(out, old)
            os.replace(tmp, out)
        else:
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
