from .checkpoint_hook import AtomicCheckpointHook
from .compile import CompileTrainStepHook, eager_data_preprocessor, plain_param_groups
from .ddp import CPUDistributedDataParallel
from .hooks import ReparameterizeHook
from .precision import AmpWhereCUDAOptimWrapperConstructor, amp_twin, fp32_optim_wrapper
from .schedulers import EpochEndCosineLR

__all__ = [
    'AmpWhereCUDAOptimWrapperConstructor',
    'AtomicCheckpointHook',
    'CPUDistributedDataParallel',
    'CompileTrainStepHook',
    'EpochEndCosineLR',
    'ReparameterizeHook',
    'amp_twin',
    'eager_data_preprocessor',
    'fp32_optim_wrapper',
    'plain_param_groups',
]
