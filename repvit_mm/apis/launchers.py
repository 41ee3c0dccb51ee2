"""The ``--launcher`` environments: checked before the Runner starts, and joined with gloo on CPU-only nodes.

mmengine's ``init_dist`` reads the variables torchrun (``pytorch``) or srun (``slurm``) set, and pins each
process to a GPU with ``torch.cuda.set_device`` before it creates the process group. Started by hand, that
is a ``KeyError: 'RANK'`` traceback; on a node without GPUs, a CUDA driver error. Here a missing variable is
one line saying how to start the tool, and without CUDA the process group is created with gloo from the same
variables mmengine reads (``Runner.setup_env`` then finds it initialised and leaves it).
"""

from __future__ import annotations

import os
import shutil
import subprocess

import torch

from ..utils.errors import UserInputError

#: What each launcher sets for every process.
LAUNCHER_ENV = {
    'pytorch': ('RANK', 'LOCAL_RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'),
    'slurm': ('SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_NODELIST'),
}
_HOW_TO_START = {
    'pytorch': 'start it with torchrun (bash tools/dist_train.sh CONFIG NUM_PROCS, or torchrun '
    '--nproc_per_node=N tools/train.py CONFIG --launcher pytorch), or drop --launcher',
    'slurm': 'start it with srun (bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR), or drop --launcher',
}


def check_launcher_env(launcher: str) -> None:
    """Raise :class:`UserInputError` when the launcher's environment variables are missing."""
    missing = [name for name in LAUNCHER_ENV.get(launcher, ()) if name not in os.environ]
    if missing:
        raise UserInputError(
            f'--launcher {launcher}: {", ".join(missing)} not set (this process was not started '
            f'by {"torchrun" if launcher == "pytorch" else "srun"}); {_HOW_TO_START[launcher]}'
        )
    if (
        launcher == 'slurm'
        and not torch.cuda.is_available()
        and 'MASTER_ADDR' not in os.environ
        and shutil.which('scontrol') is None
    ):
        raise UserInputError(
            '--launcher slurm: MASTER_ADDR is not set and scontrol (which names the first node '
            f'of {os.environ["SLURM_NODELIST"]}) is not on the PATH; export MASTER_ADDR'
        )


def _slurm_to_torch_env() -> None:
    """Set the torch.distributed variables from Slurm's, as mmengine's ``_init_dist_slurm`` does."""
    os.environ.setdefault('MASTER_PORT', '29500')
    if 'MASTER_ADDR' not in os.environ:
        nodes = os.environ['SLURM_NODELIST']
        os.environ['MASTER_ADDR'] = subprocess.getoutput(f'scontrol show hostname {nodes} | head -n1')
    os.environ['WORLD_SIZE'] = os.environ['SLURM_NTASKS']
    os.environ['RANK'] = os.environ['SLURM_PROCID']
    os.environ['LOCAL_RANK'] = os.environ.get('SLURM_LOCALID', '0')


def init_cpu_process_group(launcher: str) -> None:
    """Join the launcher's process group with gloo when there is no GPU (mmengine's ``init_dist`` calls
    ``torch.cuda.set_device`` first, which fails on a CPU-only node)."""
    if launcher not in LAUNCHER_ENV or torch.cuda.is_available() or torch.distributed.is_initialized():
        return
    if launcher == 'slurm':
        _slurm_to_torch_env()
    torch.distributed.init_process_group(backend='gloo')
