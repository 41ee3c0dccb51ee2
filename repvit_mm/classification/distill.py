"""DeiT-style knowledge distillation for mmpretrain classifiers, with a frozen timm teacher.

RepViT is trained (like DeiT and LeViT) with a second classifier head that learns from a RegNetY-16GF
teacher: ``loss = (1 - alpha) * CE(cls_head, labels) + alpha * CE(dist_head, teacher.argmax)`` for the
``hard`` type (``soft``: KL divergence at temperature ``tau``). The loss itself is computed by the head
(:class:`RepViTClsHead.loss` takes ``teacher_logits``); this module only runs the teacher.

The teacher is deliberately *not* a registered sub-module of the classifier, so it never appears in
``state_dict()`` (checkpoints stay student-only), in ``parameters()`` (the optimizer and DDP ignore it),
and ``.train()`` cannot switch it out of eval mode; ``.to()``/``.cuda()``/``.half()`` still reach it.
It is built the first time it is needed (the first training step, or ``model.teacher``), so building a
``-distill-`` model for inference (inferencers, ``get_model``, the deploy tools) never asks for its file.
"""

from __future__ import annotations

import os.path as osp
from typing import Any

import torch
from mmpretrain.models.classifiers import ImageClassifier
from mmpretrain.registry import MODELS
from torch import nn

from ..utils.errors import UserInputError
from ..utils.paths import is_remote

__all__ = ['DistillationImageClassifier', 'build_teacher', 'load_teacher_weights']


def load_teacher_weights(model: nn.Module, checkpoint: str) -> None:
    """Load a teacher checkpoint (DeiT ``{'model': ...}``, mmengine ``{'state_dict': ...}`` or a bare
    timm state dict; any scheme) strictly into ``model``; any mismatch is one error naming the file."""
    from ..models.checkpoints import load_checkpoint_into

    try:
        load_checkpoint_into(model, checkpoint)
    except UserInputError as err:
        raise UserInputError(f'teacher ({type(model).__name__}): {err}') from None


def build_teacher(
    name: str, checkpoint: str | None = None, num_classes: int = 1000, random_init: bool = False, **timm_kwargs: Any
) -> nn.Module:
    """A frozen timm model in eval mode.

    Args:
        name: timm model name, ``'regnety_160'`` for RepViT's RegNetY-16GF teacher.
        checkpoint: weights file (e.g. DeiT's ``regnety_160-a5fe301d.pth``) or URL, read weights-only.
        num_classes: classes of the teacher's classifier (must match the student's).
        random_init: build the teacher without weights; only for tests of the training machinery,
            since distilling from an untrained teacher teaches nothing.
        timm_kwargs: passed on to ``timm.create_model``.
    """
    import timm

    if checkpoint is None and not random_init:
        raise UserInputError(
            'model.teacher.checkpoint is not set: distillation needs the teacher weights '
            f'for {name} as a local file (random_init=True builds an untrained teacher, '
            'for tests only)'
        )
    if checkpoint is not None and not is_remote(checkpoint) and not osp.isfile(checkpoint):
        raise UserInputError(f'teacher checkpoint not found: {checkpoint} (model.teacher.checkpoint)')
    timm_kwargs.setdefault('global_pool', 'avg')  # as the authors build their teacher
    try:
        teacher = timm.create_model(name, pretrained=False, num_classes=num_classes, **timm_kwargs)
    except RuntimeError as err:  # timm: "Unknown model (...)"
        raise UserInputError(f'model.teacher.name: {err}') from None
    if checkpoint is not None:
        load_teacher_weights(teacher, checkpoint)
    teacher.requires_grad_(False)
    return teacher.eval()


@MODELS.register_module()
class DistillationImageClassifier(ImageClassifier):
    """:class:`ImageClassifier` whose head learns from a frozen teacher during training.

    Args:
        teacher: keyword arguments of :func:`build_teacher`
            (``dict(name='regnety_160', checkpoint='...pth', num_classes=1000)``), or ``None``: then the
            model is a plain :class:`ImageClassifier` (no-distillation configs, and ``tools/test.py``,
            which needs no teacher).
        Other arguments: as :class:`ImageClassifier`. The head must accept
            ``loss(feats, data_samples, teacher_logits=...)`` when its ``distillation_type`` is not
            ``'none'`` (:class:`RepViTClsHead`).
    """

    def __init__(self, *args, teacher: dict | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if teacher is not None and not self.distills:
            raise UserInputError(
                'model.teacher is set but model.head does not distill '
                "(distillation=False or distillation_type='none'); set model.teacher=None"
            )
        self._teacher_cfg = dict(teacher) if teacher is not None else None
        # A tuple hides the teacher from nn.Module's registration (see the module docstring).
        self._teacher: tuple[nn.Module, ...] = ()

    @property
    def teacher(self) -> nn.Module | None:
        """The frozen teacher, built (on the student's device and dtype) on first use; ``None`` without one."""
        if not self._teacher and self._teacher_cfg is not None:
            teacher = build_teacher(**self._teacher_cfg)
            param = next(self.parameters(), None)
            if param is not None:
                teacher.to(device=param.device, dtype=param.dtype)
            self._teacher = (teacher,)
        return self._teacher[0] if self._teacher else None

    @property
    def distills(self) -> bool:
        """Whether the head learns from a teacher (``hard`` or ``soft``)."""
        return (
            bool(getattr(self.head, 'distillation', False))
            and getattr(self.head, 'distillation_type', 'none') != 'none'
        )

    def _apply(self, fn, *args, **kwargs):
        # Device and dtype moves (.to, .cuda, .half) must reach the unregistered teacher too.
        super()._apply(fn, *args, **kwargs)
        if self._teacher:
            self._teacher[0]._apply(fn, *args, **kwargs)
        return self

    def train(self, mode: bool = True):
        super().train(mode)
        if self._teacher:
            self._teacher[0].eval()
        return self

    @torch.no_grad()
    def teacher_logits(self, inputs: torch.Tensor) -> torch.Tensor:
        """The teacher's logits for the (already mixed-up/cut-mixed) batch the student sees."""
        if self.teacher is None:
            raise UserInputError(
                'model.head distills but model.teacher is None: set model.teacher='
                "dict(name=..., checkpoint=...) or the head's distillation_type='none'"
            )
        self.teacher.eval()
        return self.teacher(inputs).float()

    def loss(self, inputs: torch.Tensor, data_samples) -> dict:
        feats = self.extract_feat(inputs)
        if not self.distills:
            return self.head.loss(feats, data_samples)
        return self.head.loss(feats, data_samples, teacher_logits=self.teacher_logits(inputs))
