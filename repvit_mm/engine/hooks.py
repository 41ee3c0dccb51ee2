"""Hooks of repvit-mm."""
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS


@HOOKS.register_module()
class ReparameterizeHook(Hook):
    """Fuse the model (BN folding, RepVGG branches) right before testing, after its checkpoint is loaded,
    so ``tools/test.py --deploy`` measures the deployed model."""

    priority = 'LOWEST'

    def before_test(self, runner) -> None:
        from ..models.reparam import switch_to_deploy
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        switch_to_deploy(model)
        runner.logger.info('model reparameterized for deployment (BatchNorm and branches fused)')
