"""mmengine's ``compile=True`` on repvit-mm configs.

With ``compile=True`` (or a dict of ``torch.compile`` options) in a config, mmengine's Runner compiles
``model.train_step``: the data preprocessor, forward, losses, ``backward()`` and the optimizer's step. The
optimizers mmengine builds keep their parameter groups as ``ConfigDict`` objects (the constructor passes them
through a config), which dynamo cannot trace (``InternalTorchDynamoError`` in ``Optimizer.step``).
:class:`PlainParamGroupsHook` turns them into plain dicts right before training starts -- after the optimizer
state of a resumed run is loaded, before the first (compiling) step; :func:`repvit_mm.apis.build_runner`
adds it to every config that asks for compilation.
"""

from __future__ import annotations

from mmengine.hooks import Hook
from mmengine.optim import OptimWrapper, OptimWrapperDict
from mmengine.registry import HOOKS

__all__ = ['PlainParamGroupsHook', 'plain_param_groups']


def plain_param_groups(optim_wrapper: OptimWrapper | OptimWrapperDict) -> None:
    """Replace the optimizer's parameter groups by plain dicts, in place (the list object stays, which the
    parameter schedulers read at every step); keys, values and the optimizer state are unchanged."""
    wrappers = optim_wrapper.values() if isinstance(optim_wrapper, OptimWrapperDict) else [optim_wrapper]
    for wrapper in wrappers:
        groups = wrapper.optimizer.param_groups
        groups[:] = [group if type(group) is dict else dict(group) for group in groups]


@HOOKS.register_module()
class PlainParamGroupsHook(Hook):
    """Plain-dict parameter groups (:func:`plain_param_groups`) for a compiled ``train_step``."""

    priority = 'VERY_HIGH'

    def before_train(self, runner) -> None:
        plain_param_groups(runner.optim_wrapper)
