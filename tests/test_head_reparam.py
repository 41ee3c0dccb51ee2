"""RepViTClsHead (distillation head, losses) and reparameterization (fusion exactness, params/MACs,
deploy structure, inference-only guard, whole mmdet/mmseg models)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from helpers import CHANNELS, randomize_bn_
from mmengine.analysis import FlopAnalyzer, get_model_complexity_info
from mmengine.model import BaseModel
from mmengine.registry import DefaultScope
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample
from torch.nn.modules.batchnorm import _BatchNorm

import repvit_mm.models  # noqa: F401  (registration)
from repvit_mm.models import RepViT, RepViTClsHead, switch_to_deploy


def build_classifier(arch: str, **head):
    cfg = dict(
        type='ImageClassifier',
        backbone=dict(type='RepViT', arch=arch),
        head=dict(type='RepViTClsHead', num_classes=1000, in_channels=CHANNELS[arch], **head),
    )
    return MODELS.build(cfg)


def samples(labels=None, scores=None):
    out = []
    for i in range(len(labels if labels is not None else scores)):
        s = DataSample()
        if labels is not None:
            s.set_gt_label(int(labels[i]))
        if scores is not None:
            s.set_gt_score(scores[i])
        out.append(s)
    return out


# ----------------------------------------------------------------------------------------------- head
def test_head_forward_modes():
    torch.manual_seed(0)
    head = RepViTClsHead(num_classes=5, in_channels=8)
    randomize_bn_(head)
    feats = (torch.randn(3, 8, 4, 4),)
    head.train()
    cls, dist = head(feats)
    assert cls.shape == dist.shape == (3, 5)
    head.eval()
    pooled = feats[0].mean((2, 3))
    expected = (head.head(pooled) + head.head_dist(pooled)) / 2
    assert torch.allclose(head(feats), expected)
    preds = head.predict(feats)
    assert torch.allclose(preds[0].pred_score, expected.softmax(1)[0])
    single = RepViTClsHead(num_classes=5, in_channels=8, distillation=False).train()
    assert single(feats).shape == (3, 5) and not hasattr(single, 'head_dist')
    # pre_logits accepts pooled features as well
    assert torch.equal(head.pre_logits([pooled]), pooled)


def _logits(head, feats):
    x = feats[0].mean((2, 3))
    return head.head(x), head.head_dist(x)


@pytest.mark.parametrize('kind', ['hard', 'soft'])
def test_distillation_losses(kind):
    torch.manual_seed(0)
    head = RepViTClsHead(num_classes=6, in_channels=8, distillation_type=kind, alpha=0.3, tau=2.0).train()
    feats = (torch.randn(4, 8, 3, 3),)
    labels = torch.tensor([0, 3, 5, 1])
    teacher = torch.randn(4, 6)
    losses = head.loss(feats, samples(labels), teacher_logits=teacher)
    cls, dist = _logits(head, feats)
    base = F.cross_entropy(cls, labels)
    if kind == 'hard':
        dist_term = F.cross_entropy(dist, teacher.argmax(1))
    else:
        p_t = F.softmax(teacher / 2.0, 1)
        kl = (p_t * (F.log_softmax(teacher / 2.0, 1) - F.log_softmax(dist / 2.0, 1))).sum()
        dist_term = kl * 4.0 / dist.numel()
    assert torch.allclose(losses['loss'], 0.7 * base + 0.3 * dist_term, atol=1e-6)
    assert torch.allclose(losses['cls_term'], base, atol=1e-6)
    assert torch.allclose(losses['dist_term'], dist_term, atol=1e-6)
    # mmengine sums every key containing 'loss': only the total.
    total, log_vars = BaseModel.parse_losses(None, losses)
    assert torch.allclose(total, losses['loss'])
    losses['loss'].backward()
    assert head.head.linear.weight.grad.abs().sum() > 0
    assert head.head_dist.linear.weight.grad.abs().sum() > 0


def test_distillation_without_teacher_trains_dist_head_on_labels():
    torch.manual_seed(0)
    feats = (torch.randn(4, 8, 3, 3),)
    labels = torch.tensor([0, 3, 5, 1])
    for kind, teacher in (('hard', None), ('none', torch.randn(4, 6))):
        head = RepViTClsHead(num_classes=6, in_channels=8, distillation_type=kind).train()
        losses = head.loss(feats, samples(labels), teacher_logits=teacher)
        cls, dist = _logits(head, feats)
        expected = 0.5 * F.cross_entropy(cls, labels) + 0.5 * F.cross_entropy(dist, labels)
        assert torch.allclose(losses['loss'], expected, atol=1e-6)
        losses['loss'].backward()
        assert head.head_dist.linear.weight.grad.abs().sum() > 0


def test_soft_targets_and_no_distillation():
    torch.manual_seed(0)
    feats = (torch.randn(4, 8, 3, 3),)
    scores = torch.softmax(torch.randn(4, 6), 1)  # Mixup/CutMix gt_score
    head = RepViTClsHead(
        num_classes=6, in_channels=8, distillation=False, loss=dict(type='CrossEntropyLoss', use_soft=True)
    ).train()
    losses = head.loss(feats, samples(scores=scores))
    cls = head.head(feats[0].mean((2, 3)))
    expected = -(scores * F.log_softmax(cls, 1)).sum(1).mean()
    assert torch.allclose(losses['loss'], expected, atol=1e-6)
    assert set(losses) == {'loss'}


def test_cal_acc():
    head = RepViTClsHead(num_classes=3, in_channels=4, topk=(1, 2), cal_acc=True).train()
    losses = head.loss(
        (torch.randn(5, 4, 2, 2),), samples(torch.tensor([0, 1, 2, 0, 1])), teacher_logits=torch.randn(5, 3)
    )
    assert {'accuracy_top-1', 'accuracy_top-2'} <= set(losses)


def test_head_switch_to_deploy_exact_and_guard():
    torch.manual_seed(0)
    for distillation in (True, False):
        head = randomize_bn_(RepViTClsHead(num_classes=7, in_channels=16, distillation=distillation)).eval()
        feats = (torch.randn(5, 16, 3, 3),)
        ref = head(feats)
        head.switch_to_deploy()
        assert isinstance(head.head, nn.Linear) and not hasattr(head, 'head_dist')
        assert (head(feats) - ref).abs().max() < 1e-5
        with pytest.raises(RuntimeError, match='inference-only'):
            head.train()
        head.eval()  # still fine
        with pytest.raises(RuntimeError, match='inference-only: it computes no training loss'):
            head.loss(feats, samples(torch.zeros(5, dtype=torch.long)))
        built = RepViTClsHead(num_classes=7, in_channels=16, distillation=distillation, deploy=True)
        built.load_state_dict(head.state_dict(), strict=True)
        assert torch.equal(built(feats), head(feats))


# ----------------------------------------------------------------------------------------- fusion
@pytest.mark.parametrize('arch', ['m0_6', 'm1', pytest.param('m2_3', marks=pytest.mark.slow)])
def test_backbone_fusion_exact_224(arch):
    """Eval-mode outputs of every stage are unchanged by reparameterization (224x224, random BN)."""
    torch.manual_seed(0)
    model = randomize_bn_(RepViT(arch, out_indices=(0, 1, 2, 3))).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        ref = model(x)
        switch_to_deploy(model)
        fused = model(x)
    assert not any(isinstance(m, _BatchNorm) for m in model.modules())
    for r, f in zip(ref, fused, strict=True):
        assert r.abs().max() > 0.1  # non-trivial features
        assert (r - f).abs().max() < 1e-4, (arch, (r - f).abs().max())


@pytest.mark.parametrize('arch', ['m0_9', pytest.param('m3', marks=pytest.mark.slow)])
def test_classifier_fusion_exact_and_deploy_checkpoint(arch):
    torch.manual_seed(0)
    model = randomize_bn_(build_classifier(arch)).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        ref = model(x, mode='tensor')
        switch_to_deploy(model)
        fused = model(x, mode='tensor')
    assert ref.abs().max() > 0.1
    assert (ref - fused).abs().max() < 1e-4, (ref - fused).abs().max()
    assert not model.training and model.backbone.deploy and model.head.deploy

    # The fused checkpoint loads (strictly) into a model built with deploy=True.
    built = MODELS.build(
        dict(
            type='ImageClassifier',
            backbone=dict(type='RepViT', arch=arch, deploy=True),
            head=dict(type='RepViTClsHead', num_classes=1000, in_channels=CHANNELS[arch], deploy=True),
        )
    )
    assert set(built.state_dict()) == set(model.state_dict())
    # Same modules, in the same places: the wrappers are gone, each replaced by its bare conv/linear
    # (as in timm's fused model: one module call per conv at inference).
    assert [(n, type(m)) for n, m in built.named_modules()] == [(n, type(m)) for n, m in model.named_modules()]
    kinds = {type(m).__name__ for m in model.backbone.modules()}
    assert not kinds & {'ConvBN', 'RepVGGDW', 'BatchNorm2d'}, kinds
    built.load_state_dict(model.state_dict(), strict=True)
    built.eval()
    with torch.no_grad():
        assert (built(x, mode='tensor') - fused).abs().max() < 1e-6

    # Inference-only: training mode is refused on the whole model, the backbone and the head.
    for m in (model, model.backbone, model.head, built):
        with pytest.raises(RuntimeError, match='reparameterized'):
            m.train()
    model.train(False)
    model.eval()


# Paper (Params M, GMACs) of the fused 1000-class classifier at 224x224.
PAPER = {
    'm0_9': (5.1, 0.8),
    'm1_0': (6.8, 1.1),
    'm1_1': (8.2, 1.3),
    'm1_5': (14.0, 2.3),
    'm2_3': (22.9, 4.5),
    'm1': (5.1, 0.8),
    'm2': (8.2, 1.3),
    'm3': (10.1, 1.9),
}


class _Tensor(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x, mode='tensor')


@pytest.mark.parametrize('arch', list(PAPER))
def test_fused_params_and_macs_match_paper(arch):
    model = switch_to_deploy(build_classifier(arch))
    params = sum(p.numel() for p in model.parameters())
    # mmengine's FlopAnalyzer counts one multiply-add as one "flop", i.e. MACs (convs + the linear head).
    analyzer = FlopAnalyzer(_Tensor(model), (torch.randn(1, 3, 224, 224),))
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    macs = analyzer.total()
    paper_params, paper_macs = PAPER[arch]
    assert round(params / 1e6, 1) == paper_params, params
    assert round(macs / 1e9, 1) == paper_macs, macs
    if arch == 'm0_9':  # the public entry point gives the same numbers
        info = get_model_complexity_info(_Tensor(model), input_shape=(3, 224, 224), show_table=False, show_arch=False)
        assert info['flops'] == macs and info['params'] == params


# ------------------------------------------------------------------------------ whole mmdet / mmseg
def _mmdet_model():
    from mmdet.registry import MODELS as DET
    from mmengine.hub import get_config

    cfg = get_config('mmdet::_base_/models/mask-rcnn_r50_fpn.py').model
    cfg.backbone = dict(type='mmpretrain.RepViT', arch='m0_9', out_indices=(0, 1, 2, 3))
    cfg.neck.in_channels = [48, 96, 192, 384]
    with DefaultScope.overwrite_default_scope('mmdet'):
        return DET.build(cfg)


def _mmseg_model():
    from mmengine.hub import get_config
    from mmseg.registry import MODELS as SEG

    cfg = get_config('mmseg::_base_/models/fpn_r50.py').model
    cfg.pretrained = None
    cfg.backbone = dict(type='mmpretrain.RepViT', arch='m0_9', out_indices=(0, 1, 2, 3))
    cfg.neck.in_channels = [48, 96, 192, 384]
    cfg.decode_head.norm_cfg = dict(type='BN', requires_grad=True)
    with DefaultScope.overwrite_default_scope('mmseg'):
        return SEG.build(cfg)


@pytest.mark.parametrize('build', [_mmdet_model, _mmseg_model], ids=['mask_rcnn', 'semantic_fpn'])
def test_switch_to_deploy_whole_dense_model(build):
    torch.manual_seed(0)
    model = randomize_bn_(build()).eval()
    x = torch.randn(1, 3, 128, 96)
    with torch.no_grad():
        ref = model.extract_feat(x)
        out = switch_to_deploy(model)
        fused = model.extract_feat(x)
    assert out is model and not model.training and model.backbone.deploy
    for r, f in zip(ref, fused, strict=True):
        assert (r - f).abs().max() < 1e-4
    with pytest.raises(RuntimeError, match='inference-only'):
        model.train()
    model.eval()


def test_switch_to_deploy_is_idempotent_and_copies_independent():
    model = randomize_bn_(RepViT('m0_6', out_indices=(3,))).eval()
    twin = copy.deepcopy(model)
    switch_to_deploy(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    switch_to_deploy(model)  # second call: no-op
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert not twin.deploy and twin.training is False
    twin.train()  # the unfused copy still trains
