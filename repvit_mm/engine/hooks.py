"""Hooks of repvit-mm."""

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS


@HOOKS.register_module()
class ReparameterizeHook(Hook):
    """Fuse the model (BN folding, RepVGG branches) for ``tools/test.py``, so that it measures the deployed
    model.

    Args:
        before_load: fuse before the checkpoint is loaded (a fused checkpoint only fits the fused model);
            by default the training-structure checkpoint is loaded first and fused right before testing.
    """

    priority = 'LOWEST'

    def __init__(self, before_load: bool = False) -> None:
        self.before_load = before_load

    def _fuse(self, runner) -> None:
        from ..models.reparam import switch_to_deploy

        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        switch_to_deploy(model)
        runner.logger.info('model reparameterized for deployment (BatchNorm and branches fused)')

    def before_run(self, runner) -> None:
        if self.before_load:  # Runner.test calls before_run, then loads the checkpoint
            self._fuse(runner)

    def before_test(self, runner) -> None:
        if not self.before_load:
            self._fuse(runner)
