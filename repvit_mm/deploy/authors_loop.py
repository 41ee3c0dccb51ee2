"""The RepViT authors' training step, reproduced for the ``authors_loop`` row of the training benchmark.

Reproduced from THU-MIG/RepViT at commit ``298f42075eda5d2e6102559fad260c970769d34e`` (2024-06-14), with
timm's classes where the authors use them:

- ``main.py``, with the defaults their ``train.sh`` runs: the model ``create_model('repvit_<arch>',
  distillation=...)`` (timm's port of their ``model/repvit.py``; in training its distillation model returns
  the (class, distillation) logits pair, as theirs does); timm's ``Mixup`` (mixup 0.8, cutmix 1.0, prob
  1.0, switch prob 0.5, mode ``batch``, label smoothing 0.1) and so ``SoftTargetCrossEntropy``; the teacher
  ``create_model(teacher, pretrained=False, num_classes=..., global_pool='avg')`` in eval mode;
  ``create_optimizer`` (AdamW, lr ``1e-3 * batch / 512``, weight decay 0.025 except on 1-D parameters,
  eps 1e-8); ``NativeScaler``; ``--clip-grad 0.02 --clip-mode agc``;
- ``engine.py`` ``train_one_epoch``, one iteration: the batch to the device (``non_blocking``), Mixup,
  forward and loss under ``torch.cuda.amp.autocast()``, ``loss.item()`` and its finiteness check,
  ``optimizer.zero_grad()``, ``loss_scaler(loss, optimizer, clip_grad, clip_mode, parameters)``,
  ``torch.cuda.synchronize()``;
- ``losses.py`` ``DistillationLoss``: :func:`distillation_loss`.

``torch.cuda.amp.autocast()`` and timm's ``NativeScaler`` act on CUDA only: on a CPU their step runs in
fp32 without loss scaling, and so does this one. Not reproduced: ``ModelEma`` (``--model-ema`` is on by
default in their ``main.py``; the repvit-mm configs train without EMA and the ``runner`` rows run no
hooks, so neither side pays for it) and the metric logger's bookkeeping. Their data loader hands the step
normalised float images (normalisation and random erasing run in its worker processes): this row gets the
benchmark's synthetic uint8 batch normalised beforehand, untimed.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from mmengine.config import Config
from torch import nn

from .model import normalization

__all__ = ['AUTHORS', 'authors_train_step', 'distillation_loss']

#: Where the step comes from, and their command-line defaults that it uses (main.py ``get_args_parser``).
AUTHORS = dict(
    repo='THU-MIG/RepViT',
    commit='298f42075eda5d2e6102559fad260c970769d34e',
    mixup=0.8,
    cutmix=1.0,
    mixup_prob=1.0,
    mixup_switch_prob=0.5,
    mixup_mode='batch',
    smoothing=0.1,
    lr_per_512=1e-3,
    weight_decay=0.025,
    opt_eps=1e-8,
    clip_grad=0.02,
    clip_mode='agc',
)


def distillation_loss(
    base_criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    teacher: nn.Module | None,
    distillation_type: str,
    alpha: float,
    tau: float,
    inputs: torch.Tensor,
    outputs: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
    labels: torch.Tensor,
) -> torch.Tensor:
    """DeiT's ``DistillationLoss.forward`` as the authors' ``losses.py`` has it: the base criterion on the
    class logits; with ``'hard'``, plus cross-entropy of the distillation logits against the teacher's
    argmax on the same (mixed) inputs, weighted ``1 - alpha`` / ``alpha``; ``'soft'``: KL divergence at
    temperature ``tau`` instead."""
    outputs_kd = None
    if not isinstance(outputs, torch.Tensor):
        outputs, outputs_kd = outputs
    base_loss = base_criterion(outputs, labels)
    if distillation_type == 'none':
        return base_loss
    if outputs_kd is None or teacher is None:
        raise ValueError('distillation needs the (class, distillation) logits pair and a teacher')
    with torch.no_grad():
        teacher_outputs = teacher(inputs)
    if distillation_type == 'soft':
        kd = F.kl_div(
            F.log_softmax(outputs_kd / tau, dim=1),
            F.log_softmax(teacher_outputs / tau, dim=1),
            reduction='sum',
            log_target=True,
        )
        kd = kd * (tau * tau) / outputs_kd.numel()
    else:
        kd = F.cross_entropy(outputs_kd, teacher_outputs.argmax(dim=1))
    return base_loss * (1 - alpha) + kd * alpha


def _teacher(cfg: Config, num_classes: int, dev: torch.device) -> nn.Module:
    """The config's teacher as their ``main.py`` builds it; random weights when its file is absent (the
    same cost)."""
    import timm

    from ..classification.distill import load_teacher_weights

    spec = cfg.model.get('teacher') or {}
    name = spec.get('name', 'regnety_160')
    teacher = timm.create_model(name, pretrained=False, num_classes=num_classes, global_pool='avg')
    checkpoint = spec.get('checkpoint')
    if checkpoint and not spec.get('random_init') and os.path.isfile(str(checkpoint)):
        load_teacher_weights(teacher, str(checkpoint))
    return teacher.to(dev).eval()


def _inputs(cfg: Config, data: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """The synthetic batch as their data loader gives it: normalised float images (RGB where the config's
    model sees RGB) and class indices."""
    mean, std, rgb = normalization(cfg)
    x = data['inputs']
    x = (torch.stack(x) if isinstance(x, list) else x).float()
    if rgb:
        x = x.flip(1)
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    y = torch.cat([s.gt_label for s in data['data_samples']]).long()
    return x.contiguous(), y


def authors_train_step(
    cfg: Config, arch: str, data: dict[str, Any], dev: torch.device
) -> tuple[Callable[[], float], str, dict[str, Any]]:
    """``(step, note, parts)``: ``step()`` runs one iteration of the authors' ``train_one_epoch`` on
    ``data`` (a :func:`~repvit_mm.deploy.train_benchmark.synthetic_batch`) and returns ``loss.item()``;
    ``parts`` holds the model, teacher, optimizer, Mixup and scaler (for tests)."""
    import timm
    from timm.data import Mixup
    from timm.loss import SoftTargetCrossEntropy
    from timm.optim import create_optimizer_v2
    from timm.utils import NativeScaler

    head = cfg.model.head
    num_classes = int(head.num_classes)
    distill_type = head.get('distillation_type', 'hard') if head.get('distillation', False) else 'none'
    name = f'repvit_{arch}'
    if name not in timm.list_models('repvit_*'):
        raise LookupError(f'timm has no {name}')
    model = timm.create_model(name, pretrained=False, num_classes=num_classes, distillation=distill_type != 'none')
    if distill_type != 'none':
        model.set_distilled_training(True)  # (class, distillation) logits in training, as their Classfier
    model.to(dev).train()
    teacher = _teacher(cfg, num_classes, dev) if distill_type != 'none' else None
    a = AUTHORS
    mixup_fn = Mixup(
        mixup_alpha=a['mixup'],
        cutmix_alpha=a['cutmix'],
        prob=a['mixup_prob'],
        switch_prob=a['mixup_switch_prob'],
        mode=a['mixup_mode'],
        label_smoothing=a['smoothing'],
        num_classes=num_classes,
    )
    base_criterion = SoftTargetCrossEntropy()  # their choice when mixup > 0
    alpha, tau = float(head.get('alpha', 0.5)), float(head.get('tau', 1.0))
    batch = len(data['inputs'])
    optimizer = create_optimizer_v2(
        model, opt='adamw', lr=a['lr_per_512'] * batch / 512, weight_decay=a['weight_decay'], eps=a['opt_eps']
    )
    cuda = dev.type == 'cuda'
    with warnings.catch_warnings():  # without CUDA, torch says that the CUDA GradScaler is disabled
        warnings.simplefilter('ignore')
        loss_scaler = NativeScaler()
    x, y = _inputs(cfg, data)
    if cuda:  # their DataLoader pins memory (--pin-mem is on by default)
        x, y = x.pin_memory(), y.pin_memory()

    def step() -> float:
        samples = x.to(dev, non_blocking=True)
        targets = y.to(dev, non_blocking=True)
        samples, targets = mixup_fn(samples, targets)
        # torch.cuda.amp.autocast(): fp16 on CUDA; without CUDA it does nothing (and warns)
        with torch.autocast('cuda') if cuda else contextlib.nullcontext():
            outputs = model(samples)
            loss = distillation_loss(base_criterion, teacher, distill_type, alpha, tau, samples, outputs, targets)
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            raise FloatingPointError(f'loss is {loss_value}')
        optimizer.zero_grad()
        loss_scaler(loss, optimizer, clip_grad=a['clip_grad'], clip_mode=a['clip_mode'], parameters=model.parameters())
        if cuda:
            torch.cuda.synchronize()
        return loss_value

    notes = [f'timm {name}, Mixup/CutMix, AGC {a["clip_grad"]}', 'AMP' if cuda else 'fp32']
    if teacher is not None:
        notes.append(f'teacher {(cfg.model.get("teacher") or {}).get("name", "regnety_160")} ({distill_type})')
    parts = dict(model=model, teacher=teacher, optimizer=optimizer, mixup=mixup_fn, scaler=loss_scaler, x=x, y=y)
    return step, ', '.join(notes), parts
