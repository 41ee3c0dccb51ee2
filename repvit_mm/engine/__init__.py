from .ddp import CPUDistributedDataParallel
from .hooks import ReparameterizeHook

__all__ = ['CPUDistributedDataParallel', 'ReparameterizeHook']
