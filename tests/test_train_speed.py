"""Training speed work: the token mixer's per-channel form, channels-last training, torch.compile of the
backbone, and the training benchmark (``tools/benchmark.py --train``)."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from conftest import CONFIGS, assert_one_line_error, randomize_bn_, run_tool

from repvit_mm.models.backbones.repvit import ConvBN, RepViT, RepVGGDW

TINY = dict(channels=[8, 16, 24, 32], depths=[1, 1, 2, 1])
CLS_SHAPES = CONFIGS / 'classification' / 'repvit-m0.9_shapes-64px.py'


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
        for a, b in zip(gp_a, gp_b):
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
        'conv1.weight': (8, 1, 1, 1), 'conv1.bias': (8,)}
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


def test_channels_last_same_numbers_and_checkpoint():
    """``channels_last=True``: channels-last weights and features, the same outputs and gradients, the
    same state dict (loads both ways), and a fused model that stays channels-last."""
    torch.manual_seed(0)
    plain = randomize_bn_(RepViT(TINY, out_indices=(0, 1, 2, 3))).train()
    fast = RepViT(TINY, out_indices=(0, 1, 2, 3), channels_last=True).train()
    fast.load_state_dict(plain.state_dict())
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in fast.parameters() if p.dim() == 4)
    x = torch.randn(2, 3, 64, 64)
    outs_a, outs_b = plain(x), fast(x)
    for a, b in zip(outs_a, outs_b):
        assert b.is_contiguous(memory_format=torch.channels_last)
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
        for a, b in zip(plain(x), fast(x)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('kwargs', [dict(), dict(out_at_resolution_end=True, arch=dict(TINY, legacy=True)),
                                    dict(channels_last=True), dict(drop_path_rate=0.1)])
def test_backbone_compiles_without_graph_breaks(kwargs):
    """torch.compile traces the whole backbone forward (training mode) as one graph."""
    kwargs = {'arch': TINY, 'out_indices': (0, 1, 2, 3), **kwargs}
    model = RepViT(**kwargs).train()
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(model)(torch.randn(2, 3, 32, 32))
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1
