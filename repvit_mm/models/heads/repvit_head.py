"""RepViT classification head: BN + Linear, plus a DeiT-style distillation head."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_norm_layer
from mmengine.model.weight_init import trunc_normal_
from mmpretrain.evaluation.metrics import Accuracy
from mmpretrain.models.heads import ClsHead
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

from ..reparam import DEPLOY_TRAIN_ERROR, fuse_bn

__all__ = ['RepViTClsHead', 'BNLinear']


class BNLinear(nn.Module):
    """BatchNorm1d followed by Linear (the authors' ``BN_Linear``); ``fuse()`` returns one ``nn.Linear``."""

    def __init__(self, in_channels: int, out_channels: int, norm_cfg: dict | None = None, std: float = 0.02) -> None:
        super().__init__()
        self.bn = build_norm_layer(norm_cfg or dict(type='BN1d'), in_channels)[1]
        self.linear = nn.Linear(in_channels, out_channels)
        trunc_normal_(self.linear.weight, std=std)
        nn.init.constant_(self.linear.bias, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.bn(x))

    @torch.no_grad()
    def fused_params(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(weight, bias)`` of the Linear equivalent to BN + Linear (eval mode)."""
        bn, lin = self.bn, self.linear
        # y = W (a * x + c) + b  with a = gamma / std, c = beta - mean * a
        a, c = fuse_bn(torch.ones_like(bn.running_var), torch.zeros_like(bn.running_var), bn)
        w = lin.weight * a[None, :]
        b = lin.weight @ c + lin.bias
        return w, b

    @torch.no_grad()
    def fuse(self) -> nn.Linear:
        w, b = self.fused_params()
        m = nn.Linear(w.size(1), w.size(0), device=w.device, dtype=w.dtype)
        m.weight.copy_(w)
        m.bias.copy_(b)
        return m


@MODELS.register_module()
class RepViTClsHead(ClsHead):
    """RepViT classification head (global average pooling, BN + Linear, optional distillation head).

    With ``distillation=True`` (the authors' setting, DeiT style) a second BN + Linear head learns from a
    teacher; in training :meth:`forward` returns ``(cls_logits, dist_logits)`` and in eval mode their mean.
    :meth:`switch_to_deploy` fuses everything into one ``nn.Linear`` whose weights are the average of the
    two fused heads, which gives exactly that mean.

    Args:
        num_classes (int): number of classes.
        in_channels (int): channels of the last backbone feature map.
        distillation (bool): add the distillation head. Defaults to True.
        distillation_type (str): ``'hard'`` (CE on the teacher's argmax), ``'soft'`` (KL at temperature
            ``tau``, DeiT's formula) or ``'none'`` (teacher logits are ignored; the distillation head
            learns the ground truth). Defaults to ``'hard'``.
        alpha (float): weight of the distillation term: ``(1 - alpha) * base + alpha * dist``.
            Defaults to 0.5.
        tau (float): temperature of the soft distillation. Defaults to 1.0.
        norm_cfg (dict): the norm of the BN + Linear heads. Defaults to ``dict(type='BN1d')``.
        loss (dict): classification loss (ground truth, hard labels or ``gt_score`` from Mixup/CutMix).
            Defaults to ``dict(type='CrossEntropyLoss', loss_weight=1.0)``.
        topk (int | tuple[int]): top-k accuracy when ``cal_acc``. Defaults to ``(1, )``.
        cal_acc (bool): compute training accuracy. Defaults to False.
        deploy (bool): build the fused structure (one ``nn.Linear``), inference-only. Defaults to False.
        init_cfg (dict, optional): initialization config.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        distillation: bool = True,
        distillation_type: str = 'hard',
        alpha: float = 0.5,
        tau: float = 1.0,
        norm_cfg: dict = dict(type='BN1d'),  # noqa: B006  (OpenMMLab style; never mutated)
        loss: dict = dict(type='CrossEntropyLoss', loss_weight=1.0),  # noqa: B006
        topk: int | tuple[int] = (1,),
        cal_acc: bool = False,
        deploy: bool = False,
        init_cfg: dict | None = None,
    ) -> None:
        super().__init__(loss=loss, topk=topk, cal_acc=cal_acc, init_cfg=init_cfg)
        if num_classes <= 0:
            raise ValueError(f'num_classes must be positive, got {num_classes}')
        if distillation_type not in ('hard', 'soft', 'none'):
            raise ValueError(f"distillation_type must be 'hard', 'soft' or 'none', got {distillation_type!r}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f'alpha must be in [0, 1], got {alpha}')
        if tau <= 0:
            raise ValueError(f'tau must be positive, got {tau}')
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.distillation = distillation
        self.distillation_type = distillation_type
        self.alpha = alpha
        self.tau = tau
        self.deploy = False
        if deploy:
            self.head = nn.Linear(in_channels, num_classes)
        else:
            self.head = BNLinear(in_channels, num_classes, norm_cfg)
            if distillation:
                self.head_dist = BNLinear(in_channels, num_classes, norm_cfg)
        self.deploy = deploy
        if deploy:
            self.train(False)

    # ------------------------------------------------------------------ forward
    def pre_logits(self, feats: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """Global average pooling of the last feature map (``(N, C, H, W)`` -> ``(N, C)``)."""
        x = feats[-1] if isinstance(feats, (tuple, list)) else feats
        if x.dim() == 4:
            x = x.mean((2, 3))
        elif x.dim() != 2:
            raise ValueError(f'RepViTClsHead expects (N, C, H, W) or (N, C) features, got {tuple(x.shape)}')
        return x

    def _both_logits(self, feats) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits of the classifier and of the distillation head (None without one); unfused heads only."""
        x = self.pre_logits(feats)
        cls = self.head(x)
        dist = self.head_dist(x) if self.distillation else None
        return cls, dist

    def forward(self, feats) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits. Training with distillation: ``(cls_logits, dist_logits)``; otherwise one tensor
        (the mean of both heads when distilling)."""
        if self.deploy:
            return self.head(self.pre_logits(feats))
        cls, dist = self._both_logits(feats)
        if dist is None:
            return cls
        if self.training:
            return cls, dist
        return (cls + dist) / 2

    def predict(self, feats, data_samples: list[DataSample | None] | None = None) -> list[DataSample]:
        """Predictions from the (averaged) logits, in any mode."""
        cls_score = self(feats)
        if isinstance(cls_score, tuple):
            cls_score = (cls_score[0] + cls_score[1]) / 2
        return self._get_predictions(cls_score, data_samples)

    # ------------------------------------------------------------------ loss
    def loss(self, feats, data_samples: list[DataSample], teacher_logits: torch.Tensor | None = None, **kwargs) -> dict:
        """Losses for one batch.

        ``base = loss_module(cls_logits, target)`` (``target``: ``gt_score`` if the batch augmentations
        produced one, else ``gt_label``). With a distillation head the returned ``loss`` is
        ``(1 - alpha) * base + alpha * dist`` where ``dist`` is

        - ``'hard'``: ``CE(dist_logits, teacher_logits.argmax(1))``;
        - ``'soft'``: ``KL(log_softmax(dist_logits / tau) || log_softmax(teacher_logits / tau))``
          (sum, ``log_target``) ``* tau**2 / dist_logits.numel()`` (DeiT);
        - ``'none'`` or no ``teacher_logits``: ``loss_module(dist_logits, target)`` (the distillation
          head learns the ground truth, so it stays useful).

        Returns:
            dict: ``loss`` (the total, the only key containing ``'loss'``), and detached ``cls_term`` /
            ``dist_term`` for logging; ``accuracy_top-k`` if ``cal_acc``.
        """
        if self.deploy:
            raise RuntimeError(
                f'{type(self).__name__} is fused (deploy mode) and inference-only: it computes no training loss '
                '(its classifier and distillation heads are one layer now). Build it with deploy=False to train.'
            )
        cls, dist = self._both_logits(feats)
        if 'gt_score' in data_samples[0]:
            target = torch.stack([i.gt_score for i in data_samples])
        else:
            target = torch.cat([i.gt_label for i in data_samples])
        base = self.loss_module(cls, target, avg_factor=cls.size(0), **kwargs)
        losses = dict()
        if dist is None:
            total = base
        else:
            if teacher_logits is None or self.distillation_type == 'none':
                dist_term = self.loss_module(dist, target, avg_factor=dist.size(0), **kwargs)
            else:
                teacher_logits = teacher_logits.detach().to(dist.dtype)
                if teacher_logits.shape != dist.shape:
                    raise ValueError(
                        f'teacher_logits of shape {tuple(teacher_logits.shape)} do not match '
                        f'the distillation logits {tuple(dist.shape)}'
                    )
                if self.distillation_type == 'hard':
                    dist_term = F.cross_entropy(dist, teacher_logits.argmax(dim=1))
                else:
                    t = self.tau
                    dist_term = (
                        F.kl_div(
                            F.log_softmax(dist / t, dim=1),
                            F.log_softmax(teacher_logits / t, dim=1),
                            reduction='sum',
                            log_target=True,
                        )
                        * (t * t)
                        / dist.numel()
                    )
            total = (1 - self.alpha) * base + self.alpha * dist_term
            losses['cls_term'] = base.detach()
            losses['dist_term'] = dist_term.detach()
        losses['loss'] = total

        if self.cal_acc:
            if target.ndim != 1:
                raise ValueError('cal_acc needs hard labels; it is pointless with Mixup/CutMix')
            score = cls if dist is None else (cls + dist) / 2
            acc = Accuracy.calculate(score.detach(), target, topk=self.topk)
            losses.update({f'accuracy_top-{k}': a for k, a in zip(self.topk, acc, strict=False)})
        return losses

    # ------------------------------------------------------------------ deploy
    def train(self, mode: bool = True):
        """Raises RuntimeError for ``mode=True`` once reparameterized (inference-only)."""
        if mode and self.deploy:
            raise RuntimeError(DEPLOY_TRAIN_ERROR.format(name=type(self).__name__))
        return super().train(mode)

    @torch.no_grad()
    def switch_to_deploy(self) -> None:
        """Fuse BN + Linear (and the distillation head: average of both) into one ``nn.Linear``."""
        if self.deploy:
            return
        head = self.head.fuse()
        if self.distillation:
            dist = self.head_dist.fuse()
            head.weight.copy_((head.weight + dist.weight) / 2)
            head.bias.copy_((head.bias + dist.bias) / 2)
            del self.head_dist
        self.head = head
        self.deploy = True
        self.train(False)
