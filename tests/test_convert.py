"""Checkpoint conversion: timm parity for every timm arch, the authors' layout, clear errors, the CLI."""

from __future__ import annotations

import os
from collections import OrderedDict

import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from helpers import CHANNELS, randomize_bn_
from mmpretrain.registry import MODELS
from timm.layers import SqueezeExcite as TimmSE

import repvit_mm.models  # noqa: F401  (registration)
from repvit_mm.models import CheckpointMismatchError, RepViT, convert_checkpoint

TIMM_ARCHS = sorted(n[len('repvit_') :] for n in timm.list_models('repvit_*'))


def build_classifier(arch: str, distillation: bool = True, num_classes: int = 1000):
    return MODELS.build(
        dict(
            type='ImageClassifier',
            backbone=dict(type='RepViT', arch=arch),
            head=dict(
                type='RepViTClsHead', num_classes=num_classes, in_channels=CHANNELS[arch], distillation=distillation
            ),
        )
    )


def logits(model, x):
    model.eval()
    with torch.no_grad():
        return model(x, mode='tensor')


# --------------------------------------------------------------- timm -> authors' layout (test-side)
def timm_to_official(timm_model) -> OrderedDict[str, torch.Tensor]:
    """Write timm weights in the authors' key layout, walking timm's module tree.

    The authors' ``features`` list is: the stem, then one entry per cfgs row; timm's downsample holds two
    of those rows (``pre_block``: a regular block; the stride-2 row: spatial/channel downsample + ffn).
    """
    block_map = [
        ('token_mixer.conv.', 'token_mixer.0.conv.'),
        ('token_mixer.conv1.', 'token_mixer.0.conv1.'),
        ('token_mixer.bn.', 'token_mixer.0.bn.'),
        ('se.', 'token_mixer.1.'),
        ('channel_mixer.conv1.', 'channel_mixer.m.0.'),
        ('channel_mixer.conv2.', 'channel_mixer.m.2.'),
    ]
    reduce_map = [
        ('spatial_downsample.', 'token_mixer.0.'),
        ('channel_downsample.', 'token_mixer.2.'),
        ('ffn.conv1.', 'channel_mixer.m.0.'),
        ('ffn.conv2.', 'channel_mixer.m.2.'),
    ]
    entries = [('stem.conv1.', 'features.0.0.', None), ('stem.conv2.', 'features.0.2.', None)]
    k = 1
    for i, stage in enumerate(timm_model.stages):
        if not isinstance(stage.downsample, nn.Identity):
            entries.append((f'stages.{i}.downsample.pre_block.', f'features.{k}.', block_map))
            entries.append((f'stages.{i}.downsample.', f'features.{k + 1}.', reduce_map))
            k += 2
        for j in range(len(stage.blocks)):
            entries.append((f'stages.{i}.blocks.{j}.', f'features.{k}.', block_map))
            k += 1
    entries += [
        ('head.head.', 'classifier.classifier.', None),
        ('head.head_dist.', 'classifier.classifier_dist.', None),
    ]
    out = OrderedDict()
    for key, value in timm_model.state_dict().items():
        for src, dst, sub in entries:
            if key.startswith(src):
                rest = key[len(src) :]
                if sub is not None:
                    rest = next(d + rest[len(s) :] for s, d in sub if rest.startswith(s))
                out[dst + rest] = value
                break
        else:
            raise AssertionError(f'unmapped timm key {key}')
    return out


def test_timm_archs_are_all_in_the_zoo():
    assert set(TIMM_ARCHS) == {'m0_9', 'm1_0', 'm1_1', 'm1_5', 'm2_3', 'm1', 'm2', 'm3'}
    assert set(TIMM_ARCHS) <= set(RepViT.arch_zoo)


@pytest.mark.parametrize('arch', TIMM_ARCHS)
def test_timm_and_official_parity(arch):
    """Random timm weights + random BN stats -> convert -> identical logits; same via the authors' layout."""
    torch.manual_seed(0)
    tm = randomize_bn_(timm.create_model(f'repvit_{arch}', pretrained=False)).eval()
    size = 224 if arch == 'm0_9' else 64
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        ref = tm(x)
    assert ref.abs().max() > 0.01

    model = build_classifier(arch)
    model.load_state_dict(convert_checkpoint(tm.state_dict(), arch, format='timm'), strict=True)
    assert (logits(model, x) - ref).abs().max() < 1e-5

    official = {'model': timm_to_official(tm)}
    model2 = build_classifier(arch)
    model2.load_state_dict(convert_checkpoint(official, arch, format='official'), strict=True)
    assert (logits(model2, x) - ref).abs().max() < 1e-5
    # auto-detection picks the right converter
    assert convert_checkpoint(official, arch).keys() == convert_checkpoint(tm.state_dict(), arch).keys()


# ----------------------------------------------------------- the authors' model structure (test-side)
# A re-implementation of the structure of the authors' model/repvit.py (names and order of modules),
# driven by their cfgs tables (k=3, t=2 in every row; rows are (channels, use_se, stride)).
AUTHORS_CFGS = {
    'm0_6': dict(
        legacy=False,
        rows=[
            (40, 1, 1),
            (40, 0, 1),
            (80, 0, 2),
            (80, 1, 1),
            (80, 0, 1),
            (160, 0, 2),
            (160, 1, 1),
            (160, 0, 1),
            (160, 1, 1),
            (160, 0, 1),
            (160, 1, 1),
            (160, 0, 1),
            (160, 1, 1),
            (160, 0, 1),
            (160, 0, 1),
            (320, 0, 2),
            (320, 1, 1),
        ],
    ),
    'm1': dict(
        legacy=True,
        rows=[(48, 1, 1), (48, 0, 1), (48, 0, 1), (96, 0, 2), (96, 1, 1), (96, 0, 1), (96, 0, 1), (192, 0, 2)]
        + [(192, 1 - i % 2, 1) for i in range(14)]
        + [(192, 0, 1), (384, 0, 2), (384, 1, 1), (384, 0, 1)],
    ),
}


class _ConvBN(nn.Sequential):
    def __init__(self, a, b, ks=1, stride=1, pad=0, groups=1):
        super().__init__()
        self.add_module('c', nn.Conv2d(a, b, ks, stride, pad, groups=groups, bias=False))
        self.add_module('bn', nn.BatchNorm2d(b))


class _Residual(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return x + self.m(x)


class _RepVGGDW(nn.Module):
    def __init__(self, ed, legacy):
        super().__init__()
        self.legacy = legacy
        self.conv = _ConvBN(ed, ed, 3, 1, 1, groups=ed)
        if legacy:
            self.conv1 = _ConvBN(ed, ed, 1, 1, 0, groups=ed)
        else:
            self.conv1 = nn.Conv2d(ed, ed, 1, 1, 0, groups=ed)
            self.bn = nn.BatchNorm2d(ed)

    def forward(self, x):
        y = self.conv(x) + self.conv1(x) + x
        return y if self.legacy else self.bn(y)


class _Block(nn.Module):
    def __init__(self, inp, oup, stride, use_se, legacy):
        super().__init__()
        se = TimmSE(inp, 0.25) if use_se else nn.Identity()
        if stride == 2:
            self.token_mixer = nn.Sequential(_ConvBN(inp, inp, 3, 2, 1, groups=inp), se, _ConvBN(inp, oup))
        else:
            self.token_mixer = nn.Sequential(_RepVGGDW(inp, legacy), se)
        self.channel_mixer = _Residual(nn.Sequential(_ConvBN(oup, 2 * oup), nn.GELU(), _ConvBN(2 * oup, oup)))

    def forward(self, x):
        return self.channel_mixer(self.token_mixer(x))


class _BNLinear(nn.Sequential):
    def __init__(self, a, b):
        super().__init__()
        self.add_module('bn', nn.BatchNorm1d(a))
        self.add_module('l', nn.Linear(a, b))


class _Classifier(nn.Module):
    def __init__(self, dim, num_classes):
        super().__init__()
        self.classifier = _BNLinear(dim, num_classes)
        self.classifier_dist = _BNLinear(dim, num_classes)

    def forward(self, x):
        return (self.classifier(x) + self.classifier_dist(x)) / 2


class _AuthorsRepViT(nn.Module):
    def __init__(self, legacy, rows, num_classes=10):
        super().__init__()
        c0 = rows[0][0]
        layers = [nn.Sequential(_ConvBN(3, c0 // 2, 3, 2, 1), nn.GELU(), _ConvBN(c0 // 2, c0, 3, 2, 1))]
        inp = c0
        for c, se, s in rows:
            layers.append(_Block(inp, c, s, se, legacy))
            inp = c
        self.features = nn.ModuleList(layers)
        self.classifier = _Classifier(inp, num_classes)

    def forward(self, x):
        for f in self.features:
            x = f(x)
        return self.classifier(F.adaptive_avg_pool2d(x, 1).flatten(1))


@pytest.mark.parametrize('arch', list(AUTHORS_CFGS))
def test_authors_structure_parity(arch):
    """The authors' own module tree (incl. M0.6, which timm lacks) converts to identical logits."""
    torch.manual_seed(0)
    ref_model = randomize_bn_(_AuthorsRepViT(**AUTHORS_CFGS[arch])).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = ref_model(x)
    model = build_classifier(arch, num_classes=10)
    model.load_state_dict(convert_checkpoint({'model': ref_model.state_dict()}, arch, format='official'), strict=True)
    assert (logits(model, x) - ref).abs().max() < 1e-5


# ------------------------------------------------------------------------------------------- errors
def test_wrong_arch_lists_keys_and_suggests_the_right_one():
    tm = timm.create_model('repvit_m1_1', pretrained=False)
    with pytest.raises(CheckpointMismatchError) as info:
        convert_checkpoint(tm.state_dict(), 'm0_9', format='timm')
    err = info.value
    msg = str(err)
    assert "arch 'm0_9'" in msg and "fits arch 'm1_1'" in msg and 'wrong shapes' in msg
    assert 'backbone.stem.conv1.conv.weight' in msg  # first mis-shaped key is named
    assert any(k == 'backbone.stem.conv1.conv.weight' for k, _, _ in err.mismatched)
    assert 'backbone.stages.2.blocks.12.token_mixer.bn.weight' in err.missing  # m0_9 has 14 blocks


def test_legacy_vs_new_token_mixer_is_detected():
    """M1 (legacy) and M0.9 have equal widths/depths; the token-mixer keys tell them apart."""
    tm = timm.create_model('repvit_m0_9', pretrained=False)
    with pytest.raises(CheckpointMismatchError) as info:
        convert_checkpoint(tm.state_dict(), 'm1', format='timm')
    err = info.value
    assert 'backbone.stages.0.blocks.0.token_mixer.conv1.conv.weight' in err.missing
    assert 'backbone.stages.0.blocks.0.token_mixer.bn.weight' in err.unexpected
    assert "fits arch 'm0_9'" in str(err)


def test_missing_and_unknown_keys_are_listed():
    tm = timm.create_model('repvit_m0_9', pretrained=False)
    official = timm_to_official(tm)
    del official['features.5.channel_mixer.m.2.bn.weight']
    official['features.99.token_mixer.0.bn.weight'] = torch.zeros(3)
    with pytest.raises(CheckpointMismatchError) as info:
        convert_checkpoint({'model': official}, 'm0_9', format='official')
    err = info.value
    assert err.missing == ['backbone.stages.1.blocks.0.channel_mixer.conv2.bn.weight']
    assert err.unexpected == ['features.99.token_mixer.0.bn.weight']
    assert 'backbone.stages.1.blocks.0.channel_mixer.conv2.bn.weight' in str(err)
    assert 'features.99.token_mixer.0.bn.weight' in str(err)
    assert isinstance(err, ValueError)


def test_foreign_checkpoint_is_refused():
    with pytest.raises(ValueError, match='not a RepViT checkpoint'):
        convert_checkpoint({'state_dict': {'conv.weight': torch.zeros(1)}}, 'm0_9')


def test_own_layout_and_fused_checkpoints_pass_the_check():
    from repvit_mm.models import switch_to_deploy

    model = build_classifier('m0_6', num_classes=5)
    state = model.state_dict()
    assert list(convert_checkpoint({'state_dict': state}, 'm0_6')) == list(state)
    fused = switch_to_deploy(model).state_dict()
    assert set(convert_checkpoint(fused, 'm0_6')) == set(fused)
    with pytest.raises(CheckpointMismatchError):
        convert_checkpoint(fused, 'm0_9')


def test_num_batches_tracked_optional_and_backbone_only():
    """Checkpoints without num_batches_tracked buffers or without a classifier convert too."""
    tm = timm.create_model('repvit_m0_9', pretrained=False, num_classes=0)
    state = {k: v for k, v in tm.state_dict().items() if not k.endswith('num_batches_tracked')}
    out = convert_checkpoint(state, 'm0_9', format='timm')
    assert not any(k.startswith('head.') for k in out)
    backbone = RepViT('m0_9')
    backbone.load_state_dict({k[len('backbone.') :]: v for k, v in out.items()}, strict=True)


# ------------------------------------------------------------------------------ loading + the CLI
def test_pretrained_init_cfg_with_prefix(tmp_path):
    torch.manual_seed(0)
    tm = randomize_bn_(timm.create_model('repvit_m0_9', pretrained=False))
    path = tmp_path / 'm0_9.pth'
    converted = convert_checkpoint(tm.state_dict(), 'm0_9', format='timm')
    torch.save({'state_dict': converted}, path)
    backbone = RepViT('m0_9', init_cfg=dict(type='Pretrained', checkpoint=str(path), prefix='backbone.'))
    backbone.init_weights()
    for k, v in backbone.state_dict().items():
        assert torch.equal(v, converted['backbone.' + k]), k


@pytest.mark.slow
def test_cli_round_trip_and_refusals(tmp_path):
    from helpers import assert_one_line_error, run_tool
    from mmengine.runner import load_checkpoint

    torch.manual_seed(0)
    tm = randomize_bn_(timm.create_model('repvit_m0_9', pretrained=False)).eval()
    src = tmp_path / 'repvit_m0_9_distill_300e.pth'
    # as the authors' DeiT-style training script saves it: its argparse options ride along
    import argparse

    torch.save(
        {
            'model': timm_to_official(tm),
            'epoch': 299,
            'args': argparse.Namespace(model='repvit_m0_9', lr=1e-3, distillation_type='hard'),
        },
        src,
    )
    dst = tmp_path / 'out' / 'repvit-m0.9.pth'

    proc = run_tool('convert_checkpoint.py', src, dst, '--arch', 'M0.9')
    assert 'official' in proc.stdout and dst.is_file()
    model = build_classifier('m0_9')
    load_checkpoint(model, str(dst), map_location='cpu', strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert (logits(model, x) - tm(x)).abs().max() < 1e-5
    saved = torch.load(dst, weights_only=True)
    assert saved['meta']['arch'] == 'm0_9' and saved['meta']['source_format'] == 'official'

    # An existing DST is not overwritten without --force (and not touched).
    stamp = os.stat(dst).st_mtime_ns
    proc = run_tool('convert_checkpoint.py', src, dst, '--arch', 'm0_9', check=False)
    assert_one_line_error(proc, 'exists', '--force')
    assert os.stat(dst).st_mtime_ns == stamp

    # A wrong arch names the problem and writes nothing; --force overwrites (here from timm's .safetensors of
    # the same weights: identical result).
    other = tmp_path / 'wrong.pth'
    proc = run_tool('convert_checkpoint.py', src, other, '--arch', 'm1_1', check=False)
    assert_one_line_error(proc, "arch 'm1_1'", "fits arch 'm0_9'", 'wrong shapes', str(src))
    assert not other.exists() and not any(p.name.startswith('.') for p in tmp_path.iterdir())
    from safetensors.torch import save_file

    timm_src = tmp_path / 'model.safetensors'  # how timm weights come from the HF hub
    save_file({k: v.contiguous() for k, v in tm.state_dict().items()}, str(timm_src))
    run_tool('convert_checkpoint.py', timm_src, dst, '--arch', 'm0_9', '--format', 'timm', '--force')
    again = torch.load(dst, weights_only=True)
    assert again['meta']['source_format'] == 'timm'
    assert all(torch.equal(again['state_dict'][k], v) for k, v in saved['state_dict'].items())
