"""The package's layers (docs/architecture.md): imports point downward only, and importing is cheap.

Also the tests about interpreter start-up itself (what a fresh ``python tools/x.py -h`` imports and prints,
the tool runs of the tests answering as a fresh interpreter does): only these start new interpreters with
``subprocess.run``; every other test runs a tool with ``helpers.run_tool``."""

from __future__ import annotations

import ast
import re
import subprocess
import sys

import pytest
from helpers import ROOT, THREADS, run_tool, tool_env

PACKAGE = ROOT / 'repvit_mm'

# What each subpackage may import of ours, besides itself (docs/architecture.md).
BELOW = {
    'utils': set(),
    'models': {'utils'},
    'datasets': {'utils'},
    'ops': {'utils'},
    'engine': {'models', 'datasets', 'utils'},
    'classification': {'engine', 'models', 'datasets', 'utils'},
    'detection': {'engine', 'models', 'datasets', 'utils'},
    'segmentation': {'engine', 'models', 'datasets', 'utils'},
}
BELOW['apis'] = BELOW['deploy'] = set(BELOW) | {'version'}


def _layer(module: str) -> str:
    """``repvit_mm.models.convert`` -> ``models``; the package root itself is ``''``."""
    parts = module.split('.')
    return parts[1] if len(parts) > 1 else ''


def _imported_modules(path, module: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every ``repvit_mm`` import in a file, relative ones resolved."""
    package = module if path.name == '__init__.py' else module.rsplit('.', 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split('.')[: len(package.split('.')) - node.level + 1]
                name = '.'.join(base + ([node.module] if node.module else []))
                # ``from . import models``: the names are modules too
                found += [
                    (node.lineno, f'{name}.{alias.name}') if not node.module else (node.lineno, name)
                    for alias in node.names
                ]
            else:
                found.append((node.lineno, node.module or ''))
    return [(line, name) for line, name in found if name == 'repvit_mm' or name.startswith('repvit_mm.')]


def _violations() -> list[str]:
    problems = []
    for path in sorted(PACKAGE.rglob('*.py')):
        rel = path.relative_to(ROOT).with_suffix('')
        module = '.'.join(rel.parts[:-1] if rel.name == '__init__' else rel.parts)
        own = _layer(module)
        if own not in BELOW:  # the package root and version.py register / describe everything
            continue
        for line, target in _imported_modules(path, module):
            other = _layer(target)
            if other != own and other not in BELOW[own]:
                problems.append(f'{path.relative_to(ROOT)}:{line}: {own} imports {target}')
    return problems


def test_imports_point_downward():
    assert _violations() == []


# What the tools may import of ours (docs/architecture.md): the package (registration), its top layer, and the
# conventions they share: the errors they report as one line, the checked and atomic writing of outputs.
TOOL_ENTRY_POINTS = {'', 'apis', 'deploy'}
CONVENTIONS = {'repvit_mm.utils.errors', 'repvit_mm.utils.safe_checkpoint', 'repvit_mm.utils.outputs'}


def test_tools_import_only_the_top_layer():
    problems = []
    for path in sorted((ROOT / 'tools').rglob('*.py')):
        for line, target in _imported_modules(path, 'tools'):
            if _layer(target) not in TOOL_ENTRY_POINTS and target not in CONVENTIONS:
                problems.append(f'{path.relative_to(ROOT)}:{line}: imports {target}')
    assert problems == []


def test_every_subpackage_has_a_layer():
    subpackages = {p.name for p in PACKAGE.iterdir() if (p / '__init__.py').is_file()}
    assert subpackages <= set(BELOW), subpackages - set(BELOW)


def _modules_after(code: str) -> set[str]:
    # a fresh interpreter: what importing loads is the subject
    out = subprocess.run(
        [sys.executable, '-c', f'{code}\nimport sys; print(" ".join(sys.modules))'],
        cwd=ROOT,
        env=tool_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return set(out.split())


def test_import_repvit_mm_leaves_out_mmseg_and_deploy_libraries():
    loaded = _modules_after('import repvit_mm')
    assert {'torch', 'mmpretrain', 'repvit_mm.models', 'repvit_mm.classification'} <= loaded
    # (mmdet and matplotlib are not listed: mmpretrain.models imports them itself when they are installed)
    heavy = {
        'mmseg',
        'repvit_mm.detection',
        'repvit_mm.segmentation',
        'repvit_mm.deploy',
        'onnx',
        'onnxruntime',
        'coremltools',
        'timm',
    }
    assert not heavy & loaded, heavy & loaded


@pytest.mark.parametrize('package, needs', [('repvit_mm.detection', 'mmdet'), ('repvit_mm.segmentation', 'mmseg')])
def test_task_packages_import_their_library(package, needs):
    assert needs in _modules_after(f'import {package}')


# A path error per tool that takes paths (else an argument error): answered before the library is imported.
TOOL_BAD_ARGS = {
    'train.py': ['missing.py'],
    'test.py': ['missing.py', 'missing.pth'],
    'fuse.py': ['missing.py', 'missing.pth', 'out.pth'],
    'export_onnx.py': ['missing.py', 'missing.pth', 'out.onnx'],
    'export_coreml.py': ['missing.py', 'missing.pth', 'out.mlpackage'],
    'get_flops.py': ['missing.py'],
    'gpu_dense_check.py': ['--device', 'tpu'],
    'benchmark.py': ['missing.py'],
    'convert_checkpoint.py': ['missing.pth', 'out.pth', '--arch', 'm0_9'],
    'demo.py': ['missing.png', 'missing.py', 'missing.pth', '--out', 'out.png'],
    'publish_model.py': ['missing.pth', 'out.pth'],
    'make_shapes.py': ['data', '--num-train', 'many'],
    'run_demo.py': ['--no-such-option'],
    'analysis_tools/print_config.py': ['missing.py'],
    'analysis_tools/browse_dataset.py': ['missing.py', '--output-dir', 'pictures'],
    'analysis_tools/analyze_logs.py': ['plot_curve'],
}


def _tools() -> list[str]:
    return sorted(str(p.relative_to(ROOT / 'tools')) for p in (ROOT / 'tools').rglob('*.py') if p.name != 'cli.py')


def test_every_tool_has_a_cheap_error_case():
    assert sorted(TOOL_BAD_ARGS) == _tools()


def _imported(stderr: str) -> set[str]:
    """Module names from ``python -X importtime`` output."""
    return {line.rsplit('|', 1)[-1].strip() for line in stderr.splitlines() if line.startswith('import time:')}


@pytest.mark.parametrize('tool', sorted(TOOL_BAD_ARGS))
def test_tool_help_and_bad_input_import_no_torch(tool, tmp_path):
    for args, code in ((['-h'], 0), (TOOL_BAD_ARGS[tool], 2)):
        # a fresh interpreter: what the tool imports and prints at start-up is the subject
        proc = subprocess.run(
            [sys.executable, '-X', 'importtime', str(ROOT / 'tools' / tool), *args],
            cwd=tmp_path,
            env=tool_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == code, proc.stderr[-2000:]
        loaded = _imported(proc.stderr)
        assert not {'torch', 'mmengine', 'repvit_mm'} & loaded, (tool, args, {'torch', 'mmengine'} & loaded)
        noise = [line for line in proc.stderr.splitlines() if not line.startswith(('import time:', 'error:'))]
        if not code:  # the usage and nothing before it (no import-time notice)
            assert proc.stdout.startswith('usage:') and noise == [], (proc.stdout[:200], noise)
        if code:
            errors = [line for line in proc.stderr.splitlines() if line.startswith('error:')]
            assert len(errors) == 1 and 'Traceback' not in proc.stderr, proc.stderr[-2000:]


PROBE = """import atexit, sys, threading, time
atexit.register(lambda: print('atexit ran', flush=True))
threading.Thread(target=lambda: (time.sleep(0.2), print('thread done', flush=True))).start()
print('out', sys.argv[1:]); print('err', file=sys.stderr)
if sys.argv[1] == 'raise': raise ValueError('boom')
if sys.argv[1] == 'interrupt': raise KeyboardInterrupt
sys.exit(int(sys.argv[1]) if sys.argv[1].isdigit() else sys.argv[1])
"""


def test_forked_tool_runs_answer_as_a_new_interpreter(tmp_path):
    """``run_tool`` forks its runs from a process with the stack imported (tests/tool_zygote.py); a run
    answers as ``python tools/...`` does: exit code, stdout, stderr (a traceback, a message), threads waited
    for and atexit handlers run, in the working directory of the call."""
    (tmp_path / 'probe.py').write_text(PROBE)
    runs = [('fuse.py', '-h'), ('fuse.py', 'missing.py', 'ckpt.pth', 'out.pth')]
    runs += [(str(tmp_path / 'probe.py'), arg) for arg in ('0', '3', 'a message', 'raise', 'interrupt')]
    for script, *args in runs:
        forked = run_tool(script, *args, cwd=tmp_path, check=False)
        # a fresh interpreter: what a forked run is compared with
        fresh = subprocess.run(
            [sys.executable, str(ROOT / 'tools' / script), *args],
            cwd=tmp_path,
            env=tool_env(),
            capture_output=True,
            text=True,
        )
        assert (forked.returncode, forked.stdout, forked.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr)
        if script.endswith('probe.py'):
            assert forked.stdout.endswith('thread done\natexit ran\n'), forked.stdout
    assert forked.returncode == -2 and forked.stderr.endswith('KeyboardInterrupt\n')
    forked = run_tool('fuse.py', 'missing.py', 'ckpt.pth', 'out.pth', cwd=tmp_path, check=False)
    assert forked.returncode == 2 and forked.stderr.startswith('error:') and 'missing.py' in forked.stderr
    # relative paths resolve against the call's directory: there the config exists, the checkpoint not
    (tmp_path / 'here.py').write_text('')
    proc = run_tool('fuse.py', 'here.py', 'missing.pth', 'out.pth', cwd=tmp_path, check=False)
    assert proc.returncode == 2 and 'missing.pth' in proc.stderr and 'here.py' not in proc.stderr
    assert not (tmp_path / 'out.pth').exists()
    # a run past its timeout is stopped as subprocess.run stops one; the next run is served as before
    config = ROOT / 'configs' / 'classification' / 'repvit-m0.9_shapes-64px.py'
    with pytest.raises(subprocess.TimeoutExpired):
        run_tool('benchmark.py', config, '--repeats', '100000', '--batch-sizes', '1', '--shape', '64', timeout=3)
    assert run_tool('fuse.py', '-h').stdout.startswith('usage:')


def test_test_processes_take_their_share_of_the_cores():
    """Each pytest-xdist worker (one per core), and each tool run it starts, computes with its share of the
    cores. The workers inherit the controller's environment: a thread count exported there (the whole
    machine's) had every worker run OpenMP on all cores, and two busy workers spin-waited on each other
    (a training test that takes 37 s took 190 s in the suite)."""
    import torch

    assert torch.get_num_threads() <= THREADS
    assert int(tool_env()['OMP_NUM_THREADS']) <= THREADS


def test_tool_literals_match_the_library():
    """Choices the tools spell out (to answer -h without the library) are the library's."""
    from repvit_mm.datasets import SHAPES_FORMATS
    from repvit_mm.deploy.render import TASK_CHOICES
    from repvit_mm.models import RepViT

    def usage(tool: str) -> str:
        return ' '.join(run_tool(tool, '-h').stdout.split())  # argparse wraps lines at the terminal's width

    assert re.search(r'--formats \{(.*?)\}', usage('make_shapes.py')).group(1).split(',') == list(SHAPES_FORMATS)
    assert re.search(r'--task \{(.*?)\}', usage('demo.py')).group(1).split(',') == list(TASK_CHOICES)
    assert re.search(r'RepViT arch: (.*?) \(', usage('convert_checkpoint.py')).group(1).split(', ') == list(
        RepViT.arch_zoo
    )
