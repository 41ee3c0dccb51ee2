from .checkpoint_hook import AtomicCheckpointHook
from .ddp import CPUDistributedDataParallel
from .hooks import ReparameterizeHook
from .precision import AmpWhereCUDAOptimWrapperConstructor, amp_twin, fp32_optim_wrapper
from .schedulers import EpochEndCosineLR

__all__ = [
    'AmpWhereCUDAOptimWrapperConstructor',
    'AtomicCheckpointHook',
    'CPUDistributedDataParallel',
    'EpochEndCosineLR',
    'ReparameterizeHook',
    'amp_twin',
    'fp32_optim_wrapper',
]
