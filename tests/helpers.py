"""Helpers the tests share: paths, running the tools as a user would, the one-line error check, BN noise."""

from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys
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
    script: str,
    *args,
    cwd: Path | None = None,
    check: bool = True,
    timeout: int = 900,
    launcher: list[str] | None = None,
) -> subprocess.CompletedProcess:
    """Run ``tools/<script>`` in a fresh interpreter, as a user would; returns the finished process."""
    cmd = [*(launcher or [sys.executable]), str(ROOT / 'tools' / script), *map(str, args)]
    proc = subprocess.run(cmd, cwd=cwd or ROOT, env=tool_env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f'{" ".join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}'
        )
    return proc


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    """A user error: non-zero exit, a single ``error: ...`` line naming the problem, no traceback."""
    assert proc.returncode != 0, proc.stdout
    assert 'Traceback' not in proc.stderr, proc.stderr
    assert 'pkg_resources is deprecated' not in proc.stderr, proc.stderr  # no noise before the error
    lines = [line for line in proc.stderr.splitlines() if line.startswith('error:')]
    assert len(lines) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


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


TOOLS = ROOT / 'tools'
_LOADED_TOOLS: dict = {}


def load_tool(name: str):
    """``tools/<name>.py`` as a module, to call its ``main(argv)`` in-process (faster than a subprocess, same
    code); ``tools/`` goes on ``sys.path`` as it is for a script, for the shared ``tools/cli.py``."""
    if str(TOOLS) not in sys.path:
        sys.path.insert(0, str(TOOLS))
    if name == 'cli':  # the module the tools themselves import (one UsageError class)
        return importlib.import_module('cli')
    if name not in _LOADED_TOOLS:
        spec = importlib.util.spec_from_file_location(f'_tool_{name.replace("/", "_")}', TOOLS / f'{name}.py')
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up while it executes
        spec.loader.exec_module(module)
        _LOADED_TOOLS[name] = module
    return _LOADED_TOOLS[name]


def call_tool(capsys, name: str, *argv) -> subprocess.CompletedProcess:
    """Run a tool in-process as ``python tools/<name>.py ARGV`` would (its errors through ``run_cli``), and
    return what it printed."""
    run_cli = load_tool('cli').run_cli
    capsys.readouterr()
    code = 0
    try:
        run_cli(lambda: load_tool(name).main([str(a) for a in argv]))
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args=[name, *argv], returncode=code, stdout=out, stderr=err)
