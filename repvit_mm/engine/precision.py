"""Mixed precision where a GPU is present and fp32 elsewhere, from one config.

mmengine's mixed-precision wrappers (``AmpOptimWrapper`` and the ``Amp*OptimWrapper`` twins of other wrappers)
run fp16 autocast with dynamic loss scaling, and refuse to be built without a GPU. A config that asks for
them with ``constructor='AmpWhereCUDAOptimWrapperConstructor'`` trains in mixed precision on a CUDA machine
and in fp32 on a CPU, saying so in one log line::

    optim_wrapper = dict(type='AmpAGCOptimWrapper', loss_scale='dynamic', dtype='float16',
                         constructor='AmpWhereCUDAOptimWrapperConstructor', optimizer=dict(...))
"""

from __future__ import annotations

import logging

import torch
from mmengine.logging import print_log
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS

from .param_groups import MergedGroupsOptimWrapperConstructor

__all__ = ['AMP_ONLY_KEYS', 'AmpWhereCUDAOptimWrapperConstructor', 'amp_twin', 'fp32_optim_wrapper']

AMP_ONLY_KEYS = ('loss_scale', 'dtype', 'use_fsdp')  # AmpOptimWrapper's own arguments


def amp_twin(wrapper_type: str) -> str:
    """``OptimWrapper`` -> ``AmpOptimWrapper``, ``AGCOptimWrapper`` -> ``AmpAGCOptimWrapper``."""
    return wrapper_type if wrapper_type.startswith('Amp') else f'Amp{wrapper_type}'


def fp32_optim_wrapper(optim_wrapper: dict) -> dict:
    """A copy of an ``optim_wrapper`` config with its mixed-precision wrapper replaced by the fp32 one
    (``AmpAGCOptimWrapper`` -> ``AGCOptimWrapper``) and the AMP-only arguments dropped."""
    wrapper_type = optim_wrapper.get('type', 'OptimWrapper')
    fp32 = {k: v for k, v in optim_wrapper.items() if k not in AMP_ONLY_KEYS}
    fp32['type'] = wrapper_type.removeprefix('Amp')
    return fp32


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class AmpWhereCUDAOptimWrapperConstructor(MergedGroupsOptimWrapperConstructor):
    """mmengine's default constructor, except that without a CUDA device an ``Amp*OptimWrapper`` is built as
    its fp32 twin (``AmpAGCOptimWrapper`` -> ``AGCOptimWrapper``), with one warning in the run's log; and
    that parameters of equal settings share one group (``MergedGroupsOptimWrapperConstructor``)."""

    def __call__(self, model: torch.nn.Module):
        wrapper_type = self.optim_wrapper_cfg.get('type', 'OptimWrapper')
        if wrapper_type.startswith('Amp') and not torch.cuda.is_available():
            self.optim_wrapper_cfg = fp32_optim_wrapper(self.optim_wrapper_cfg)
            print_log(
                f'no CUDA device: training in fp32 ({self.optim_wrapper_cfg["type"]}); the config asks for '
                f'mixed precision ({wrapper_type}), which needs a GPU',
                logger='current',
                level=logging.WARNING,
            )
        return super().__call__(model)
