from .checkpoint_hook import AtomicCheckpointHook
from .compile import CompileTrainStepHook, plain_param_groups, prepare_compiled_train_step
from .ddp import CPUDistributedDataParallel
from .hooks import ReparameterizeHook
from .param_groups import MergedGroupsOptimWrapperConstructor, merge_param_groups
from .precision import AmpWhereCUDAOptimWrapperConstructor, amp_twin, fp32_optim_wrapper
from .schedulers import EpochEndCosineLR

__all__ = [
    'AmpWhereCUDAOptimWrapperConstructor',
    'AtomicCheckpointHook',
    'CPUDistributedDataParallel',
    'CompileTrainStepHook',
    'EpochEndCosineLR',
    'MergedGroupsOptimWrapperConstructor',
    'ReparameterizeHook',
    'amp_twin',
    'fp32_optim_wrapper',
    'merge_param_groups',
    'plain_param_groups',
    'prepare_compiled_train_step',
]
