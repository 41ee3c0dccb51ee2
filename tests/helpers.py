"""Helpers the tests share: paths, running the tools as a user would, the one-line error check, BN noise.

A test runs a tool one way: ``run_tool('train.py', *args, cwd=..., check=..., timeout=...)``, which is
``python tools/train.py ARGS`` in a process of its own (forked from ``tests/tool_zygote.py``) and returns
its exit code, stdout and stderr; bad input is checked with ``assert_one_line_error``. Only tests of
interpreter start-up (tests/test_layers.py) start a new interpreter themselves. docs/development.md has
the details.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / 'configs'
# Intra-op threads per test process: the cores shared among pytest-xdist's workers (`make test` runs one
# worker per core), so that workers and the tools they start do not oversubscribe the machine.
WORKERS = int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1'))
THREADS = max(1, (os.cpu_count() or 1) // WORKERS)
# widths of the four stages of the v1.1 archs (what FPN necks take), as the paper and timm have them
STAGE_WIDTHS = {
    'm0_6': [40, 80, 160, 320],
    'm0_9': [48, 96, 192, 384],
    'm1_0': [56, 112, 224, 448],
    'm1_1': [64, 128, 256, 512],
    'm1_5': [64, 128, 256, 512],
    'm2_3': [80, 160, 320, 640],
}
# width of the last stage (the classifier head's input) per arch, as the paper and timm have them
CHANNELS = {
    'm0_6': 320,
    'm0_9': 384,
    'm1_0': 448,
    'm1_1': 512,
    'm1_5': 512,
    'm2_3': 640,
    'm1': 384,
    'm2': 512,
    'm3': 512,
}


def tool_env() -> dict:
    """The environment of a tool run: this tree first on the path, no debug tracebacks."""
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join([str(ROOT), env.get('PYTHONPATH', '')])
    env.setdefault('OMP_NUM_THREADS', str(THREADS))
    env.pop('REPVIT_MM_DEBUG', None)
    return env


def run_tool(
    script: str, *args, cwd: Path | None = None, check: bool = True, timeout: int = 900
) -> subprocess.CompletedProcess:
    """Run ``python tools/<script> ARGS`` in its own process, as a user would; returns the finished process
    (stdout and stderr as text). With ``check``, a non-zero exit fails the test with the tool's output.

    The process is forked from this worker's tool zygote (``tests/tool_zygote.py``: the stack already
    imported, ~5 s of CPU saved per run); it is otherwise the process ``python tools/<script>`` would be."""
    cmd = [sys.executable, str(ROOT / 'tools' / script), *map(str, args)]
    proc = _ZYGOTE.run(cmd, cwd or ROOT, timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f'{" ".join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}'
        )
    return proc


class _ToolZygote:
    """This process's ``tests/tool_zygote.py``, started at the first tool run, one run at a time."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None
        self._pending = b''  # reply bytes read but not yet parsed
        self._lock = threading.Lock()

    def _started(self) -> subprocess.Popen:
        if self._proc is None or self._proc.poll() is not None:
            self._proc = subprocess.Popen(
                [sys.executable, str(Path(__file__).with_name('tool_zygote.py'))],
                cwd=ROOT,
                env=dict(tool_env(), OMP_NUM_THREADS='1'),  # single-threaded: see tool_zygote.py
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,  # read with os.read only: nothing waits unseen in a buffer
            )
            self._pending = b''
            atexit.register(self._proc.kill)
        return self._proc

    def _reply(self, proc: subprocess.Popen, timeout: float | None = None) -> dict:
        """The next reply line (select() on the pipe, then os.read: no bytes can hide in a read buffer)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while b'\n' not in self._pending:
            if deadline is not None:
                if not select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))[0]:
                    raise TimeoutError
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError(f'tests/tool_zygote.py ended (exit code {proc.wait()}); its stderr says why')
            self._pending += chunk
        line, self._pending = self._pending.split(b'\n', 1)
        return json.loads(line)

    def run(self, cmd: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
        with self._lock, tempfile.TemporaryDirectory(prefix='tool-') as tmp:
            out, err = Path(tmp, 'stdout'), Path(tmp, 'stderr')
            request = dict(argv=cmd[1:], cwd=str(cwd), env=tool_env(), stdout=str(out), stderr=str(err))
            proc = self._started()
            proc.stdin.write(json.dumps(request).encode() + b'\n')
            proc.stdin.flush()
            pid = self._reply(proc)['pid']
            try:
                code = self._reply(proc, timeout)['exit']
            except TimeoutError:
                os.kill(pid, signal.SIGKILL)
                self._reply(proc)
                raise subprocess.TimeoutExpired(cmd, timeout, out.read_text(), err.read_text()) from None
            return subprocess.CompletedProcess(cmd, code, out.read_text(), err.read_text())


_ZYGOTE = _ToolZygote()


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    """A user error: non-zero exit, a single ``error: ...`` line naming the problem, no traceback."""
    assert proc.returncode != 0, proc.stdout
    assert 'Traceback' not in proc.stderr, proc.stderr
    # no noise before the error (import-time notices would show in a fresh interpreter's start-up, see
    # tests/test_startup.py)
    assert 'pkg_resources is deprecated' not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith('error:')]
    assert len(lines) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def short_classifier_run(shapes_root: Path, iters: int = 2, batch_size: int = 4) -> dict:
    """``--cfg-options`` (as a dict) of a short run of the Shapes classifier config on the session's Shapes
    data: ``iters`` iterations of ``batch_size`` images, a checkpoint after the last, no validation."""
    data = str(shapes_root / 'imagenet')
    return {
        'train_dataloader.dataset.data_root': data,
        'val_dataloader.dataset.data_root': data,
        'train_dataloader.batch_size': batch_size,
        'train_cfg.max_iters': iters,
        'train_cfg.val_interval': iters + 1,
        'default_hooks.checkpoint.interval': iters,
    }


def randomize_bn_(model, seed: int = 0):
    """Give every BatchNorm non-trivial statistics and affine parameters (the FFN's zero-initialised ones
    too), so that BN folding really changes weights; returns the model."""
    import torch
    from torch.nn.modules.batchnorm import _BatchNorm

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, _BatchNorm):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=gen) * 0.2)
                module.running_var.copy_(torch.rand(n, generator=gen) * 0.8 + 0.6)
                module.weight.copy_(torch.rand(n, generator=gen) * 0.8 + 0.4)
                module.bias.copy_(torch.randn(n, generator=gen) * 0.2)
    return model


def random_checkpoint(config: Path, path: Path) -> Path:
    """The config's model, randomly initialised (no pretrained backbone), saved as tools/train.py saves it:
    ``{'state_dict': ..., 'meta': {'dataset_meta': ...}}`` with the classes of its training set."""
    import torch
    from mmengine.config import Config
    from mmengine.registry import MODELS, DefaultScope

    cfg = Config.fromfile(str(config))
    if 'init_cfg' in cfg.model.get('backbone', {}):
        cfg.model.backbone.init_cfg = None
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(cfg.model)
    dataset = cfg.train_dataloader.dataset
    meta = dict(dataset.get('metainfo') or {'classes': dataset.classes})
    torch.save({'state_dict': model.state_dict(), 'meta': {'dataset_meta': meta}}, path)
    return path


def coreml_program_spec(package: Path, height: int, width: int):
    """The spec of the Core ML file ``package``, checked to be an ML Program whose one input is an RGB image
    named ``image`` of ``height`` x ``width`` (what every export_coreml.py file takes)."""
    import coremltools as ct

    spec = ct.models.MLModel(str(package), skip_model_load=True).get_spec()
    assert spec.WhichOneof('Type') == 'mlProgram'
    (image,) = spec.description.input
    assert image.name == 'image' and image.type.WhichOneof('Type') == 'imageType'
    assert (image.type.imageType.height, image.type.imageType.width) == (height, width)
    assert image.type.imageType.colorSpace == ct.proto.FeatureTypes_pb2.ImageFeatureType.RGB
    return spec


def orchestrator_module(name: str):
    """``tools/<name>.py`` imported as the module ``name``, for the tools that are sequences of tool runs
    (``run_demo``, ``gpu_dense_check``): their tests run each step with :func:`forked_step` instead of a new
    interpreter (``tools/`` on the path, as for a script)."""
    import importlib.util

    if str(ROOT / 'tools') not in sys.path:
        sys.path.insert(0, str(ROOT / 'tools'))
    spec = importlib.util.spec_from_file_location(name, ROOT / 'tools' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while it executes; `import run_demo` finds it
    spec.loader.exec_module(module)
    return module


def forked_step(script: str, *args, prefix: str = '', threads: int | None = None) -> str:
    """``run_demo._tool`` as the tests run it: :func:`run_tool`, one step at a time (the worker has its share
    of the cores; ``prefix`` and ``threads`` serve side-by-side runs only), its output printed and returned."""
    proc = run_tool(script, *args, timeout=900)
    print(proc.stdout, end='')
    return proc.stdout
