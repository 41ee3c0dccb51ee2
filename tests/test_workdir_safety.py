"""Work directories: a training never overwrites or deletes a checkpoint it did not write, resumes from the
newest complete one when ``last_checkpoint`` is missing, holds a lock against a second run, and ends in one
line (exit 130 / 143) on Ctrl-C / SIGTERM and on a full disk, leaving no partial file."""

from __future__ import annotations

import hashlib
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import CONFIGS, ROOT, assert_one_line_error, run_tool, short_classifier_run, tool_env

CLS_CFG = CONFIGS / 'classification' / 'repvit-m0.9_shapes-64px.py'


def options(shapes_root: Path, iters: int, **extra) -> list[str]:
    values = {**short_classifier_run(shapes_root, iters=iters), **extra}
    return ['--cfg-options', *(f'{k}={v}' for k, v in values.items())]


def hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder``, by relative path."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob('*'))
        if p.is_file()
    }


def checkpoint_hashes(folder: Path) -> dict[str, str]:
    return {name: digest for name, digest in hashes(folder).items() if name.endswith('.pth')}


@pytest.fixture(scope='module')
def first_run(shapes_root, tmp_path_factory) -> Path:
    """A work dir of a finished 5-iteration run: iter_5.pth, last_checkpoint, its logs."""
    work = tmp_path_factory.mktemp('first') / 'work'
    run_tool('train.py', CLS_CFG, '--work-dir', work, *options(shapes_root, 5))
    assert (work / 'iter_5.pth').is_file()
    return work


def copy_of(first_run: Path, tmp_path: Path) -> Path:
    work = tmp_path / 'work'
    shutil.copytree(first_run, work)
    (work / 'last_checkpoint').write_text(str(work / 'iter_5.pth'))  # the copy's own
    return work


@pytest.mark.slow
def test_second_run_is_refused_and_force_keeps_the_earlier_checkpoints(first_run, shapes_root, tmp_path):
    work = copy_of(first_run, tmp_path)
    before = hashes(work)
    proc = run_tool('train.py', CLS_CFG, '--work-dir', work, *options(shapes_root, 5), check=False)
    assert_one_line_error(
        proc,
        f'work dir {work} holds checkpoints of an earlier run (best_accuracy_top1_iter_5.pth, iter_5.pth)',
        '--resume',
        '--force',
    )
    assert hashes(work) == before  # nothing written, not even a log

    # --force: the earlier checkpoints stay; this run saves (and rotates, max_keep_ckpts=1) in its own folder
    extra = {'default_hooks.checkpoint.interval': 1, 'default_hooks.checkpoint.max_keep_ckpts': 1}
    proc = run_tool('train.py', CLS_CFG, '--work-dir', work, '--force', *options(shapes_root, 3, **extra))
    own = Path(re.search(r'^checkpoints: (.*)$', proc.stdout, re.M).group(1))
    assert own.parent == work, own
    assert sorted(p.name for p in own.glob('*.pth')) == ['best_accuracy_top1_iter_3.pth', 'iter_3.pth']
    assert {k: v for k, v in checkpoint_hashes(work).items() if '/' not in k} == checkpoint_hashes(first_run)
    assert (work / 'last_checkpoint').read_text() == str(own / 'iter_3.pth')
    assert 'they are kept, this run saves into its own folder' in proc.stdout + proc.stderr


@pytest.mark.slow
def test_resume_without_last_checkpoint_continues_from_the_newest_complete_one(first_run, shapes_root, tmp_path):
    """The reported case: mmengine logged "Auto resumed from the latest checkpoint None.", started at
    iteration 1 and overwrote iter_5.pth."""
    work = copy_of(first_run, tmp_path)
    (work / 'last_checkpoint').unlink()
    before = checkpoint_hashes(work)
    extra = {'default_hooks.checkpoint.max_keep_ckpts': 2}
    proc = run_tool('train.py', CLS_CFG, '--work-dir', work, '--resume', *options(shapes_root, 7, **extra))
    log = proc.stdout + proc.stderr
    assert f'has no last_checkpoint file; resuming from the newest complete checkpoint {work / "iter_5.pth"}' in log
    assert 'resumed epoch: 0, iter: 5' in log and 'latest checkpoint None' not in log
    from repvit_mm.models.checkpoints import read_checkpoint

    assert read_checkpoint(str(work / 'iter_7.pth')).meta['iter'] == 7
    assert {k: v for k, v in checkpoint_hashes(work).items() if k != 'iter_7.pth'} == before

    # resuming from an older checkpoint than the folder holds would overwrite the newer one: refused
    proc = run_tool(
        'train.py', CLS_CFG, '--work-dir', work, '--resume', work / 'iter_5.pth', *options(shapes_root, 7), check=False
    )
    assert_one_line_error(proc, f'holds checkpoints newer than {work / "iter_5.pth"}', 'iter_7.pth', '--force')


@pytest.mark.slow
def test_a_copied_work_dir_resumes_from_its_own_copy(first_run, shapes_root, tmp_path):
    """last_checkpoint holds an absolute path: the copy's --resume continued from the original's file."""
    work = tmp_path / 'work'
    shutil.copytree(first_run, work)
    original = checkpoint_hashes(first_run)
    proc = run_tool('train.py', CLS_CFG, '--work-dir', work, '--resume', *options(shapes_root, 6))
    log = proc.stdout + proc.stderr
    assert f'last_checkpoint names a file of another folder; resuming from {work / "iter_5.pth"}' in log
    assert 'resumed epoch: 0, iter: 5' in log
    assert (work / 'last_checkpoint').read_text() == str(work / 'iter_6.pth')
    assert checkpoint_hashes(first_run) == original and not (first_run / 'iter_6.pth').exists()


def test_newest_complete_checkpoint_skips_broken_files(first_run, tmp_path):
    from repvit_mm.apis import load_config
    from repvit_mm.apis.workdir import newest_complete_checkpoint

    work = tmp_path / 'work'
    work.mkdir()
    shutil.copy(first_run / 'iter_5.pth', work / 'iter_3.pth')
    data = (first_run / 'iter_5.pth').read_bytes()
    (work / 'iter_8.pth').write_bytes(data[: len(data) // 2])  # a save cut short by an older mmengine
    cfg = load_config(str(CLS_CFG))
    cfg.work_dir = str(work)
    newest, skipped = newest_complete_checkpoint(cfg)
    assert newest == str(work / 'iter_3.pth')
    assert len(skipped) == 1 and skipped[0].startswith(f'skipped {work / "iter_8.pth"}: ')


def test_a_live_lock_refuses_a_second_run(shapes_root, tmp_path):
    work = tmp_path / 'work'
    work.mkdir()
    holder = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'])
    try:
        (work / '.train.lock').write_text(f'{holder.pid}\n{os.uname().nodename}\n')
        proc = run_tool('train.py', CLS_CFG, '--work-dir', work, *options(shapes_root, 1), check=False)
    finally:
        holder.kill()
        holder.wait()
    assert_one_line_error(proc, f'work dir {work} is in use by another training (pid {holder.pid}')
    assert sorted(p.name for p in work.iterdir()) == ['.train.lock']


@pytest.mark.slow
def test_a_stale_lock_is_taken_over_and_released(shapes_root, tmp_path):
    work = tmp_path / 'work'
    work.mkdir()
    gone = subprocess.Popen([sys.executable, '-c', 'pass'])
    gone.wait()
    (work / '.train.lock').write_text(f'{gone.pid}\n{os.uname().nodename}\n')
    proc = run_tool('train.py', CLS_CFG, '--work-dir', work, *options(shapes_root, 1))
    assert f'took over the stale lock {work / ".train.lock"} of pid {gone.pid}' in proc.stdout + proc.stderr
    assert not (work / '.train.lock').exists() and (work / 'iter_1.pth').is_file()


def _start_training(work: Path, shapes_root: Path, *extra: str) -> subprocess.Popen:
    """A long training (a checkpoint every iteration) in a fresh interpreter, as from a shell."""
    cmd = [sys.executable, str(ROOT / 'tools' / 'train.py'), str(CLS_CFG), '--work-dir', str(work), *extra]
    cmd += options(shapes_root, 500, **{'default_hooks.checkpoint.interval': 1})
    return subprocess.Popen(cmd, env=tool_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f'training ended ({proc.returncode}): {proc.communicate()[1][-3000:]}')
        assert time.monotonic() < deadline, f'{path} did not appear'
        time.sleep(0.2)


def _wait_for_next_checkpoint(work: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    """Until ``last_checkpoint`` names another file than it does now."""
    before = (work / 'last_checkpoint').read_text()
    deadline = time.monotonic() + timeout
    while (work / 'last_checkpoint').read_text() == before:
        if proc.poll() is not None:
            raise AssertionError(f'training ended ({proc.returncode}): {proc.communicate()[1][-3000:]}')
        assert time.monotonic() < deadline, 'no new checkpoint'
        time.sleep(0.2)


def _assert_interrupted(proc: subprocess.Popen, code: int, fragment: str, work: Path) -> str:
    """The interrupted run's stderr, checked: its exit code, one line, the last checkpoint complete."""
    from repvit_mm.models.checkpoints import read_checkpoint

    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr[-3000:]
    assert_one_line_error(subprocess.CompletedProcess(proc.args, code, '', stderr), fragment)
    last = (work / 'last_checkpoint').read_text()
    assert f'last complete checkpoint is {last} (continue with --resume)' in stderr
    assert read_checkpoint(last).is_training_checkpoint
    assert not (work / '.train.lock').exists() and not list(work.glob('*.partial'))
    return stderr


@pytest.mark.slow
def test_concurrent_run_is_locked_out_and_ctrl_c_and_sigterm_end_in_one_line(shapes_root, tmp_path):
    work = tmp_path / 'work'
    first = _start_training(work, shapes_root)
    try:
        _wait_for(work / 'iter_2.pth', first)
        second = run_tool('train.py', CLS_CFG, '--work-dir', work, '--resume', *options(shapes_root, 1), check=False)
        assert_one_line_error(second, f'is in use by another training (pid {first.pid}')
        first.send_signal(signal.SIGINT)
        _assert_interrupted(first, 130, 'training interrupted (Ctrl-C)', work)

        resumed = _start_training(work, shapes_root, '--resume')
        try:
            _wait_for_next_checkpoint(work, resumed)
            resumed.send_signal(signal.SIGTERM)
            _assert_interrupted(resumed, 143, 'training interrupted (SIGTERM)', work)
        finally:
            resumed.kill()
    finally:
        first.kill()


_INTERRUPT_IN_SAVE = """
import os, runpy, signal, sys, time
import mmengine.config.config as mmengine_config
from mmengine.runner import Runner

saves = []
upstream_save, upstream_format = Runner.save_checkpoint, mmengine_config.FormatCode


def save_checkpoint(self, *args, **kwargs):
    saves.append(args)
    return upstream_save(self, *args, **kwargs)


def format_code(*args, **kwargs):  # Ctrl-C while the second save formats the config for its meta
    if len(saves) == 2:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)
    return upstream_format(*args, **kwargs)


Runner.save_checkpoint, mmengine_config.FormatCode = save_checkpoint, format_code
sys.argv = sys.argv[1:]
sys.path[0] = os.path.dirname(sys.argv[0])
runpy.run_path(sys.argv[0], run_name='__main__')
"""


@pytest.mark.slow
def test_ctrl_c_during_a_save_is_one_line(shapes_root, tmp_path):
    """mmengine's config formatting catches everything, Ctrl-C too, and raised "SyntaxError: Failed to
    format the config file" with the whole config."""
    work = tmp_path / 'work'
    driver = tmp_path / 'driver.py'
    driver.write_text(_INTERRUPT_IN_SAVE)
    cmd = [sys.executable, str(driver), str(ROOT / 'tools' / 'train.py'), str(CLS_CFG), '--work-dir', str(work)]
    cmd += options(shapes_root, 3, **{'default_hooks.checkpoint.interval': 1})
    proc = subprocess.Popen(cmd, env=tool_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stderr = _assert_interrupted(proc, 130, 'training interrupted (Ctrl-C)', work)
    assert 'Failed to format' not in stderr and 'SyntaxError' not in stderr
    assert sorted(p.name for p in work.glob('*.pth')) == ['iter_1.pth']


def _file_size_limit(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.slow
def test_disk_full_during_a_save_is_one_line_and_leaves_no_partial_file(shapes_root, tmp_path):
    """A file size limit (RLIMIT_FSIZE) makes the checkpoint's write fail as on a full disk (EFBIG; Python
    ignores SIGXFSZ), while the small logs and the config dump still fit."""
    work = tmp_path / 'work'
    cmd = [sys.executable, str(ROOT / 'tools' / 'train.py'), str(CLS_CFG), '--work-dir', str(work)]
    proc = subprocess.run(
        [*cmd, *options(shapes_root, 1)],
        env=tool_env(),
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=_file_size_limit(4 << 20),
    )
    assert_one_line_error(proc, f'could not save {work / "iter_1.pth"}: File too large', 'no checkpoint was saved')
    assert not list(tmp_path.rglob('*.partial')) and not list(tmp_path.rglob('*.pth'))


@pytest.mark.slow
def test_checkpoint_hook_never_replaces_a_file_it_found(shapes_root, tmp_path):
    """The hook's own guard, for a Runner built without the pre-flight (the Python API, mmengine's own
    tools): a save onto the name of a file that was there before the run is refused, the file untouched."""
    from repvit_mm.apis import load_config, train
    from repvit_mm.engine.checkpoint_hook import CheckpointSaveError

    work = tmp_path / 'work'
    work.mkdir()
    (work / 'iter_2.pth').write_bytes(b'not mine')
    cfg = load_config(str(CLS_CFG), short_classifier_run(shapes_root, iters=2))
    cfg.work_dir = str(work)
    with pytest.raises(CheckpointSaveError, match=f'not saving {work / "iter_2.pth"}: a file of that name was in'):
        train(cfg)
    assert (work / 'iter_2.pth').read_bytes() == b'not mine' and not list(work.rglob('*.partial'))


def test_disk_full_before_training_is_one_error(shapes_root, tmp_path, monkeypatch):
    """A disk already full when the Runner dumps the config (e.g. --resume while still full): a
    UserInputError naming the work dir (the tools print it as one line), no work dir left behind."""
    import errno

    from mmengine.config import Config

    from repvit_mm.apis import load_config, train
    from repvit_mm.utils import UserInputError

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Config, 'dump', full)
    work = tmp_path / 'work'
    cfg = load_config(str(CLS_CFG), short_classifier_run(shapes_root))
    cfg.work_dir = str(work)
    with pytest.raises(UserInputError, match=f'No space left on device while writing in {work}: no checkpoint'):
        train(cfg)
    assert not work.exists()
