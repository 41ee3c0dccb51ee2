"""The upstream inferencers (mmpretrain's, mmdet's, mmseg's) on the repvit-mm configs and checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import CONFIGS, random_checkpoint
from mmengine.config import Config

CLS = CONFIGS / 'classification' / 'repvit-m0.9_shapes-64px.py'
DET = CONFIGS / 'detection' / 'mask-rcnn_repvit-m0.9_fpn_shapes.py'
SEG = CONFIGS / 'segmentation' / 'fpn_repvit-m0.9_shapes.py'
IN1K = CONFIGS / 'classification' / 'repvit-m0.9_8xb256-300e_in1k.py'

# The module-scoped checkpoints are made once: the module runs on one pytest-xdist worker.
pytestmark = pytest.mark.xdist_group('inferencers')


@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp('random_checkpoints')
    configs = {'classification': CLS, 'detection': DET, 'segmentation': SEG}
    return {task: random_checkpoint(config, folder / f'{task}.pth') for task, config in configs.items()}


@pytest.fixture(scope='module')
def demo_image(tiny_shapes) -> str:
    return str(sorted((tiny_shapes / 'coco' / 'val2017').glob('*.jpg'))[0])


def test_mmpretrain_inferencer_on_shapes_and_imagenet_configs(checkpoints, demo_image, tmp_path):
    from mmpretrain import ImageClassificationInferencer

    result = ImageClassificationInferencer(str(CLS), pretrained=str(checkpoints['classification']), device='cpu')(
        demo_image
    )[0]
    assert result['pred_class'] in ('circle', 'square', 'triangle') and result['pred_scores'].shape == (3,)
    in1k = random_imagenet_checkpoint(tmp_path / 'in1k.pth')
    result = ImageClassificationInferencer(str(IN1K), pretrained=str(in1k), device='cpu')(demo_image)[0]
    assert 0 <= result['pred_label'] < 1000 and result['pred_scores'].shape == (1000,)


def random_imagenet_checkpoint(path: Path) -> Path:
    from mmengine.registry import MODELS, DefaultScope

    with DefaultScope.overwrite_default_scope('mmpretrain'):
        model = MODELS.build(Config.fromfile(IN1K).model)
    torch.save({'state_dict': model.state_dict()}, path)
    return path


def test_mmdet_inferencers_on_the_detection_config(checkpoints, demo_image):
    from mmdet.apis import DetInferencer, inference_detector, init_detector

    result = DetInferencer(model=str(DET), weights=str(checkpoints['detection']), device='cpu')(demo_image)
    assert len(result['predictions']) == 1 and 'bboxes' in result['predictions'][0]
    cfg = Config.fromfile(DET)
    cfg.model.backbone.init_cfg = None
    sample = inference_detector(init_detector(cfg, str(checkpoints['detection']), device='cpu'), demo_image)
    assert sample.pred_instances.bboxes.shape[-1] == 4


def test_mmseg_inferencers_on_the_segmentation_config(checkpoints, demo_image):
    from mmseg.apis import MMSegInferencer, inference_model, init_model

    result = MMSegInferencer(model=str(SEG), weights=str(checkpoints['segmentation']), device='cpu')(demo_image)
    assert result['predictions'].shape == (128, 128)
    cfg = Config.fromfile(SEG)
    cfg.model.backbone.init_cfg = None
    sample = inference_model(init_model(cfg, str(checkpoints['segmentation']), device='cpu'), demo_image)
    assert tuple(sample.pred_sem_seg.data.shape[-2:]) == (128, 128)
