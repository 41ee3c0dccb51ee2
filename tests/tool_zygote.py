"""A process that imports the stack once and forks a fresh child for each tool run of the tests.

Each ``python tools/<script>.py`` a test starts would spend ~5 s of CPU importing torch, mmengine,
mmpretrain, mmdet and mmseg before doing anything; the suite starts a few hundred. ``helpers.run_tool``
instead asks this process (one per pytest worker) to fork: the child runs the script as ``__main__`` with
the test's argv, working directory and environment, its stdout / stderr in files, and exits as the script
does (its exit code, a traceback for an uncaught exception, threads waited for, atexit handlers run). It
ends as multiprocessing's forked children do: those exit steps, then ``os._exit``, without the module
teardown, which in a forked child touches, and so copies, every page the imports left (~400 MB, ~1.7 s of
CPU a run). The child starts from the state a fresh interpreter has once these modules are imported. What
differs from a fresh interpreter is the import itself: tests of start-up behaviour (``-h`` without torch,
the modules a tool imports, output before the first line) start one with ``subprocess.run``
(tests/test_layers.py, which also checks that forked runs answer as a fresh interpreter does).

Protocol, one JSON line each way: request ``{"argv", "cwd", "env", "stdout", "stderr"}``; replies
``{"pid": N}`` when the child is started, then ``{"exit": CODE}`` when it has ended.
"""

from __future__ import annotations

import json
import os
import sys
from typing import NoReturn

# What the tools import, so that their children find it imported.
PRELOAD = (
    'torch',
    'torchvision',
    'mmengine.runner',
    'repvit_mm',
    'repvit_mm.apis',
    'repvit_mm.detection',
    'repvit_mm.segmentation',
    'repvit_mm.deploy',
    'mmdet.apis',
    'mmseg.apis',
    'mmpretrain.apis',
    'onnx',
    'timm',
)
# Not preloaded: onnxruntime starts a thread when imported. A process forked while another thread holds a
# lock inherits the lock held, and may wait for it forever; so the zygote stays single-threaded (it runs
# with OMP_NUM_THREADS=1, as OpenMP and OpenBLAS start their thread pools on import otherwise) and checks
# that it is before each fork. Each child sets its own thread count.


def serve() -> dict | None:
    """Answer requests until stdin closes (returns None); in a forked child, return its request."""
    replies = os.fdopen(os.dup(1), 'w', buffering=1)
    os.dup2(2, 1)  # whatever an import prints must not mix with the replies
    for name in PRELOAD:
        __import__(name)
    while line := sys.stdin.readline():
        request = json.loads(line)
        threads = os.listdir('/proc/self/task')
        if len(threads) > 1:
            raise RuntimeError(f'the tool zygote has {len(threads)} threads: a forked child could hang')
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            replies.close()
            return request
        replies.write(json.dumps({'pid': pid}) + '\n')
        _, status = os.waitpid(pid, 0)
        replies.write(json.dumps({'exit': os.waitstatus_to_exitcode(status)}) + '\n')
    return None


def become(request: dict) -> None:
    """Turn this forked child into ``python SCRIPT ARGS`` run in ``cwd`` with ``env``."""
    import random

    os.chdir(request['cwd'])
    os.environ.clear()
    os.environ.update(request['env'])
    for fd, path, flags in (
        (0, os.devnull, os.O_RDONLY),
        (1, request['stdout'], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
        (2, request['stderr'], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
    ):
        new = os.open(path, flags, 0o644)
        os.dup2(new, fd)
        os.close(new)
    sys.stdin = open(os.devnull)  # noqa: SIM115  (the interpreter's, for the child's lifetime)
    script = request['argv'][0]
    sys.argv = list(request['argv'])
    sys.path[0] = os.path.dirname(os.path.abspath(script))  # as `python SCRIPT` sets it
    # a fresh interpreter seeds these from the OS; every child would otherwise share the zygote's state
    random.seed()
    if 'numpy' in sys.modules:
        sys.modules['numpy'].random.seed()
    import torch

    torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS') or os.cpu_count()))  # a fresh process's count


def run(script: str) -> NoReturn:
    """Run ``script`` as ``__main__``, then the exit steps of ``python SCRIPT`` (threads, atexit, flushing);
    ends the process with its exit code."""
    import atexit
    import runpy
    import signal
    import threading

    code, interrupted = 0, False
    try:
        runpy.run_path(script, run_name='__main__')
    except SystemExit as exit_:
        if exit_.code is None or isinstance(exit_.code, int):
            code = exit_.code or 0
        else:  # as the interpreter does: the message on stderr, exit code 1
            print(exit_.code, file=sys.stderr)
            code = 1
    except BaseException as err:  # an uncaught exception: its traceback from the script on, exit code 1
        tb = err.__traceback__
        while tb.tb_next and tb.tb_frame.f_code.co_filename != script:  # this function's and runpy's frames
            tb = tb.tb_next
        sys.excepthook(type(err), err.with_traceback(tb), tb)
        code, interrupted = 1, isinstance(err, KeyboardInterrupt)
    threading._shutdown()  # non-daemon threads, as the interpreter waits for them (multiprocessing does too)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    if interrupted:  # as the interpreter ends after an uncaught Ctrl-C: killed by SIGINT
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(code)


if __name__ == '__main__':
    child_request = serve()
    if child_request is None:
        sys.exit(0)
    become(child_request)
    run(child_request['argv'][0])
