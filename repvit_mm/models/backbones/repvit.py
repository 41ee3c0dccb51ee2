"""RepViT backbone for mmpretrain (usable from mmdet/mmseg as ``type='mmpretrain.RepViT'``).

`RepViT: Revisiting Mobile CNN From ViT Perspective <https://arxiv.org/abs/2307.09283>`_.

The block layout follows timm's ``repvit_*`` models (and so the authors' ``cfgs`` tables): a stride-4 stem,
four stages, and at the start of stages 1-3 a downsampling block (``pre_block`` -- a regular block at the
old resolution --, a depthwise stride-2 conv, a 1x1 channel conv and a residual FFN). Module names mirror
timm's with ``c`` spelled ``conv``, so timm and the authors' checkpoints convert by renaming keys
(:mod:`repvit_mm.models.convert`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmcv.cnn import build_activation_layer, build_norm_layer
from mmcv.cnn.bricks import DropPath
from mmpretrain.models.backbones.base_backbone import BaseBackbone
from mmpretrain.registry import MODELS
from torch.nn.modules.batchnorm import _BatchNorm

from ..reparam import DEPLOY_TRAIN_ERROR, fuse_bn

__all__ = [
    'RepViT',
    'ConvBN',
    'conv_bn',
    'RepVGGDW',
    'repvgg_dw',
    'SqueezeExcite',
    'RepViTFFN',
    'RepViTBlock',
    'RepViTDownsample',
    'RepViTStage',
    'normalize_arch_name',
]


def _make_divisible(v: float, divisor: int = 8) -> int:
    """Round ``v`` to a multiple of ``divisor`` (never below ``divisor``), as timm's SE (round_limit=0)."""
    return max(divisor, int(v + divisor / 2) // divisor * divisor)


def _is_channelwise(conv: nn.Conv2d) -> bool:
    """Whether ``conv`` is a depthwise 1x1 conv (stride 1, no padding): a per-channel scale (and shift)."""
    return (
        conv.kernel_size == (1, 1)
        and conv.stride == (1, 1)
        and conv.padding == (0, 0)
        and conv.groups == conv.in_channels == conv.out_channels
    )


def _channelwise(x: torch.Tensor, conv: nn.Conv2d, offset: float = 0.0) -> torch.Tensor:
    """``conv(x) + offset * x`` for a depthwise 1x1 ``conv``, computed as a broadcast multiply-add.

    The same numbers as the grouped conv (up to float rounding), and much cheaper to train on a CPU, where
    torch's backward of a 1x1 depthwise conv takes a slow path; one kernel instead of a conv plus an
    addition on any device.
    """
    weight = conv.weight.view(1, -1, 1, 1)
    if offset:
        weight = weight + offset
    if conv.bias is None:
        return x * weight
    return torch.addcmul(conv.bias.view(1, -1, 1, 1), x, weight)


def _conv_with(conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor) -> nn.Conv2d:
    """A conv with ``conv``'s geometry holding ``weight`` and ``bias``."""
    fused = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        bias=True,
        device=weight.device,
        dtype=weight.dtype,
    )
    fused.weight.copy_(weight)
    fused.bias.copy_(bias)
    return fused


class ConvBN(nn.Module):
    """Conv2d (no bias) followed by a norm layer; :meth:`fuse` gives the equivalent single Conv2d.

    A depthwise 1x1 conv runs as a per-channel multiply (same weights, same numbers, a faster backward).

    Args:
        in_channels, out_channels, kernel_size, stride, padding, groups: as ``nn.Conv2d``.
        bn_weight_init: initial value of the norm's weight (0 for the last BN of a residual FFN).
        norm_cfg: norm layer config (``build_norm_layer``). Defaults to ``dict(type='BN')``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        padding: int = 0,
        groups: int = 1,
        bn_weight_init: float = 1.0,
        norm_cfg: dict | None = None,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False)
        self.bn = build_norm_layer(norm_cfg or dict(type='BN'), out_channels)[1]
        if getattr(self.bn, 'weight', None) is not None:
            nn.init.constant_(self.bn.weight, bn_weight_init)
            nn.init.constant_(self.bn.bias, 0)
        self.channelwise = _is_channelwise(self.conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(_channelwise(x, self.conv) if self.channelwise else self.conv(x))

    @torch.no_grad()
    def fused_params(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``(weight, bias)`` of the single conv equivalent to conv + BN (eval mode)."""
        return fuse_bn(self.conv.weight, None, self.bn)

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        """The Conv2d (with bias) equal to this conv + BN in eval mode."""
        return _conv_with(self.conv, *self.fused_params())


def conv_bn(
    in_channels: int,
    out_channels: int,
    kernel_size: int = 1,
    stride: int = 1,
    padding: int = 0,
    groups: int = 1,
    bn_weight_init: float = 1.0,
    norm_cfg: dict | None = None,
    deploy: bool = False,
) -> nn.Module:
    """A :class:`ConvBN`, or with ``deploy`` the bare Conv2d (with bias) it fuses into."""
    if deploy:
        return nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups)
    return ConvBN(in_channels, out_channels, kernel_size, stride, padding, groups, bn_weight_init, norm_cfg)


class RepVGGDW(nn.Module):
    """RepVGG-style depthwise token mixer: ``BN(dwconv_kxk_bn(x) + dwconv_1x1(x) + x)``.

    ``legacy=True`` (RepViT M1/M2/M3 of the first paper version): the 1x1 branch has its own BN and there
    is no trailing BN. :meth:`fuse` gives the equivalent single depthwise kxk conv.

    The depthwise 1x1 branch and the identity are computed together as one per-channel multiply-add,
    ``x * (w + 1) + b`` (``conv1`` keeps its Conv2d weights, so checkpoints are unchanged): the same
    numbers as ``conv1(x) + x`` up to float rounding, and a much cheaper training step on CPUs.
    """

    def __init__(self, channels: int, kernel_size: int = 3, legacy: bool = False, norm_cfg: dict | None = None) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.legacy = legacy
        pad = (kernel_size - 1) // 2
        self.conv = ConvBN(channels, channels, kernel_size, 1, pad, groups=channels, norm_cfg=norm_cfg)
        if legacy:
            self.conv1 = ConvBN(channels, channels, 1, 1, 0, groups=channels, norm_cfg=norm_cfg)
        else:
            self.conv1 = nn.Conv2d(channels, channels, 1, 1, 0, groups=channels)
            self.bn = build_norm_layer(norm_cfg or dict(type='BN'), channels)[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.legacy:
            return self.conv(x) + self.conv1(x) + x
        return self.bn(self.conv(x) + _channelwise(x, self.conv1, offset=1.0))

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        """The depthwise kxk Conv2d (with bias) equal to the three branches and the BN in eval mode."""
        w, b = self.conv.fused_params()
        if self.legacy:
            w1, b1 = self.conv1.fused_params()
        else:
            w1, b1 = self.conv1.weight, self.conv1.bias
        p = self.kernel_size // 2
        identity = torch.zeros_like(w)
        identity[:, 0, p, p] = 1.0
        w = w + F.pad(w1, [p, p, p, p]) + identity
        b = b + b1
        if not self.legacy:
            w, b = fuse_bn(w, b, self.bn)
        return _conv_with(self.conv.conv, w, b)


def repvgg_dw(
    channels: int, kernel_size: int = 3, legacy: bool = False, norm_cfg: dict | None = None, deploy: bool = False
) -> nn.Module:
    """A :class:`RepVGGDW`, or with ``deploy`` the bare depthwise Conv2d it fuses into."""
    if deploy:
        return nn.Conv2d(channels, channels, kernel_size, 1, (kernel_size - 1) // 2, groups=channels)
    return RepVGGDW(channels, kernel_size, legacy, norm_cfg)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation as timm's ``SEModule``: mean -> 1x1 conv -> ReLU -> 1x1 conv -> sigmoid."""

    def __init__(self, channels: int, ratio: float = 0.25, divisor: int = 8) -> None:
        super().__init__()
        hidden = _make_divisible(channels * ratio, divisor)
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        s = self.fc2(self.act(self.fc1(s)))
        return x * s.sigmoid()


class RepViTFFN(nn.Module):
    """Channel mixer: 1x1 ConvBN -> activation -> 1x1 ConvBN (last BN initialised to 0)."""

    def __init__(
        self, channels: int, hidden_channels: int, act_cfg: dict, norm_cfg: dict | None = None, deploy: bool = False
    ) -> None:
        super().__init__()
        self.conv1 = conv_bn(channels, hidden_channels, 1, norm_cfg=norm_cfg, deploy=deploy)
        self.act = build_activation_layer(act_cfg)
        self.conv2 = conv_bn(hidden_channels, channels, 1, bn_weight_init=0.0, norm_cfg=norm_cfg, deploy=deploy)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.act(self.conv1(x)))


class RepViTBlock(nn.Module):
    """RepViT block: RepVGGDW token mixer, optional SE, residual FFN (``x + FFN(x)``)."""

    def __init__(
        self,
        channels: int,
        mlp_ratio: float = 2.0,
        kernel_size: int = 3,
        use_se: bool = False,
        legacy: bool = False,
        drop_path: float = 0.0,
        act_cfg: dict | None = None,
        norm_cfg: dict | None = None,
        with_cp: bool = False,
        deploy: bool = False,
    ) -> None:
        super().__init__()
        self.with_cp = with_cp
        self.token_mixer = repvgg_dw(channels, kernel_size, legacy, norm_cfg=norm_cfg, deploy=deploy)
        self.se = SqueezeExcite(channels, 0.25) if use_se else nn.Identity()
        self.channel_mixer = RepViTFFN(
            channels, int(channels * mlp_ratio), act_cfg or dict(type='GELU'), norm_cfg=norm_cfg, deploy=deploy
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def _inner_forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.se(self.token_mixer(x))
        return x + self.drop_path(self.channel_mixer(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.with_cp and x.requires_grad:
            return cp.checkpoint(self._inner_forward, x, use_reentrant=False)
        return self._inner_forward(x)


class RepViTDownsample(nn.Module):
    """Downsampling block at the start of stages 1-3.

    ``pre_block`` (a regular block without SE, at the input resolution) -> depthwise kxk stride-2 ConvBN
    -> 1x1 ConvBN to ``out_channels`` -> residual FFN.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        mlp_ratio: float = 2.0,
        kernel_size: int = 3,
        legacy: bool = False,
        drop_path: Sequence[float] = (0.0, 0.0),
        act_cfg: dict | None = None,
        norm_cfg: dict | None = None,
        with_cp: bool = False,
        deploy: bool = False,
    ) -> None:
        super().__init__()
        act_cfg = act_cfg or dict(type='GELU')
        self.with_cp = with_cp
        self.pre_block = RepViTBlock(
            in_channels,
            mlp_ratio,
            kernel_size,
            use_se=False,
            legacy=legacy,
            drop_path=drop_path[0],
            act_cfg=act_cfg,
            norm_cfg=norm_cfg,
            with_cp=with_cp,
            deploy=deploy,
        )
        self.spatial_downsample = conv_bn(
            in_channels,
            in_channels,
            kernel_size,
            2,
            (kernel_size - 1) // 2,
            groups=in_channels,
            norm_cfg=norm_cfg,
            deploy=deploy,
        )
        self.channel_downsample = conv_bn(in_channels, out_channels, 1, norm_cfg=norm_cfg, deploy=deploy)
        self.ffn = RepViTFFN(out_channels, int(out_channels * mlp_ratio), act_cfg, norm_cfg=norm_cfg, deploy=deploy)
        self.drop_path = DropPath(drop_path[1]) if drop_path[1] > 0 else nn.Identity()

    def _reduce(self, x: torch.Tensor) -> torch.Tensor:
        x = self.channel_downsample(self.spatial_downsample(x))
        return x + self.drop_path(self.ffn(x))

    def forward(self, x: torch.Tensor, skip_pre_block: bool = False) -> torch.Tensor:
        if not skip_pre_block:
            x = self.pre_block(x)
        if self.with_cp and x.requires_grad:
            return cp.checkpoint(self._reduce, x, use_reentrant=False)
        return self._reduce(x)


class RepViTStage(nn.Module):
    """``downsample`` (absent in stage 0) followed by ``blocks``; SE on every other block (first: SE)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        depth: int,
        downsample: bool,
        mlp_ratio: float = 2.0,
        kernel_size: int = 3,
        legacy: bool = False,
        drop_path: Sequence[float] = (),
        act_cfg: dict | None = None,
        norm_cfg: dict | None = None,
        with_cp: bool = False,
        deploy: bool = False,
    ) -> None:
        super().__init__()
        drop_path = list(drop_path)
        if downsample:
            self.downsample = RepViTDownsample(
                in_channels,
                out_channels,
                mlp_ratio=mlp_ratio,
                kernel_size=kernel_size,
                legacy=legacy,
                drop_path=drop_path[:2],
                act_cfg=act_cfg,
                norm_cfg=norm_cfg,
                with_cp=with_cp,
                deploy=deploy,
            )
            drop_path = drop_path[2:]
        else:
            if in_channels != out_channels:
                raise ValueError(
                    f'a stage without downsampling needs in_channels == out_channels, got '
                    f'{in_channels} and {out_channels}'
                )
            self.downsample = None
        self.blocks = nn.Sequential(
            *[
                RepViTBlock(
                    out_channels,
                    mlp_ratio,
                    kernel_size,
                    use_se=(i % 2 == 0),
                    legacy=legacy,
                    drop_path=drop_path[i],
                    act_cfg=act_cfg,
                    norm_cfg=norm_cfg,
                    with_cp=with_cp,
                    deploy=deploy,
                )
                for i in range(depth)
            ]
        )

    def forward(self, x: torch.Tensor, skip_pre_block: bool = False) -> torch.Tensor:
        if self.downsample is not None:
            x = self.downsample(x, skip_pre_block=skip_pre_block)
        return self.blocks(x)


def normalize_arch_name(name: str) -> str:
    """``'M0.9'``, ``'repvit_m0_9'``, ``'repvit-m0.9'`` -> ``'m0_9'``."""
    key = name.strip().lower()
    for prefix in ('repvit_', 'repvit-'):
        if key.startswith(prefix):
            key = key[len(prefix) :]
    return key.replace('.', '_').replace('-', '_')


@MODELS.register_module()
class RepViT(BaseBackbone):
    """RepViT backbone.

    A PyTorch implementation of `RepViT: Revisiting Mobile CNN From ViT Perspective
    <https://arxiv.org/abs/2307.09283>`_ (CVPR 2024), layer for layer as timm's ``repvit_*`` and the
    authors' code.

    Args:
        arch (str | dict): one of ``'m0_6', 'm0_9', 'm1_0', 'm1_1', 'm1_5', 'm2_3'`` and the legacy
            (first paper version) ``'m1', 'm2', 'm3'`` (``'M0.9'``/``'repvit_m0_9'`` spellings work), or
            a dict with keys:

            - channels (Sequence[int]): output channels of each stage.
            - depths (Sequence[int]): number of regular blocks of each stage (the downsampling block
              that starts stages 1.. is not counted).
            - legacy (bool, optional): legacy token mixer (1x1 ConvBN branch, no trailing BN).
              Defaults to False.
            - mlp_ratio (float, optional): FFN expansion. Defaults to 2.
            - kernel_size (int, optional): depthwise kernel size. Defaults to 3.

            Defaults to ``'m0_9'``.
        in_channels (int): input image channels. Defaults to 3.
        out_indices (int | Sequence[int]): stages whose outputs are returned (strides 4, 8, 16, 32 for
            stages 0-3); negative indices count from the end. Defaults to ``(3, )``.
        out_at_resolution_end (bool): where the features of stages 0-2 are taken. False (default): at the
            end of the stage, as timm and the authors' detection configs (e.g. feature indices
            ``[2, 6, 20, 24]`` of M1.1). True: after the next stage's ``pre_block`` -- the last block that
            runs at that resolution --, as the authors' segmentation configs (``[3, 7, 21, 24]``).
        frozen_stages (int): freeze the stem (``>= 0``) and stages ``0 .. frozen_stages - 1``: no
            gradients, kept in eval mode. -1 freezes nothing. Defaults to -1.
        norm_eval (bool): keep every BatchNorm in eval mode while training (frozen statistics).
            Defaults to False.
        norm_cfg (dict): norm layers (``BN``, ``SyncBN``, ...). Defaults to ``dict(type='BN')``.
        act_cfg (dict): activation of stem and FFNs. Defaults to ``dict(type='GELU')``.
        drop_path_rate (float): stochastic depth, linearly increasing over the residual FFNs.
            Defaults to 0.
        with_cp (bool): gradient checkpointing of every block. Defaults to False.
        channels_last (bool, optional): memory format of the computation inside the backbone (the numbers
            are the same in both). True: weights and features channels-last on every device (the input is
            converted on entry), e.g. for mixed-precision training on GPUs
            (``--cfg-options model.backbone.channels_last=True``). None: channels-last while training on a
            CPU, where oneDNN's depthwise convolutions and their backward run several times faster in that
            layout, the input's layout otherwise (inference and export are unaffected). False: the input's
            layout always. The outputs are contiguous (NCHW) in every case: necks and heads run mmcv ops
            (e.g. RoIAlign) that read their input as NCHW memory whatever its strides. Defaults to None.
        deploy (bool): build the reparameterized (fused) structure, e.g. to load a fused checkpoint; the
            model is then inference-only. Defaults to False.
        init_cfg (dict | list[dict], optional): initialization config, e.g.
            ``dict(type='Pretrained', checkpoint=..., prefix='backbone.')``.

    Example:
        >>> import torch
        >>> from repvit_mm.models import RepViT
        >>> model = RepViT('m0_9', out_indices=(0, 1, 2, 3)).eval()
        >>> for out in model(torch.rand(1, 3, 224, 224)):
        ...     print(tuple(out.shape))
        (1, 48, 56, 56)
        (1, 96, 28, 28)
        (1, 192, 14, 14)
        (1, 384, 7, 7)
    """

    arch_zoo: dict[str, dict] = {
        'm0_6': dict(channels=[40, 80, 160, 320], depths=[1, 1, 8, 1]),
        'm0_9': dict(channels=[48, 96, 192, 384], depths=[2, 2, 14, 2]),
        'm1_0': dict(channels=[56, 112, 224, 448], depths=[2, 2, 14, 2]),
        'm1_1': dict(channels=[64, 128, 256, 512], depths=[2, 2, 12, 2]),
        'm1_5': dict(channels=[64, 128, 256, 512], depths=[4, 4, 24, 4]),
        'm2_3': dict(channels=[80, 160, 320, 640], depths=[6, 6, 34, 2]),
        # First paper version: legacy token mixer.
        'm1': dict(channels=[48, 96, 192, 384], depths=[2, 2, 14, 2], legacy=True),
        'm2': dict(channels=[64, 128, 256, 512], depths=[2, 2, 12, 2], legacy=True),
        'm3': dict(channels=[64, 128, 256, 512], depths=[4, 4, 18, 2], legacy=True),
    }

    def __init__(
        self,
        arch: str | dict = 'm0_9',
        in_channels: int = 3,
        out_indices: int | Sequence[int] = (3,),
        out_at_resolution_end: bool = False,
        frozen_stages: int = -1,
        norm_eval: bool = False,
        norm_cfg: dict = dict(type='BN'),  # noqa: B006  (OpenMMLab style; never mutated)
        act_cfg: dict = dict(type='GELU'),  # noqa: B006
        drop_path_rate: float = 0.0,
        with_cp: bool = False,
        channels_last: bool | None = None,
        deploy: bool = False,
        init_cfg: dict | list[dict] | None = None,
    ) -> None:
        super().__init__(init_cfg)
        self.arch_settings = self.get_arch_settings(arch)
        channels = self.arch_settings['channels']
        depths = self.arch_settings['depths']
        legacy = self.arch_settings['legacy']
        mlp_ratio = self.arch_settings['mlp_ratio']
        kernel_size = self.arch_settings['kernel_size']
        self.channels = channels
        self.num_stages = len(channels)
        self.in_channels = in_channels
        self.norm_cfg = copy.deepcopy(norm_cfg)
        self.norm_eval = norm_eval
        self.with_cp = with_cp
        self.channels_last = channels_last
        self.out_at_resolution_end = out_at_resolution_end
        self.deploy = False  # set at the end: building calls no train(), but keep the guard simple

        if isinstance(out_indices, int):
            out_indices = [out_indices]
        if not isinstance(out_indices, Sequence):
            raise TypeError(f'"out_indices" must be an int or a sequence, got {type(out_indices)}')
        out_indices = list(out_indices)
        for i, index in enumerate(out_indices):
            if index < 0:
                out_indices[i] = self.num_stages + index
            if not 0 <= out_indices[i] < self.num_stages:
                raise ValueError(f'invalid out_indices {index}: RepViT has {self.num_stages} stages')
        self.out_indices = tuple(out_indices)
        if not -1 <= frozen_stages <= self.num_stages:
            raise ValueError(f'frozen_stages must be in [-1, {self.num_stages}], got {frozen_stages}')
        self.frozen_stages = frozen_stages

        # One residual FFN per regular block plus two per downsampling block (pre_block + its own FFN).
        num_ffn = sum(depths) + 2 * (self.num_stages - 1)
        dpr = [drop_path_rate * i / max(num_ffn - 1, 1) for i in range(num_ffn)]

        self.stem = nn.Sequential()
        self.stem.add_module('conv1', conv_bn(in_channels, channels[0] // 2, 3, 2, 1, norm_cfg=norm_cfg, deploy=deploy))
        self.stem.add_module('act', build_activation_layer(act_cfg))
        self.stem.add_module('conv2', conv_bn(channels[0] // 2, channels[0], 3, 2, 1, norm_cfg=norm_cfg, deploy=deploy))
        stages = []
        cursor = 0
        prev = channels[0]
        for i, (c, d) in enumerate(zip(channels, depths, strict=False)):
            n = d + (2 if i > 0 else 0)
            stages.append(
                RepViTStage(
                    prev,
                    c,
                    d,
                    downsample=i > 0,
                    mlp_ratio=mlp_ratio,
                    kernel_size=kernel_size,
                    legacy=legacy,
                    drop_path=dpr[cursor : cursor + n],
                    act_cfg=act_cfg,
                    norm_cfg=norm_cfg,
                    with_cp=with_cp,
                    deploy=deploy,
                )
            )
            cursor += n
            prev = c
        self.stages = nn.ModuleList(stages)
        self.out_channels = [channels[i] for i in self.out_indices]

        self._freeze_stages()
        self._set_memory_format()
        self.deploy = deploy
        if deploy:
            self.train(False)

    def _set_memory_format(self) -> None:
        if self.channels_last is True:
            # in place: the Parameter objects (and any optimizer holding them) stay the same
            self.to(memory_format=torch.channels_last)

    @classmethod
    def get_arch_settings(cls, arch: str | dict) -> dict:
        """The normalized settings dict (channels, depths, legacy, mlp_ratio, kernel_size) of ``arch``."""
        if isinstance(arch, str):
            key = normalize_arch_name(arch)
            if key not in cls.arch_zoo:
                raise ValueError(
                    f'unknown RepViT arch {arch!r}; choose from {sorted(cls.arch_zoo)} or '
                    'give a dict with channels and depths'
                )
            arch = cls.arch_zoo[key]
        elif not isinstance(arch, dict):
            raise TypeError(f'"arch" must be a str or a dict, got {type(arch)}')
        unknown = set(arch) - {'channels', 'depths', 'legacy', 'mlp_ratio', 'kernel_size'}
        missing = {'channels', 'depths'} - set(arch)
        if unknown or missing:
            raise ValueError(f'arch dict: missing keys {sorted(missing)}, unknown keys {sorted(unknown)}')
        channels, depths = list(arch['channels']), list(arch['depths'])
        if len(channels) != len(depths) or not channels:
            raise ValueError(
                f'arch dict: channels {channels} and depths {depths} must be non-empty and of equal length'
            )
        if depths[0] < 1 or any(d < 0 for d in depths):
            raise ValueError(f'arch dict: invalid depths {depths}')
        k = int(arch.get('kernel_size', 3))
        if k % 2 != 1:
            raise ValueError(f'arch dict: kernel_size must be odd, got {k}')
        return dict(
            channels=channels,
            depths=depths,
            legacy=bool(arch.get('legacy', False)),
            mlp_ratio=arch.get('mlp_ratio', 2),
            kernel_size=k,
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.channels_last or (self.channels_last is None and self.training and x.device.type == 'cpu'):
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.stem(x)
        outs = []
        pre_done = False
        for i, stage in enumerate(self.stages):
            x = stage(x, skip_pre_block=pre_done)
            pre_done = False
            if self.out_at_resolution_end and i + 1 < self.num_stages:
                x = self.stages[i + 1].downsample.pre_block(x)
                pre_done = True
            if i in self.out_indices:
                outs.append(x)
            if i >= max(self.out_indices):
                break
        # NCHW out: mmcv's RoIAlign (CPU and CUDA) reads a channels-last tensor as if it were NCHW.
        return tuple(out.contiguous() for out in outs)

    def _freeze_stages(self) -> None:
        if self.frozen_stages >= 0:
            frozen = [self.stem] + [self.stages[i] for i in range(self.frozen_stages)]
            for m in frozen:
                m.eval()
                for p in m.parameters():
                    p.requires_grad = False

    def train(self, mode: bool = True):
        """Set train/eval mode, keeping frozen stages (and all BNs if ``norm_eval``) in eval mode.

        Raises:
            RuntimeError: ``mode`` is True and the backbone is reparameterized (inference-only).
        """
        if mode and self.deploy:
            raise RuntimeError(DEPLOY_TRAIN_ERROR.format(name=type(self).__name__))
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self

    @torch.no_grad()
    def switch_to_deploy(self) -> None:
        """Reparameterize in place: every :class:`RepVGGDW` and :class:`ConvBN` is replaced by the bare
        Conv2d it fuses into (the structure ``deploy=True`` builds); sets eval mode."""
        if self.deploy:
            return
        self.train(False)  # fusion uses the BN running statistics
        _fuse_children(self)
        self._set_memory_format()
        self.deploy = True


def _fuse_children(module: nn.Module) -> None:
    """Replace, top-down, every fusable child by its fused conv (a RepVGGDW folds its own ConvBNs)."""
    for name, child in module.named_children():
        if isinstance(child, (RepVGGDW, ConvBN)):
            setattr(module, name, child.fuse())
        else:
            _fuse_children(child)
