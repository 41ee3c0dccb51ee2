"""Random erasing where the authors' timm pipeline has it: on the normalised images, before Mixup/CutMix.

timm's ImageNet training transform ends with ``ToTensor, Normalize, RandomErasing``, and DeiT's loop mixes
the batch afterwards, so with ``--remode pixel`` every erased pixel is N(0, 1) in normalised units (never
clipped to the uint8 range) and the mix sees the erased images. In mmpretrain normalisation happens in the
data preprocessor, right before its batch augments (Mixup/CutMix), so erasing belongs there too.
"""

from __future__ import annotations

import torch
from mmpretrain.models.utils import ClsDataPreprocessor
from mmpretrain.registry import MODELS

from ..utils.errors import UserInputError

__all__ = ['ErasingClsDataPreprocessor']


class _EraseThenMix:
    """The preprocessor's training-time batch step: timm's ``RandomErasing`` on each normalised image (in
    place), then the configured batch augment, if any."""

    def __init__(self, erasing: dict, mix) -> None:
        self.erasing, self.mix = erasing, mix
        self._eraser(torch.device('cpu'))  # a bad argument fails when the model is built

    def _eraser(self, device: torch.device):
        from timm.data.random_erasing import RandomErasing

        try:
            return RandomErasing(**self.erasing, device=device)
        except TypeError as err:
            raise UserInputError(
                f'data_preprocessor.random_erasing: {err} (it takes the arguments of '
                "timm's RandomErasing, e.g. probability, mode, max_count)"
            ) from None

    def __call__(self, inputs: torch.Tensor, batch_score: torch.Tensor | None):
        self._eraser(inputs.device)(inputs)  # a 4-D batch: each image is erased or not on its own
        return (inputs, batch_score) if self.mix is None else self.mix(inputs, batch_score)


@MODELS.register_module()
class ErasingClsDataPreprocessor(ClsDataPreprocessor):
    """:class:`mmpretrain.models.ClsDataPreprocessor` that applies timm's ``RandomErasing`` to the training
    batch after normalising it and before its batch augments (Mixup/CutMix), the order of the authors' timm
    transform and DeiT loop. Validation and test batches are not erased. Like mmpretrain's batch augments, it
    sets ``to_onehot`` (training labels become one-hot ``gt_score``), since mmpretrain applies the batch step
    only to batches with scores.

    Args:
        random_erasing: keyword arguments of ``timm.data.RandomErasing``; the authors' ``--reprob 0.25
            --remode pixel --recount 1`` is ``dict(probability=0.25, mode='pixel', max_count=1)``.
            ``None`` erases nothing.
        **kwargs: the arguments of :class:`ClsDataPreprocessor`.
    """

    def __init__(self, *, random_erasing: dict | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        if random_erasing is not None:
            self.batch_augments = _EraseThenMix(dict(random_erasing), self.batch_augments)
            # mmpretrain runs its batch step only on batches with label scores; it turns to_onehot on for
            # Mixup/CutMix for the same reason, and a one-hot score is the same target as its label
            self.to_onehot = True
