"""RepViT backbone: arch zoo, output shapes/strides, frozen stages, norm_eval, options, registries."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

import repvit_mm.models  # noqa: F401  (registration)
from repvit_mm.models import RepViT
from repvit_mm.models.backbones.repvit import RepViTBlock, RepViTDownsample, SqueezeExcite

ARCHS = {  # name: (channels, depths, legacy) -- timm's repvit_* / the authors' cfgs tables
    'm0_6': ([40, 80, 160, 320], [1, 1, 8, 1], False),
    'm0_9': ([48, 96, 192, 384], [2, 2, 14, 2], False),
    'm1_0': ([56, 112, 224, 448], [2, 2, 14, 2], False),
    'm1_1': ([64, 128, 256, 512], [2, 2, 12, 2], False),
    'm1_5': ([64, 128, 256, 512], [4, 4, 24, 4], False),
    'm2_3': ([80, 160, 320, 640], [6, 6, 34, 2], False),
    'm1': ([48, 96, 192, 384], [2, 2, 14, 2], True),
    'm2': ([64, 128, 256, 512], [2, 2, 12, 2], True),
    'm3': ([64, 128, 256, 512], [4, 4, 18, 2], True),
}


def _ceil_div_chain(size: int, stride: int) -> int:
    """Spatial size after log2(stride) conv3x3/s2/p1 layers (each gives ceil(n / 2))."""
    for _ in range(int(math.log2(stride))):
        size = math.ceil(size / 2)
    return size


@pytest.mark.parametrize('arch', list(ARCHS))
def test_arch_structure_and_shapes(arch):
    channels, depths, legacy = ARCHS[arch]
    model = RepViT(arch, out_indices=(0, 1, 2, 3)).eval()
    assert [len(s.blocks) for s in model.stages] == depths
    assert model.stages[0].downsample is None
    assert all(isinstance(s.downsample, RepViTDownsample) for s in model.stages[1:])
    assert all(m.legacy == legacy for m in model.modules() if hasattr(m, 'legacy'))
    # SE on every other regular block (first one with SE), never in the pre_block
    for stage in model.stages:
        assert [isinstance(b.se, SqueezeExcite) for b in stage.blocks] == [i % 2 == 0 for i in range(len(stage.blocks))]
        if stage.downsample is not None:
            assert isinstance(stage.downsample.pre_block.se, nn.Identity)
    # The FFN's last BN starts at 0 (the authors' bn_weight_init=0), so every block starts as identity + mixer.
    blocks = [m for m in model.modules() if isinstance(m, RepViTBlock)]
    assert all(torch.all(b.channel_mixer.conv2.bn.weight == 0) for b in blocks)
    assert all(torch.all(b.channel_mixer.conv1.bn.weight == 1) for b in blocks)

    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [
        (1, c, 64 // s, 64 // s) for c, s in zip(channels, (4, 8, 16, 32), strict=True)
    ]
    assert model.out_channels == channels


@pytest.mark.parametrize('arch', ['m0_9', 'm1'])
def test_odd_input_size(arch):
    channels = ARCHS[arch][0]
    model = RepViT(arch, out_indices=(0, 1, 2, 3)).eval()
    with torch.no_grad():
        outs = model(torch.randn(2, 3, 225, 161))
    expected = [
        (2, c, _ceil_div_chain(225, s), _ceil_div_chain(161, s)) for c, s in zip(channels, (4, 8, 16, 32), strict=True)
    ]
    assert [tuple(o.shape) for o in outs] == expected
    assert expected[-1][2:] == (8, 6)


@pytest.mark.parametrize(
    'out_indices, expected', [((3,), [3]), (3, [3]), ((0, 2), [0, 2]), ((-1,), [3]), ((-4, -2), [0, 2]), ((1,), [1])]
)
def test_out_indices(out_indices, expected):
    model = RepViT('m0_6', out_indices=out_indices).eval()
    assert list(model.out_indices) == expected
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [[40, 80, 160, 320][i] for i in expected]
    assert [o.shape[2] for o in outs] == [64 // (4 * 2**i) for i in expected]


def test_invalid_arguments():
    with pytest.raises(ValueError, match='unknown RepViT arch'):
        RepViT('m9_9')
    with pytest.raises(ValueError, match='out_indices'):
        RepViT('m0_6', out_indices=(4,))
    with pytest.raises(ValueError, match='frozen_stages'):
        RepViT('m0_6', frozen_stages=5)
    with pytest.raises(ValueError, match='missing keys'):
        RepViT(dict(channels=[32, 64]))


def test_arch_aliases_and_custom_dict():
    assert (
        RepViT.get_arch_settings('M0.9') == RepViT.get_arch_settings('repvit_m0_9') == RepViT.get_arch_settings('m0_9')
    )
    model = RepViT(
        dict(channels=[16, 32, 48], depths=[1, 0, 2], legacy=True, mlp_ratio=3), out_indices=(0, 1, 2)
    ).eval()
    assert model.stages[0].blocks[0].channel_mixer.conv1.conv.out_channels == 48
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 32, 48))
    assert [tuple(o.shape) for o in outs] == [(1, 16, 8, 12), (1, 32, 4, 6), (1, 48, 2, 3)]


@pytest.mark.parametrize('frozen_stages', [0, 2, 4])
def test_frozen_stages(frozen_stages):
    model = RepViT('m0_6', out_indices=(0, 1, 2, 3), frozen_stages=frozen_stages)
    model.train()
    frozen = [model.stem] + [model.stages[i] for i in range(frozen_stages)]
    trainable = [model.stages[i] for i in range(frozen_stages, 4)]
    for module in frozen:
        assert all(not p.requires_grad for p in module.parameters())
        assert all(not m.training for m in module.modules())
    for module in trainable:
        assert all(p.requires_grad for p in module.parameters())
        assert all(m.training for m in module.modules())
    # Frozen BN statistics do not move in a training forward pass; trainable ones do.
    before = {n: b.clone() for n, b in model.named_buffers() if n.endswith('running_mean')}
    model(torch.randn(2, 3, 64, 64))
    after = dict(model.named_buffers())
    assert torch.equal(before['stem.conv1.bn.running_mean'], after['stem.conv1.bn.running_mean'])
    if frozen_stages < 4:
        name = f'stages.{frozen_stages}.blocks.0.token_mixer.bn.running_mean'
        assert not torch.equal(before[name], after[name])
    # Training again (e.g. after validation) keeps them frozen.
    model.eval()
    model.train()
    assert not model.stem.training and all(not p.requires_grad for p in model.stem.parameters())


def test_norm_eval():
    model = RepViT('m0_6', norm_eval=True)
    model.train()
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    assert bns and all(not m.training for m in bns)
    assert model.training and model.stages[2].blocks[0].channel_mixer.act.training
    assert all(p.requires_grad for p in model.parameters())  # affine parameters still train
    before = model.stages[1].blocks[0].token_mixer.bn.running_var.clone()
    model(torch.randn(2, 3, 64, 64))
    assert torch.equal(before, model.stages[1].blocks[0].token_mixer.bn.running_var)
    without = RepViT('m0_6')
    without.train()
    assert all(m.training for m in without.modules() if isinstance(m, _BatchNorm))


def test_syncbn_norm_cfg():
    model = RepViT('m0_6', norm_cfg=dict(type='SyncBN', requires_grad=False))
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    assert norms and all(isinstance(m, nn.SyncBatchNorm) for m in norms)
    assert all(not m.weight.requires_grad for m in norms)
    # Fusing SyncBN (e.g. a detector trained with SyncBN) works like BN.
    from repvit_mm.models import switch_to_deploy

    switch_to_deploy(model)
    assert not any(isinstance(m, _BatchNorm) for m in model.modules())


def test_drop_path():
    model = RepViT('m0_6', drop_path_rate=0.3)
    probs = [m.drop_prob for m in model.modules() if type(m).__name__ == 'DropPath']
    assert len(probs) == sum([1, 1, 8, 1]) + 2 * 3 - 1  # the first FFN has rate 0 -> Identity
    assert probs == sorted(probs) and math.isclose(probs[-1], 0.3)
    x = torch.randn(4, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x)[0], model(x)[0])


def test_with_cp_same_outputs_and_grads():
    torch.manual_seed(0)
    ref = RepViT('m0_6', out_indices=(0, 3))
    cp_model = RepViT('m0_6', out_indices=(0, 3), with_cp=True)
    cp_model.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 64, 64)
    outs = []
    for model in (ref, cp_model):
        model.train()
        y = model(x.clone().requires_grad_())
        (y[0].sum() + y[1].square().sum()).backward()
        outs.append((y, model.stages[1].blocks[0].token_mixer.conv.conv.weight.grad.clone()))
    assert torch.allclose(outs[0][0][1], outs[1][0][1], atol=1e-5)
    assert torch.allclose(outs[0][1], outs[1][1], atol=1e-5)


def test_out_at_resolution_end():
    """Taking stage outputs after the next pre_block (the authors' segmentation indices)."""
    torch.manual_seed(0)
    default = RepViT('m0_6', out_indices=(0, 1, 2, 3)).eval()
    late = RepViT('m0_6', out_indices=(0, 1, 2, 3), out_at_resolution_end=True).eval()
    late.load_state_dict(default.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a, b = default(x), late(x)
        for i in range(3):
            assert torch.allclose(b[i], default.stages[i + 1].downsample.pre_block(a[i]), atol=1e-6)
            assert b[i].shape == a[i].shape
        assert torch.allclose(a[3], b[3], atol=1e-6)


def test_build_from_mmdet_and_mmseg_registries():
    from mmdet.registry import MODELS as DET_MODELS
    from mmseg.registry import MODELS as SEG_MODELS

    for registry in (DET_MODELS, SEG_MODELS):
        model = registry.build(dict(type='mmpretrain.RepViT', arch='m0_9', out_indices=(0, 1, 2, 3)))
        assert isinstance(model, RepViT)
        model.eval()
        with torch.no_grad():
            outs = model(torch.randn(1, 3, 64, 96))
        assert [tuple(o.shape) for o in outs] == [(1, 48, 16, 24), (1, 96, 8, 12), (1, 192, 4, 6), (1, 384, 2, 3)]
