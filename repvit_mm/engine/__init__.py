from .checkpoint_hook import AtomicCheckpointHook
from .ddp import CPUDistributedDataParallel
from .hooks import ReparameterizeHook

__all__ = ['AtomicCheckpointHook', 'CPUDistributedDataParallel', 'ReparameterizeHook']
