"""A :class:`~mmengine.hooks.CheckpointHook` whose saves survive a crash at any moment.

mmengine 0.10.7 deletes the oldest kept checkpoint (and the previous best one) *before* writing the new
one, writes it in place, and rewrites ``last_checkpoint`` in place: a ``kill -9`` during a save can leave
a truncated ``iter_N.pth``, a ``last_checkpoint`` naming a deleted file and -- with ``max_keep_ckpts=1``
-- no complete checkpoint at all. Here every checkpoint and ``last_checkpoint`` is written to a temporary
file in the same folder, flushed to disk and renamed over its name (atomic on POSIX and Windows), and
older checkpoints are removed only once the new one is complete. The temporary names do not end in
``.pth``, so nothing that looks like a checkpoint is ever partial, and a save that fails (disk full,
Ctrl-C) removes its temporary file.

Files the hook finds in its folder when training starts are not its own -- unless it resumed the run that
wrote them (the kept checkpoints and best checkpoint the resumed message hub lists) -- and it never
replaces or removes those: mmengine's ``max_keep_ckpts`` clean-up and best-checkpoint swap skip them, and a
save onto one of their names is refused.
"""

from __future__ import annotations

import contextlib
import glob
import os
import os.path as osp
import shutil

from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend
from mmengine.hooks import CheckpointHook
from mmengine.registry import HOOKS

from ..utils.errors import UserInputError

__all__ = ['AtomicCheckpointHook', 'CheckpointSaveError', 'atomic_write_text']

_PARTIAL = '.partial'


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _commit(tmp: str, path: str) -> None:
    """Flush ``tmp`` to disk and rename it onto ``path``; then make the rename itself durable."""
    _fsync(tmp)
    os.replace(tmp, path)
    with contextlib.suppress(OSError):  # directories cannot be opened for fsync on every platform
        _fsync(osp.dirname(osp.abspath(path)))


class CheckpointSaveError(UserInputError):
    """A checkpoint that could not be written (disk full, or the name of a file this run does not own);
    the message names the file and what is left."""


@contextlib.contextmanager
def _removed_if_failing(tmp: str):
    """Remove ``tmp`` when the block fails in any way (disk full, Ctrl-C): no partial file stays behind."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def atomic_write_text(path: str, text: str) -> None:
    """Replace ``path`` by a file holding ``text``, never leaving it empty or half-written."""
    tmp = f'{path}{_PARTIAL}'
    with _removed_if_failing(tmp):
        with open(tmp, 'w') as f:
            f.write(text)
        _commit(tmp, path)


class _SavingAtomically:
    """The runner, as :class:`CheckpointHook`'s methods see it, with an atomic ``save_checkpoint``."""

    def __init__(self, runner, hook) -> None:
        self._runner = runner
        self._hook = hook

    def __getattr__(self, name):
        return getattr(self._runner, name)

    def save_checkpoint(self, out_dir, filename, *args, **kwargs) -> None:
        self._hook._save_atomically(self._runner, out_dir, filename, *args, **kwargs)


class _RemovalsAfterSaving:
    """The hook's file backend, with ``remove`` / ``rmtree`` held back until the next save completed."""

    def __init__(self, backend, pending: list) -> None:
        self._backend = backend
        self._pending = pending

    def __getattr__(self, name):
        return getattr(self._backend, name)

    def remove(self, path) -> None:
        self._pending.append(path)

    rmtree = remove


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """:class:`~mmengine.hooks.CheckpointHook` (same arguments) with crash-proof saves: temporary file,
    flush, rename; old checkpoints removed after the new one is complete; ``last_checkpoint`` replaced
    atomically. Checkpoints written through a non-local backend (``backend_args``) are saved as
    mmengine saves them.

    Args:
        own_folder: save into the run's own folder (its log dir, ``work_dir/YYYYmmdd_HHMMSS/``) instead of
            the work dir: ``tools/train.py --force`` into a work dir holding an earlier run's checkpoints.
    """

    def __init__(self, *args, own_folder: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.own_folder = own_folder
        self._foreign: set[str] = set()

    def before_train(self, runner) -> None:
        if self.own_folder:
            # a resumed run's kept checkpoints are in the folder it came from, not in this one
            for key in [
                k for k in runner.message_hub.runtime_info if k == 'keep_ckpt_ids' or k.startswith('best_ckpt')
            ]:
                runner.message_hub.runtime_info.pop(key)
        super().before_train(runner)
        if self.own_folder:
            self.out_dir = runner.log_dir
            runner.logger.info(f'Checkpoints will be saved to {self.out_dir} (its own folder: --force).')
        if self._local() and is_main_process():
            for leftover in glob.glob(osp.join(glob.escape(self.out_dir), f'*{_PARTIAL}')):
                os.remove(leftover)  # what a crashed save left behind
            self._adopt_copied_best()
            self._foreign = self._not_own(runner)

    def _adopt_copied_best(self) -> None:
        """A resumed run's best checkpoint as its message hub names it, in another folder (a copied or
        moved work dir): the file of that name in this folder, if there is one. The other folder's file
        is never removed (:meth:`_remove_own`)."""

        def here(path):
            if path and osp.dirname(osp.abspath(path)) != osp.abspath(self.out_dir):
                copy = osp.join(self.out_dir, osp.basename(path))
                return copy if osp.isfile(copy) else path
            return path

        if getattr(self, 'best_ckpt_path', None):
            self.best_ckpt_path = here(self.best_ckpt_path)
        for key, path in getattr(self, 'best_ckpt_path_dict', {}).items():
            self.best_ckpt_path_dict[key] = here(path)

    def _not_own(self, runner) -> set[str]:
        """The files in the hook's folder it must not replace or remove: all but the resumed run's own."""
        present = {
            osp.abspath(p)
            for folder in {self.out_dir, runner.work_dir}
            for p in glob.glob(osp.join(glob.escape(folder), '*'))
        }
        own = [getattr(self, 'best_ckpt_path', None), *getattr(self, 'best_ckpt_path_dict', {}).values()]
        own += [osp.join(self.out_dir, self.filename_tmpl.format(s)) for s in getattr(self, 'keep_ckpt_ids', ())]
        return present - {osp.abspath(p) for p in own if p}

    def _local(self) -> bool:
        backend = getattr(self.file_backend, '_backend', self.file_backend)
        return isinstance(backend, LocalBackend)

    def _save_atomically(self, runner, out_dir, filename, *args, **kwargs) -> None:
        path = osp.join(out_dir, filename)
        if osp.abspath(path) in self._foreign:
            raise CheckpointSaveError(
                f'not saving {path}: a file of that name was in {out_dir} before this run started, and a '
                'training never replaces a checkpoint it did not write (train into another --work-dir)'
            )
        try:
            with _removed_if_failing(f'{path}{_PARTIAL}'):
                runner.save_checkpoint(out_dir, f'{filename}{_PARTIAL}', *args, **kwargs)
                if is_main_process():  # save_checkpoint writes on the main process only
                    _commit(f'{path}{_PARTIAL}', path)
        except OSError as err:
            raise CheckpointSaveError(
                f'could not save {path}: {err.strerror or err}; {_last_complete(runner)}'
            ) from err

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        # mmengine's bookkeeping (keep_ckpt_ids, last_ckpt in the message hub), in a crash-proof order:
        # save the new checkpoint, point last_checkpoint at it, then drop the oldest one.
        runner = getattr(runner, '_runner', runner)
        if not self._local():
            return super()._save_checkpoint_with_step(runner, step, meta)
        stale = None
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                stale = osp.join(self.out_dir, self.filename_tmpl.format(self.keep_ckpt_ids.popleft()))
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))
        filename = self.filename_tmpl.format(step)
        self.last_ckpt = osp.join(self.out_dir, filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        self._save_atomically(
            runner,
            self.out_dir,
            filename,
            self.file_client_args,
            save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler,
            meta=meta,
            by_epoch=self.by_epoch,
            backend_args=self.backend_args,
            **self.args,
        )
        if is_main_process():
            atomic_write_text(osp.join(runner.work_dir, 'last_checkpoint'), self.last_ckpt)
            if stale is not None and osp.abspath(stale) != osp.abspath(self.last_ckpt):
                self._remove_own(stale)

    def _save_best_checkpoint(self, runner, metrics) -> None:
        if not self._local():
            return super()._save_best_checkpoint(runner, metrics)
        backend, pending = self.file_backend, []
        self.file_backend = _RemovalsAfterSaving(backend, pending)
        try:
            super()._save_best_checkpoint(_SavingAtomically(runner, self), metrics)
        finally:
            self.file_backend = backend
        if is_main_process():
            current = {
                osp.abspath(p)
                for p in [
                    getattr(self, 'best_ckpt_path', None),
                    self.last_ckpt,
                    *getattr(self, 'best_ckpt_path_dict', {}).values(),
                ]
                if p
            }
            for path in pending:
                if osp.abspath(path) not in current:
                    self._remove_own(path)

    def _remove_own(self, path: str) -> None:
        """Remove an older checkpoint of this run; one the hook found in its folder, or one in another
        folder (a resumed run's best checkpoint as it was before a work dir was copied), is left alone."""
        path = osp.abspath(path)
        if path not in self._foreign and osp.dirname(path) == osp.abspath(self.out_dir):
            _remove(path)


def _last_complete(runner) -> str:
    """Where training can continue from, for a message (``last_checkpoint`` is replaced atomically)."""
    try:
        with open(osp.join(runner.work_dir, 'last_checkpoint')) as f:
            return f'the last complete checkpoint is {f.read().strip()}'
    except OSError:
        return 'no checkpoint was saved'


def _remove(path: str) -> None:
    if osp.isdir(path):
        shutil.rmtree(path)  # checkpoints saved by deepspeed are directories
    elif osp.exists(path):
        os.remove(path)
