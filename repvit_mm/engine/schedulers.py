"""Learning-rate schedules that reproduce other training loops exactly."""

from __future__ import annotations

import math

from mmengine.optim.scheduler.lr_scheduler import LRSchedulerMixin
from mmengine.optim.scheduler.param_scheduler import INF, _ParamScheduler
from mmengine.registry import PARAM_SCHEDULERS


@PARAM_SCHEDULERS.register_module()
class EpochEndCosineLR(LRSchedulerMixin, _ParamScheduler):
    """timm's ``CosineLRScheduler`` (``t_in_epochs=True``) as the DeiT / RepViT ``main.py`` loop drives it.

    That loop calls ``scheduler.step(epoch)`` at the *end* of epoch ``epoch``, so the rate used throughout
    epoch ``e`` is timm's value for ``e - 1``; epoch 0 runs at ``warmup_lr_init``, which timm sets on
    construction. With timm's value (no ``warmup_prefix``: the cosine starts at ``t = 0`` under the warm-up)

    .. math::
        f(t) = \\begin{cases} w_0 + t\\,(\\eta_{max} - w_0) / T_w & t < T_w \\\\
               \\eta_{min} + \\tfrac12(\\eta_{max} - \\eta_{min})(1 + \\cos(\\pi t / T)) & T_w \\le t < T \\\\
               \\eta_{min} & t \\ge T \\end{cases}

    epoch ``e`` trains at ``f(e - 1)`` (``e >= 1``). The value is constant within an epoch (``by_epoch``
    must stay True). mmengine's ``LinearLR`` + ``CosineAnnealingLR`` cannot give this: the cosine here
    starts at phase ``T_w / T`` and one epoch late, and their chained forms rescale from the current value.

    Only :math:`\\eta_{max}` comes from the optimizer (its ``lr``, which ``auto_scale_lr`` scales);
    ``warmup_lr_init`` and ``lr_min`` are absolute, as in the authors' loop, which scales only ``--lr``.

    Args:
        optimizer: wrapped optimizer or optimizer.
        t_initial: length of the cosine in epochs (timm's ``t_initial``, the authors' ``--epochs``); by default
            ``end - begin``, and the Runner's default ``end`` is ``train_cfg.max_epochs``.
        warmup_t: warm-up epochs (``--warmup-epochs``); 0 for none.
        warmup_lr_init: first warm-up learning rate (``--warmup-lr``).
        lr_min: learning rate the cosine ends at (``--min-lr``).
        begin, end, last_step, by_epoch, verbose: as in every mmengine scheduler.
    """

    def __init__(
        self,
        optimizer,
        t_initial: int | None = None,
        warmup_t: int = 0,
        warmup_lr_init: float = 0.0,
        lr_min: float = 0.0,
        begin: int = 0,
        end: int = INF,
        last_step: int = -1,
        by_epoch: bool = True,
        verbose: bool = False,
    ) -> None:
        if t_initial is None:
            if end == INF:
                raise ValueError('EpochEndCosineLR needs t_initial or end')
            t_initial = end - begin
        if t_initial <= 0 or not 0 <= warmup_t < t_initial or lr_min < 0 or warmup_lr_init < 0:
            raise ValueError(
                f'EpochEndCosineLR needs t_initial > warmup_t >= 0 and lr_min, warmup_lr_init >= 0; '
                f'got t_initial={t_initial}, warmup_t={warmup_t}, lr_min={lr_min}, '
                f'warmup_lr_init={warmup_lr_init}'
            )
        if not by_epoch:
            raise ValueError('EpochEndCosineLR is an epoch schedule (by_epoch=True)')
        self.t_initial, self.warmup_t = t_initial, warmup_t
        self.warmup_lr_init, self.lr_min = warmup_lr_init, lr_min
        super().__init__(optimizer, begin=begin, end=end, last_step=last_step, by_epoch=by_epoch, verbose=verbose)

    def timm_value(self, t: int, lr_max: float) -> float:
        """timm's ``CosineLRScheduler._get_lr(t)`` for one group whose base rate is ``lr_max``."""
        if t < self.warmup_t:
            return self.warmup_lr_init + t * (lr_max - self.warmup_lr_init) / self.warmup_t
        if t >= self.t_initial:
            return self.lr_min
        return self.lr_min + 0.5 * (lr_max - self.lr_min) * (1 + math.cos(math.pi * t / self.t_initial))

    def _get_value(self) -> list[float]:
        if self.last_step == 0:  # before the first step(epoch): timm's constructor value
            return [self.warmup_lr_init if self.warmup_t else base for base in self.base_values]
        return [self.timm_value(self.last_step - 1, base) for base in self.base_values]
