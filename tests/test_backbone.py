"""RepViT backbone: arch zoo, output shapes/strides, frozen stages, norm_eval, options, registries; the same
numbers as the grouped-conv token mixer and timm's backbone, with and without channels-last."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from helpers import randomize_bn_
from torch.nn.modules.batchnorm import _BatchNorm

import repvit_mm.models  # noqa: F401  (registration)
from repvit_mm.models import RepViT
from repvit_mm.models.backbones.repvit import ConvBN, RepVGGDW, RepViTBlock, RepViTDownsample, SqueezeExcite

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


# ------------------------------------------------------------------- equivalence: token mixer, timm, channels-last
TINY = dict(channels=[8, 16, 24, 32], depths=[1, 1, 2, 1])


def _grouped_conv_forward(mixer: RepVGGDW, x: torch.Tensor) -> torch.Tensor:
    """The token mixer as first written (and as timm has it): the 1x1 branch a grouped conv."""
    c = mixer.conv1 if not mixer.legacy else mixer.conv1.conv
    one = F.conv2d(x, c.weight, c.bias, groups=c.groups)
    if mixer.legacy:
        return mixer.conv(x) + mixer.conv1.bn(one) + x
    return mixer.bn(mixer.conv(x) + one + x)


@pytest.mark.parametrize('legacy', [False, True])
def test_token_mixer_same_numbers_and_gradients_as_grouped_conv(legacy):
    """Forward and every gradient equal to the grouped-conv formulation (float64: same formula, not just
    close), in training mode (batch statistics) and eval mode; the fused conv is unchanged."""
    torch.manual_seed(0)
    mixer = randomize_bn_(RepVGGDW(6, legacy=legacy)).double()
    with torch.no_grad():
        for p in mixer.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    x = torch.randn(3, 6, 7, 5, dtype=torch.float64, requires_grad=True)
    g = torch.randn(3, 6, 7, 5, dtype=torch.float64)
    for train in (True, False):
        mixer.train(train)
        results = []
        for fn in (mixer.forward, lambda t: _grouped_conv_forward(mixer, t)):
            mixer.zero_grad()
            x.grad = None
            out = fn(x)
            out.backward(g)
            results.append((out.detach(), x.grad.clone(), [p.grad.clone() for p in mixer.parameters()]))
        (out_a, gx_a, gp_a), (out_b, gx_b, gp_b) = results
        torch.testing.assert_close(out_a, out_b, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(gx_a, gx_b, rtol=1e-12, atol=1e-12)
        for a, b in zip(gp_a, gp_b, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    mixer.eval()
    with torch.no_grad():
        fused = mixer.fuse()
        torch.testing.assert_close(fused(x), _grouped_conv_forward(mixer, x), rtol=1e-10, atol=1e-10)
    assert isinstance(fused, torch.nn.Conv2d) and fused.weight.shape == (6, 1, 3, 3)


def test_checkpoint_keys_and_shapes_unchanged():
    """The 1x1 branch keeps its Conv2d parameters: checkpoints load as before."""
    mixer = RepVGGDW(8)
    assert {k: tuple(v.shape) for k, v in mixer.state_dict().items() if k.startswith('conv1.')} == {
        'conv1.weight': (8, 1, 1, 1),
        'conv1.bias': (8,),
    }
    legacy = RepVGGDW(8, legacy=True)
    assert isinstance(legacy.conv1, ConvBN) and legacy.conv1.channelwise
    assert tuple(legacy.conv1.conv.weight.shape) == (8, 1, 1, 1)
    assert not ConvBN(8, 8, 3, padding=1, groups=8).channelwise and not ConvBN(8, 16, 1).channelwise


def _our_key(timm_key: str) -> str:
    return '.'.join('conv' if part == 'c' else part for part in timm_key.split('.'))


@pytest.mark.parametrize('arch', ['m0_9', 'm1'])
def test_backbone_matches_timm_in_training(arch):
    """Our backbone and timm's, same weights, training mode, float64: features and every parameter's
    gradient agree (timm keeps the grouped 1x1 conv)."""
    import timm

    ours = RepViT(arch, out_indices=(3,)).double().train()
    randomize_bn_(ours)
    theirs = timm.create_model(f'repvit_{arch}', pretrained=False, num_classes=0).double().train()
    state = ours.state_dict()
    theirs.load_state_dict({key: state[_our_key(key)] for key in theirs.state_dict()})
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    out_a = ours(x)[0]
    out_b = theirs.forward_features(x)
    torch.testing.assert_close(out_a, out_b, rtol=1e-10, atol=1e-10)
    g = torch.randn_like(out_a)
    out_a.backward(g)
    out_b.backward(g)
    ours_params = dict(ours.named_parameters())
    for key, p in theirs.named_parameters():
        mine = ours_params[_our_key(key)]
        torch.testing.assert_close(mine.grad, p.grad, rtol=1e-8, atol=1e-10, msg=key)


def _stem_layouts(model: RepViT) -> list[bool]:
    """Records, for each forward, whether the stem's output (the layout inside the backbone) is
    channels-last."""
    seen = []
    model.stem.register_forward_hook(
        lambda module, args, out: seen.append(out.is_contiguous(memory_format=torch.channels_last))
    )
    return seen


def test_channels_last_same_numbers_and_checkpoint():
    """``channels_last=True``: channels-last weights and computation, NCHW outputs, the same outputs and
    gradients, the same state dict (loads both ways), and a fused model that stays channels-last."""
    torch.manual_seed(0)
    plain = randomize_bn_(RepViT(TINY, out_indices=(0, 1, 2, 3), channels_last=False)).train()
    fast = RepViT(TINY, out_indices=(0, 1, 2, 3), channels_last=True).train()
    fast.load_state_dict(plain.state_dict())
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in fast.parameters() if p.dim() == 4)
    inside = _stem_layouts(fast)
    x = torch.randn(2, 3, 64, 64)
    outs_a, outs_b = plain(x), fast(x)
    assert inside == [True]
    for a, b in zip(outs_a, outs_b, strict=True):
        assert b.is_contiguous()
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    sum((o * o).mean() for o in outs_a).backward()
    sum((o * o).mean() for o in outs_b).backward()
    grads = dict(fast.named_parameters())
    for name, p in plain.named_parameters():
        torch.testing.assert_close(p.grad, grads[name].grad, rtol=1e-3, atol=1e-5, msg=name)
    plain.load_state_dict(fast.state_dict())
    fast.switch_to_deploy()
    plain.switch_to_deploy()
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in fast.parameters() if p.dim() == 4)
    with torch.no_grad():
        for a, b in zip(plain(x), fast(x), strict=True):
            assert a.is_contiguous() and b.is_contiguous()
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert inside == [True, True]


def test_default_memory_format_channels_last_only_in_cpu_training():
    """The default (``channels_last=None``): channels-last computation while training on a CPU, the input's
    layout in inference (and so export); NCHW outputs always; the weights are never converted."""
    model = RepViT(TINY, out_indices=(0, 3))
    inside = _stem_layouts(model)
    x = torch.randn(2, 3, 64, 64)
    assert all(out.is_contiguous() for out in model.train()(x))
    with torch.no_grad():
        assert all(out.is_contiguous() for out in model.eval()(x))
    assert inside == [True, False]
    assert all(p.is_contiguous() for p in model.parameters())
