"""mmengine's ``compile=True`` on repvit-mm configs.

With ``compile=True`` (or a dict of ``torch.compile`` options) in a config, mmengine's Runner compiles
``model.train_step``: the data preprocessor, forward, losses, ``backward()`` and the optimizer's step.
:class:`CompileTrainStepHook` makes that work and pay off, right before training starts (after the optimizer
state of a resumed run is loaded, before the first, compiling, step; :func:`prepare_compiled_train_step`):

- the optimizers mmengine builds keep their parameter groups as ``ConfigDict`` objects (the constructor passes
  them through a config), on which dynamo fails (``InternalTorchDynamoError`` in ``Optimizer.step``): they
  become plain dicts (:func:`plain_param_groups`);
- the data preprocessor runs eagerly: its random batch augments (CutMix boxes of a new size every step) would
  otherwise make dynamo recompile the step again and again.

:func:`repvit_mm.apis.build_runner` adds the hook to every config that asks for compilation.
"""

from __future__ import annotations

import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.optim import OptimWrapper, OptimWrapperDict
from mmengine.registry import HOOKS

__all__ = ['CompileTrainStepHook', 'plain_param_groups', 'prepare_compiled_train_step']


def plain_param_groups(optim_wrapper: OptimWrapper | OptimWrapperDict) -> None:
    """Replace the optimizer's parameter groups by plain dicts, in place (the list object stays, which the
    parameter schedulers read at every step); keys, values and the optimizer state are unchanged."""
    wrappers = optim_wrapper.values() if isinstance(optim_wrapper, OptimWrapperDict) else [optim_wrapper]
    for wrapper in wrappers:
        groups = wrapper.optimizer.param_groups
        groups[:] = [group if type(group) is dict else dict(group) for group in groups]


def prepare_compiled_train_step(model: torch.nn.Module, optim_wrapper: OptimWrapper | OptimWrapperDict) -> None:
    """Plain-dict parameter groups, and ``model.data_preprocessor`` kept out of compiled graphs (dynamo skips
    it; it runs as it is): what a ``torch.compile``-d ``model.train_step`` needs."""
    plain_param_groups(optim_wrapper)
    model = model.module if is_model_wrapper(model) else model
    preprocessor = model.data_preprocessor
    if not hasattr(preprocessor.forward, '_torchdynamo_disable'):
        preprocessor.forward = torch.compiler.disable(preprocessor.forward)


@HOOKS.register_module()
class CompileTrainStepHook(Hook):
    """Plain-dict parameter groups and an eager data preprocessor for a compiled ``train_step``."""

    priority = 'VERY_HIGH'

    def before_train(self, runner) -> None:
        prepare_compiled_train_step(runner.model, runner.optim_wrapper)
