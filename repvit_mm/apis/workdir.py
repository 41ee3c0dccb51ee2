"""What a training run may do to its work dir: the checkpoints of earlier runs are never overwritten or
deleted, one run at a time holds the dir (a lock file), and an interrupted or failed run ends in one line.

mmengine's Runner writes ``iter_N.pth`` over whatever has that name and its CheckpointHook deletes the
oldest kept name, whoever wrote it; ``resume=True`` without a ``last_checkpoint`` file silently starts at
iteration 1. The checks here run before the Runner exists; :class:`~repvit_mm.engine.AtomicCheckpointHook`
keeps the same promise while training (it never replaces or removes a file it found in its folder and
does not own).
"""

from __future__ import annotations

import contextlib
import errno
import os
import os.path as osp
import re
import signal
import socket
import threading
from collections.abc import Iterator

from mmengine.config import Config

from ..models.checkpoints import read_checkpoint
from ..utils.errors import UserInputError
from ..utils.paths import is_remote

__all__ = [
    'TrainingInterrupted',
    'WorkDirLocked',
    'check_work_dir',
    'disk_full',
    'signals_as_interrupts',
    'work_dir_lock',
]

LOCK_NAME = '.train.lock'
#: errno values that mean "the disk (or the quota, or the file size limit) is full".
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
#: Notes on the work dir decided before the Runner exists, logged by :func:`take_notes` once it does.
_NOTES: dict[str, list[str]] = {}


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM during training; ``exit_code`` is the shell's 128 + signal number.
    A :class:`KeyboardInterrupt`, so that code which cleans up after Ctrl-C does so after SIGTERM too."""

    def __init__(self, signum: int, message: str = '') -> None:
        super().__init__(message or f'interrupted ({signal.Signals(signum).name})')
        self.signum = signum
        self.exit_code = 128 + signum


class WorkDirLocked(UserInputError):
    """Another live training holds the work dir's lock."""


def _hook_cfg(cfg: Config) -> dict:
    return (cfg.get('default_hooks') or {}).get('checkpoint') or {}


def checkpoint_dir(cfg: Config) -> str | None:
    """Where the checkpoint hook writes (``work_dir``, or ``out_dir/<work dir name>`` as mmengine joins
    them); ``None`` for a remote one, which these checks cannot look at."""
    out_dir = _hook_cfg(cfg).get('out_dir')
    folder = cfg.work_dir if not out_dir else osp.join(out_dir, osp.basename(cfg.work_dir.rstrip(osp.sep)))
    return None if is_remote(folder) or _hook_cfg(cfg).get('backend_args') else folder


def _step_pattern(cfg: Config) -> re.Pattern:
    """``iter_(N).pth`` / ``epoch_(N).pth``: the hook's ``filename_tmpl`` with its step as a group."""
    hook = _hook_cfg(cfg)
    tmpl = hook.get('filename_tmpl') or ('epoch_{}.pth' if hook.get('by_epoch', True) else 'iter_{}.pth')
    return re.compile(re.escape(tmpl).replace(r'\{\}', r'(\d+)') + '$')


def earlier_checkpoints(cfg: Config) -> dict[str, int | None]:
    """The checkpoints in the hook's folder that a run could write the names of: ``iter_N.pth`` (their
    step N) and ``best_*.pth`` (``None``), by path."""
    folder = checkpoint_dir(cfg)
    if folder is None or not osp.isdir(folder):
        return {}
    pattern, found = _step_pattern(cfg), {}
    for name in sorted(os.listdir(folder)):
        if (match := pattern.match(name)) is not None:
            found[osp.join(folder, name)] = int(match.group(1))
        elif name.startswith('best_') and name.endswith('.pth'):
            found[osp.join(folder, name)] = None
    return found


def newest_complete_checkpoint(cfg: Config) -> tuple[str | None, list[str]]:
    """The newest ``iter_N.pth`` (highest N) in the work dir that reads as a training checkpoint, and what
    was skipped on the way (unreadable or weights-only files), as notes."""
    skipped = []
    steps = {p: s for p, s in earlier_checkpoints(cfg).items() if s is not None}
    for path in sorted(steps, key=steps.get, reverse=True):
        try:
            complete = read_checkpoint(path).is_training_checkpoint
        except Exception as err:  # truncated, random bytes, refused: not one to continue from
            skipped.append(f'skipped {path}: {str(err).splitlines()[0]}')
            continue
        if complete:
            return path, skipped
        skipped.append(f'skipped {path}: not a training checkpoint')
    return None, skipped


def _lock_holder(work_dir: str) -> tuple[int, str] | None:
    """``(pid, host)`` of the run that holds ``work_dir``'s lock, if a live one does; ``None`` if there is
    no lock or its process is gone."""
    try:
        with open(osp.join(work_dir, LOCK_NAME)) as f:
            pid_text, _, host = f.read().partition('\n')
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    host = host.strip()
    if host and host != socket.gethostname():
        return pid, host  # another machine's process: it cannot be checked from here, so it holds the lock
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, another user's
    return pid, host


def _locked_error(work_dir: str, holder: tuple[int, str]) -> WorkDirLocked:
    pid, host = holder
    where = f' on {host}' if host and host != socket.gethostname() else ''
    return WorkDirLocked(
        f'work dir {work_dir} is in use by another training (pid {pid}{where}; lock file '
        f'{osp.join(work_dir, LOCK_NAME)}); wait for it to end or train with another --work-dir'
    )


def _primary_process(cfg: Config) -> bool:
    """Rank 0 (or a run without a launcher): the one process of a distributed run that locks the work dir."""
    if cfg.get('launcher', 'none') == 'none':
        return True
    return os.environ.get('RANK', os.environ.get('SLURM_PROCID', '0')) == '0'


def check_work_dir(cfg: Config, *, force: bool = False) -> None:
    """Decide, before anything is written, what the run may do in ``cfg.work_dir`` (``cfg.resume`` and
    ``cfg.load_from`` as :func:`~repvit_mm.apis.prepare_train_cfg` set them).

    - another live training holds the work dir's lock: refused, naming its pid;
    - ``resume=True`` without a file and no ``last_checkpoint``: resumes from the newest complete
      ``iter_N.pth`` / ``epoch_N.pth`` (noted in the log), or starts afresh when there is none (noted too);
    - a new run (or one resumed from elsewhere, or from a checkpoint older than others in the folder) into
      a folder holding checkpoints whose names it could write: refused, unless ``force`` -- then this run's
      checkpoints go to its own timestamped folder ``work_dir/YYYYmmdd_HHMMSS/`` (where its log is), and
      the earlier ones stay as they are.
    """
    work_dir = cfg.work_dir
    notes = _NOTES.setdefault(osp.abspath(work_dir), [])
    notes.clear()
    if _primary_process(cfg) and (holder := _lock_holder(work_dir)) is not None:
        raise _locked_error(work_dir, holder)
    folder = checkpoint_dir(cfg)
    if folder is None:
        return
    if cfg.get('resume') and not cfg.get('load_from') and not osp.isfile(osp.join(work_dir, 'last_checkpoint')):
        newest, skipped = newest_complete_checkpoint(cfg)
        notes += skipped
        if newest is None:
            cfg.resume = False  # mmengine would log "Auto resumed from the latest checkpoint None."
            notes.append(f'--resume: no checkpoint in {folder} to resume from; training starts at the beginning')
        else:
            cfg.load_from = newest
            notes.append(
                f'--resume: {work_dir} has no last_checkpoint file; resuming from the newest complete '
                f'checkpoint {newest}'
            )
    resume_from = cfg.get('load_from') if cfg.get('resume') else None
    if resume_from is None and cfg.get('resume'):
        with open(osp.join(work_dir, 'last_checkpoint')) as f:
            resume_from = f.read().strip()
        copy = osp.join(folder, osp.basename(resume_from))
        if osp.abspath(osp.dirname(resume_from)) != osp.abspath(folder) and osp.isfile(copy):
            # a work dir copied or moved elsewhere: its pointer still names the original's file
            cfg.load_from = resume_from = copy
            notes.append(f'--resume: last_checkpoint names a file of another folder; resuming from {copy}')
    earlier = earlier_checkpoints(cfg)
    if not earlier or not _hook_cfg(cfg):
        return  # nothing to overwrite, or no checkpoint hook to do it
    if resume_from is not None and osp.abspath(osp.dirname(resume_from)) == osp.abspath(folder):
        step = _resumed_step(cfg, resume_from)
        later = [p for p, s in earlier.items() if s is not None and s > step]
        if not later:
            return  # continuing the run whose checkpoints these are
        why = f'holds checkpoints newer than {resume_from}, which resuming would overwrite ({_names(later)})'
    else:
        why = f'holds checkpoints of an earlier run ({_names(earlier)})'
    if not force:
        hint = '' if cfg.get('resume') else 'continue that run with --resume, '
        raise UserInputError(
            f'work dir {work_dir} {why}; {hint}train into another --work-dir, or pass --force to keep them and '
            "write this run's checkpoints into its own folder (work_dir/TIMESTAMP/)"
        )
    hook = _hook_cfg(cfg)
    if hook.get('type') != 'AtomicCheckpointHook':
        raise UserInputError(
            f'--force: work dir {work_dir} {why}, and the checkpoint hook {hook.get("type")} cannot keep them '
            "safe; use default_hooks.checkpoint.type='AtomicCheckpointHook' or another --work-dir"
        )
    hook['own_folder'] = True
    notes.append(f'--force: {work_dir} {why}; they are kept, this run saves into its own folder')


def _resumed_step(cfg: Config, path: str) -> int:
    """The step (iteration or epoch, as the hook numbers its files) a resumed run continues from."""
    match = _step_pattern(cfg).match(osp.basename(path))
    if match is not None:
        return int(match.group(1))
    meta = read_checkpoint(path).meta  # e.g. best_accuracy_top1_iter_3.pth
    return int(meta.get('epoch' if _hook_cfg(cfg).get('by_epoch', True) else 'iter', 0))


def _names(paths) -> str:
    names = [osp.basename(p) for p in paths]
    return ', '.join(names[:4]) + (f' and {len(names) - 4} more' if len(names) > 4 else '')


def take_notes(cfg: Config) -> list[str]:
    """The notes :func:`check_work_dir` made for ``cfg.work_dir`` (once)."""
    return _NOTES.pop(osp.abspath(cfg.work_dir), [])


@contextlib.contextmanager
def work_dir_lock(cfg: Config) -> Iterator[str | None]:
    """Hold ``work_dir/.train.lock`` (this process's pid and host) while the block runs; yields a note
    when a stale lock of a process that no longer runs was taken over. One process of a distributed run
    (rank 0) holds it."""
    if not _primary_process(cfg):
        yield None
        return
    work_dir = cfg.work_dir
    os.makedirs(work_dir, exist_ok=True)
    path = osp.join(work_dir, LOCK_NAME)
    note = None
    for _ in range(2):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            break
        except FileExistsError:
            holder = _lock_holder(work_dir)
            if holder is not None:
                raise _locked_error(work_dir, holder) from None
            with open(path) as f:
                stale = f.read().split('\n', 1)[0] or '?'
            note = f'took over the stale lock {path} of pid {stale}, which no longer runs'
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
    else:
        raise _locked_error(work_dir, _lock_holder(work_dir) or (0, ''))
    with os.fdopen(fd, 'w') as f:
        f.write(f'{os.getpid()}\n{socket.gethostname()}\n')
    try:
        yield note
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


@contextlib.contextmanager
def signals_as_interrupts() -> Iterator[list[int]]:
    """Turn SIGINT and SIGTERM into :class:`TrainingInterrupted` while the block runs (SIGTERM would end
    the process without unwinding: no lock released, no partial file removed); yields the signals
    received, so that an error mmengine made of one (its config formatting turns any exception, Ctrl-C
    too, into ``SyntaxError: Failed to format the config file``) is still known to be an interrupt."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def interrupt(signum, frame):
        received.append(signum)
        raise TrainingInterrupted(signum)

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def disk_full(err: BaseException | None) -> OSError | None:
    """The write that failed for want of space (no space, quota, file size limit) that ``err`` is or was
    raised from, if any."""
    while err is not None:
        if isinstance(err, OSError) and err.errno in _DISK_FULL:
            return err
        err = err.__cause__ or err.__context__
    return None


def last_complete_checkpoint(work_dir: str) -> str | None:
    """The checkpoint ``work_dir/last_checkpoint`` names, if it exists."""
    with contextlib.suppress(OSError):
        with open(osp.join(work_dir, 'last_checkpoint')) as f:
            path = f.read().strip()
        if osp.isfile(path):
            return path
    return None
