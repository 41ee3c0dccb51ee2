"""Distributed data parallel on CPU processes (gloo), for machines without GPUs."""

from mmengine.model import MMDistributedDataParallel, revert_sync_batchnorm
from mmengine.registry import MODEL_WRAPPERS


@MODEL_WRAPPERS.register_module()
class CPUDistributedDataParallel(MMDistributedDataParallel):
    """:class:`MMDistributedDataParallel` for a model that lives on the CPU.

    mmengine's Runner passes ``device_ids=[LOCAL_RANK]``, which DDP rejects for CPU modules, and
    ``SyncBatchNorm`` only synchronises CUDA tensors; so the device ids are dropped and SyncBN layers become
    per-process BN (what a single-process run does too).
    """

    def __init__(self, module, device_ids=None, **kwargs):
        super().__init__(module=revert_sync_batchnorm(module), device_ids=None, **kwargs)
