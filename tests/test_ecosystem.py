"""The OpenMMLab tools users already know, on our configs: the frameworks' inferencers and high-level APIs,
mmpretrain's model hub with the authors' release files, the analysis tools, ``tools/test.py --show-dir``
and the README's Python API snippets."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlparse

import pytest
import torch
from helpers import CONFIGS, ROOT, assert_one_line_error, randomize_bn_, run_tool

from repvit_mm.utils.errors import UserInputError

CLS_CONFIG = CONFIGS / 'classification' / 'repvit-m0.9_shapes-64px.py'
DET_CONFIG = CONFIGS / 'detection' / 'mask-rcnn_repvit-m0.9_fpn_shapes.py'
SEG_CONFIG = CONFIGS / 'segmentation' / 'fpn_repvit-m0.9_shapes.py'
DISTILL_NAME = 'repvit-m0.9_8xb256-distill-300e_in1k'
README = (ROOT / 'README.md').read_text()


# Its module- and session-scoped fixtures (trained models, written files) are made once: the module runs on one
# pytest-xdist worker (`make test` distributes with --dist loadgroup). Two parts that share no expensive
# fixture with the rest add a group of their own, so that they may run on the other worker: xdist joins a
# test's group names, so that they run as the groups 'ecosystem_mim' and 'ecosystem_own_data'.
pytestmark = pytest.mark.xdist_group('ecosystem')
MIM_GROUP = pytest.mark.xdist_group('mim')  # the wheel and the editable install: only the mim tests use them
OWN_DATA_GROUP = pytest.mark.xdist_group('own_data')  # trainings on data of their own


def shapes_options(task: str, shapes_root: Path) -> dict:
    """``--cfg-options`` (as a dict) that point a Shapes config at the session's Shapes data."""
    root = {
        'classification': shapes_root / 'imagenet',
        'detection': shapes_root / 'coco',
        'segmentation': shapes_root / 'ade20k',
    }[task]
    options = {f'{split}_dataloader.dataset.data_root': str(root) for split in ('train', 'val', 'test')}
    if task == 'detection':
        ann = str(root / 'annotations' / 'instances_val2017.json')
        options.update(
            {'val_evaluator.ann_file': ann, 'test_evaluator.ann_file': ann, 'model.test_cfg.rcnn.score_thr': 0.0}
        )
    return options


def first_image(folder: Path) -> Path:
    return min(p for p in folder.rglob('*') if p.suffix.lower() in ('.jpg', '.jpeg', '.png'))


@pytest.fixture(scope='session')
def images(shapes_root) -> dict[str, Path]:
    return {
        'classification': first_image(shapes_root / 'imagenet' / 'val'),
        'detection': first_image(shapes_root / 'coco' / 'val2017'),
        'segmentation': first_image(shapes_root / 'ade20k' / 'images' / 'validation'),
    }


@pytest.fixture(scope='session')
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """One checkpoint per task as mmengine's Runner writes them (``state_dict`` + ``meta.dataset_meta``),
    of each Shapes config's model with random weights and BatchNorm statistics."""
    from repvit_mm.deploy.model import build_model, read_config

    folder = tmp_path_factory.mktemp('checkpoints')
    paths = {}
    for task, config in (('classification', CLS_CONFIG), ('detection', DET_CONFIG), ('segmentation', SEG_CONFIG)):
        cfg = read_config(config)
        torch.manual_seed(0)
        model = randomize_bn_(build_model(cfg))
        dataset = cfg.test_dataloader.dataset
        # what the Runner saves: the dataset's metainfo (class names; palette for detection / segmentation)
        meta = {'classes': list(dataset.classes)} if 'classes' in dataset else dict(dataset.metainfo)
        paths[task] = folder / f'{task}.pth'
        torch.save({'state_dict': model.state_dict(), 'meta': {'dataset_meta': meta}}, paths[task])
    return paths


def own_layout_to_authors(state: dict, arch: str) -> dict:
    from test_classification import to_authors_layout

    return to_authors_layout(state, arch)


@pytest.fixture(scope='session')
def release_m0_9(tmp_path_factory) -> tuple[Path, dict]:
    """An authors'-layout release file of RepViT-M0.9 with both ImageNet heads (random weights), and the
    state dict in our layout it must convert to."""
    from mmpretrain.registry import MODELS

    torch.manual_seed(0)
    model = randomize_bn_(
        MODELS.build(
            dict(
                type='ImageClassifier',
                backbone=dict(type='RepViT', arch='m0_9'),
                head=dict(type='RepViTClsHead', num_classes=1000, in_channels=384, distillation=True),
            )
        )
    )
    ours = {k: v for k, v in model.state_dict().items() if not k.endswith('num_batches_tracked')}
    path = tmp_path_factory.mktemp('release') / 'repvit_m0_9_distill_300e.pth'
    torch.save({'model': own_layout_to_authors(ours, 'm0_9'), 'epoch': 299}, path)
    return path, ours


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    """An empty torch.hub cache for this test (``$TORCH_HOME/hub/checkpoints``)."""
    home = tmp_path / 'torch_home'
    monkeypatch.setenv('TORCH_HOME', str(home))
    return home


def prefill_hub_cache(url: str, source: Path) -> Path:
    """Put ``source`` where torch.hub (and mmengine's http loader) would download ``url`` to, so no network
    is needed."""
    cached = Path(torch.hub.get_dir()) / 'checkpoints' / Path(urlparse(url).path).name
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(source.read_bytes())
    return cached


# ------------------------------------------------------------------------------------ upstream inferencers
def test_classification_apis(checkpoints, images):
    from mmpretrain import ImageClassificationInferencer, get_model, inference_model

    inferencer = ImageClassificationInferencer(
        str(CLS_CONFIG), pretrained=str(checkpoints['classification']), device='cpu'
    )
    result = inferencer(str(images['classification']))[0]
    assert result['pred_class'] in ('circle', 'square', 'triangle')
    assert abs(sum(result['pred_scores']) - 1) < 1e-4

    # inference_model finds its inferencer through the model hub's task metadata: our configs are there
    model = get_model('repvit-m0.9_shapes-64px', pretrained=str(checkpoints['classification']), device='cpu')
    again = inference_model(model, str(images['classification']))
    assert again['pred_label'] == result['pred_label']
    assert abs(again['pred_score'] - result['pred_score']) < 1e-5


def test_detection_apis(checkpoints, images):
    from mmdet.apis import DetInferencer, inference_detector, init_detector

    inferencer = DetInferencer(
        str(DET_CONFIG), weights=str(checkpoints['detection']), device='cpu', show_progress=False
    )
    result = inferencer(str(images['detection']), return_vis=True, no_save_vis=True, pred_score_thr=0.0)
    prediction = result['predictions'][0]
    assert len(prediction['labels']) == len(prediction['bboxes']) == len(prediction['scores'])
    assert result['visualization'][0].shape[2] == 3

    model = init_detector(str(DET_CONFIG), str(checkpoints['detection']), device='cpu')
    sample = inference_detector(model, str(images['detection']))
    assert sample.pred_instances.bboxes.shape[1] == 4
    assert tuple(model.dataset_meta['classes']) == ('circle', 'square', 'triangle')


def test_segmentation_apis(checkpoints, images):
    import numpy as np
    from mmseg.apis import MMSegInferencer, inference_model, init_model

    inferencer = MMSegInferencer(str(SEG_CONFIG), weights=str(checkpoints['segmentation']), device='cpu')
    inferencer.show_progress = False
    prediction = np.asarray(inferencer(str(images['segmentation']))['predictions'])
    image_shape = __import__('mmcv').imread(str(images['segmentation'])).shape[:2]
    assert prediction.shape == image_shape and prediction.max() < 4

    model = init_model(str(SEG_CONFIG), str(checkpoints['segmentation']), device='cpu')
    sample = inference_model(model, str(images['segmentation']))
    assert np.array_equal(sample.pred_sem_seg.data[0].numpy(), prediction)


@pytest.mark.slow
def test_distill_config_needs_no_teacher_file_at_inference(release_m0_9, images, tmp_path):
    """An ImageNet -distill- config (whose teacher file data/teachers/... does not exist here) with an
    authors' release file converted by tools/convert_checkpoint.py: mmpretrain's APIs build it, the
    checkpoint loads strictly, and the prediction is the mean of both heads."""
    from mmpretrain import ImageClassificationInferencer, get_model, inference_model

    config = CONFIGS / 'classification' / f'{DISTILL_NAME}.py'
    converted = tmp_path / 'repvit-m0.9_in1k.pth'
    run_tool('convert_checkpoint.py', release_m0_9[0], converted, '--arch', 'm0_9')
    model = get_model(DISTILL_NAME, pretrained=str(converted), device='cpu')
    with pytest.raises(UserInputError, match='teacher checkpoint not found'):
        model.teacher_logits(torch.zeros(1, 3, 224, 224))  # training would still need it
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in release_m0_9[1].items())
    result = inference_model(model, str(images['classification']))
    assert 0 <= result['pred_label'] < 1000
    inferencer = ImageClassificationInferencer(str(config), pretrained=str(converted), device='cpu')
    assert inferencer(str(images['classification']))[0]['pred_label'] == result['pred_label']


# ------------------------------------------------------------------------------------------- model hub
def test_model_index_has_one_collection_per_task_with_metadata():
    from modelindex.load_model_index import load

    index = load(str(ROOT / 'repvit_mm' / '.mim' / 'model-index.yml'))
    index.build_models_with_collections()
    collections = {c.name for c in index.collections}
    assert collections == {'RepViT', 'Mask R-CNN RepViT', 'Semantic FPN RepViT'}
    listed = {m.config for m in index.models}
    on_disk = {
        str(p.relative_to(ROOT))
        for task in ('classification', 'detection', 'segmentation')
        for p in (CONFIGS / task).glob('*.py')
    }
    assert listed == on_disk
    for model in index.models:
        data = model.metadata.data
        assert data['Training Data'] in ('ImageNet-1k', 'COCO', 'ADE20K', 'Shapes'), model.name
        assert data['Parameters'] > 1e6 and data['FLOPs'] > 1e7 and data['Batch Size'] > 1, model.name
        assert data.get('Epochs') or data.get('Iterations'), model.name
        assert (ROOT / model.config).is_file()
        if model.weights:
            assert model.weights.startswith(
                (
                    'https://github.com/THU-MIG/RepViT/releases/download/v1.0/',
                    'https://github.com/jameslahm/RepViT/releases/download/v1.0/',
                )
            )
            assert model.results, f'{model.name}: weights without the paper result they reproduce'
    classifiers = [m for m in index.models if m.in_collection == 'RepViT']
    assert all(m.results and m.results[0].task == 'Image Classification' for m in classifiers)
    with_weights = sorted(m.name for m in index.models if m.weights)
    assert len(with_weights) == 11 + 3 + 3 + 3  # ImageNet (M0.6-M2.3, 300e/450e), v1 M1-M3, COCO, ADE20K
    paper = {m.name: m.results[0].metrics for m in index.models if m.results}
    assert paper['repvit-m1.1_8xb256-distill-450e_in1k'] == {'Top 1 Accuracy': 81.2}
    assert paper['fpn_repvit-m2.3_8xb4-40k_ade20k-512x512'] == {'mIoU': 46.1}


def test_model_hub_lists_ours_and_runs_the_authors_release(release_m0_9, torch_home, images):
    """mmpretrain's get_model(name, pretrained=True) takes the authors' file from torch.hub's cache (a
    download with a network), converts it in memory, and inference_model runs it, no teacher needed."""
    from mmpretrain import get_model, inference_model, list_models
    from mmpretrain.apis import ModelHub
    from mmpretrain.datasets.categories import IMAGENET_CATEGORIES

    import repvit_mm  # noqa: F401  (registers the model index)

    names = list_models('*repvit*')
    assert DISTILL_NAME in names and 'repvit-m0.9_shapes-64px' in names and len(names) == 9 * 3 + 1
    url = ModelHub.get(DISTILL_NAME).weights
    assert url == 'https://github.com/THU-MIG/RepViT/releases/download/v1.0/repvit_m0_9_distill_300e.pth'
    cached = prefill_hub_cache(url, release_m0_9[0])
    assert cached.is_relative_to(torch_home)

    model = get_model(DISTILL_NAME, pretrained=True, device='cpu')
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in release_m0_9[1].items())
    result = inference_model(model, str(images['classification']))
    assert result['pred_class'] == IMAGENET_CATEGORIES[result['pred_label']]


def test_model_hub_refuses_foreign_and_unsafe_release_files(release_m0_9, torch_home, tmp_path):
    """What is in torch.hub's cache under a release's name is checked like any checkpoint: M0.9 weights
    under the M1.1 name are a mismatch naming the arch they fit, a file that pickles an arbitrary object is
    never unpickled."""
    from mmpretrain import get_model
    from mmpretrain.apis import ModelHub

    from repvit_mm.utils.safe_checkpoint import UnsafeCheckpointError

    name = 'repvit-m1.1_8xb256-distill-300e_in1k'
    prefill_hub_cache(ModelHub.get(name).weights, release_m0_9[0])
    with pytest.raises(UserInputError, match='m0_9'):
        get_model(name, pretrained=True)
    unsafe = tmp_path / 'unsafe.pth'
    torch.save({'model': {}, 'where': Path('/etc')}, unsafe)
    prefill_hub_cache(ModelHub.get(name).weights, unsafe)
    with pytest.raises(UnsafeCheckpointError, match='refused'):
        get_model(name, pretrained=True)


# ------------------------------------------------------------------------------------------ tools
NEW_TOOLS = (
    'analysis_tools/print_config.py',
    'analysis_tools/browse_dataset.py',
    'analysis_tools/analyze_logs.py',
    'publish_model.py',
)


@pytest.mark.parametrize('tool', NEW_TOOLS)
def test_tool_answers_help_and_is_documented(tool):
    proc = run_tool(tool, '-h')  # (a fresh interpreter's start-up: tests/test_layers.py)
    assert proc.stdout.startswith('usage:') and proc.stderr == ''
    assert f'tools/{tool}' in (ROOT / 'docs' / 'usage.md').read_text()


def test_print_config_shows_merged_config_and_checks_options():
    out = run_tool(
        'analysis_tools/print_config.py', SEG_CONFIG, '--cfg-options', 'model.decode_head.num_classes=7'
    ).stdout
    assert "type='mmpretrain.RepViT'" in out and 'num_classes=7' in out and 'PolyLR' in out
    proc = run_tool(
        'analysis_tools/print_config.py', SEG_CONFIG, '--cfg-options', 'model.bakbone.arch=m1_1', check=False
    )
    assert_one_line_error(proc, 'model.bakbone.arch')


@pytest.mark.parametrize(
    'task,config', [('classification', CLS_CONFIG), ('detection', DET_CONFIG), ('segmentation', SEG_CONFIG)]
)
def test_browse_dataset_draws_each_task(task, config, shapes_root, tmp_path):
    from PIL import Image

    from repvit_mm.apis import load_config
    from repvit_mm.apis.analysis import browse_dataset

    cfg = load_config(str(config), shapes_options(task, shapes_root))
    written = browse_dataset(cfg, tmp_path / 'browse', phase='train', number=2)
    assert [p.parent for p in written] == [tmp_path / 'browse'] * 2
    for path in written:
        picture = Image.open(path)
        assert picture.size[0] >= 64 and len(set(picture.getdata())) > 10  # drawn, not blank


@pytest.fixture(scope='session')
def trained_log(shapes_root, tmp_path_factory) -> Path:
    """A 4-iteration Shapes classifier run (validation after iteration 2 and 4): its json log."""
    from repvit_mm.apis import load_config, prepare_train_cfg, train

    work = tmp_path_factory.mktemp('trained')
    options = {
        **shapes_options('classification', shapes_root),
        'train_cfg.max_iters': 4,
        'train_cfg.val_interval': 2,
        'default_hooks.logger.interval': 1,
        'default_hooks.checkpoint.interval': 4,
        'train_dataloader.batch_size': 4,
    }
    cfg = prepare_train_cfg(load_config(str(CLS_CONFIG), options), work_dir=str(work))
    runner = train(cfg)
    return Path(runner.log_dir) / 'vis_data' / 'scalars.json'


@pytest.mark.slow
def test_analyze_logs_plots_curves_and_training_time(trained_log, tmp_path):
    from PIL import Image

    out = tmp_path / 'curves.png'
    tool = 'analysis_tools/analyze_logs.py'
    run_tool(tool, 'plot_curve', trained_log.parents[1], '--keys', 'loss', 'lr', 'accuracy/top1', '--out', out)
    assert Image.open(out).size == (1350, 350)  # three panels
    line = run_tool(tool, 'cal_train_time', trained_log).stdout.splitlines()[-1]
    assert re.search(r'4 iterations, \d+\.\d+ s/iter', line), line
    proc = run_tool(
        'analysis_tools/analyze_logs.py',
        'plot_curve',
        trained_log,
        '--keys',
        'mIoU',
        '--out',
        tmp_path / 'x.png',
        check=False,
    )
    assert_one_line_error(proc, 'mIoU', 'accuracy/top1')
    assert not (tmp_path / 'x.png').exists()


@pytest.mark.slow
def test_publish_model_strips_training_state_and_hashes_the_name(trained_log, tmp_path):
    import hashlib

    from repvit_mm.utils.safe_checkpoint import safe_torch_load

    src = trained_log.parents[2] / 'iter_4.pth'
    assert {'optimizer', 'message_hub'} <= set(safe_torch_load(str(src)))
    proc = run_tool('publish_model.py', src, tmp_path / 'repvit-m0.9_shapes.pth')
    published = Path(proc.stdout.split('published: ')[1].strip())
    digest = hashlib.sha256(published.read_bytes()).hexdigest()
    assert published.name == f'repvit-m0.9_shapes-{digest[:8]}.pth'
    saved = safe_torch_load(str(published))
    assert 'optimizer' not in saved and 'message_hub' not in saved
    assert saved['meta']['dataset_meta']['classes'] == ('circle', 'square', 'triangle')
    assert saved['state_dict'].keys() == safe_torch_load(str(src))['state_dict'].keys()
    again = run_tool('publish_model.py', src, tmp_path / 'repvit-m0.9_shapes.pth', check=False)
    assert_one_line_error(again, 'already exists')


@pytest.mark.parametrize(
    'task,config', [('classification', CLS_CONFIG), ('detection', DET_CONFIG), ('segmentation', SEG_CONFIG)]
)
@pytest.mark.slow
def test_test_tool_show_dir_writes_prediction_pictures(task, config, checkpoints, shapes_root, tmp_path):
    from PIL import Image

    from repvit_mm.apis import load_config, prepare_test_cfg, test

    # mmengine keeps visualizers by name for the whole process: a name of its own, so that this test's Runner
    # does not get the visualizer an earlier test built under mmdet's / mmseg's default name 'visualizer'
    options = {
        **shapes_options(task, shapes_root),
        'test_dataloader.dataset.indices': 2,
        'visualizer.name': f'show-dir-{task}',
    }
    cfg = prepare_test_cfg(
        load_config(str(config), options),
        str(checkpoints[task]),
        work_dir=str(tmp_path / 'work'),
        show_dir=str(tmp_path / 'show'),
    )
    test(cfg)
    pictures = sorted(p for p in (tmp_path / 'show').rglob('*') if p.suffix in ('.png', '.jpg'))
    assert len(pictures) == 2, pictures
    # the names docs/usage.md gives
    pattern = {
        'classification': r'(?P<image>[^/]+)_\d+\.png',  # mmpretrain: <image>_<index>.png
        'detection': r'(?P<image>[^/]+)',  # mmdet: the image's own name
        'segmentation': r'vis_data/vis_image/test_(?P<image>[^/]+)_\d+\.png',  # mmseg's visualizer backend
    }[task]
    names = {p.name for p in shapes_root.rglob('*') if p.suffix.lower() in ('.png', '.jpg', '.jpeg')}
    for picture in pictures:
        match = re.fullmatch(pattern, str(picture.relative_to(tmp_path / 'show')))
        assert match and match['image'] in names, picture
    for picture in pictures:
        with Image.open(picture) as drawn:  # 64 / 128 px images, enlarged as tools/demo.py draws
            assert min(drawn.size) >= 256, (picture.name, drawn.size)


# ------------------------------------------------------------------------------------- your own data
OWN = CONFIGS / 'own_data'
IMAGENET_URL = 'https://github.com/THU-MIG/RepViT/releases/download/v1.0/repvit_m0_9_distill_300e.pth'


def make_own_classes(shapes_root: Path, root: Path) -> None:
    """ImageNet-folder data with two classes of its own: circles become 'disc', triangles 'wedge'."""
    import shutil

    for split in ('train', 'val'):
        for old, new in (('circle', 'disc'), ('triangle', 'wedge')):
            shutil.copytree(shapes_root / 'imagenet' / split / old, root / split / new)


def make_own_coco(shapes_root: Path, root: Path) -> None:
    """COCO-json data with other categories (and ids): circles are 'coin' (id 7), squares 'tile' (id 3),
    triangles are not annotated."""
    import shutil

    rename = {'circle': (7, 'coin'), 'square': (3, 'tile')}
    for split in ('train', 'val'):
        shutil.copytree(shapes_root / 'coco' / f'{split}2017', root / split)
        coco = json.loads((shapes_root / 'coco' / 'annotations' / f'instances_{split}2017.json').read_text())
        ids = {c['id']: rename.get(c['name']) for c in coco['categories']}
        coco['categories'] = [{'id': i, 'name': n, 'supercategory': 'shape'} for i, n in rename.values()]
        coco['annotations'] = [
            dict(a, category_id=ids[a['category_id']][0])
            for a in coco['annotations']
            if ids[a['category_id']] is not None
        ]
        (root / 'annotations').mkdir(exist_ok=True)
        (root / 'annotations' / f'{split}.json').write_text(json.dumps(coco))


def make_own_masks(shapes_root: Path, root: Path) -> None:
    """Image + mask data with three classes of its own (0 ground, 1 round, 2 cornered; 255 ignored)."""
    import shutil

    import numpy as np
    from PIL import Image

    lut = np.full(256, 255, np.uint8)
    lut[[1, 2, 3, 4]] = [0, 1, 2, 2]  # Shapes: 0 unlabeled, 1 background, 2 circle, 3 square, 4 triangle
    for split, old in (('train', 'training'), ('val', 'validation')):
        shutil.copytree(shapes_root / 'ade20k' / 'images' / old, root / 'images' / split)
        (root / 'masks' / split).mkdir(parents=True)
        for png in (shapes_root / 'ade20k' / 'annotations' / old).glob('*.png'):
            Image.fromarray(lut[np.asarray(Image.open(png))]).save(root / 'masks' / split / png.name)


OWN_DATA = {
    'classification': (OWN / 'repvit-m0.9_own-classes.py', make_own_classes, ('disc', 'wedge')),
    'detection': (OWN / 'mask-rcnn_repvit-m0.9_fpn_own-coco.py', make_own_coco, ('coin', 'tile')),
    'segmentation': (OWN / 'fpn_repvit-m0.9_own-masks.py', make_own_masks, ('ground', 'round', 'cornered')),
}


def _backbone_of(state: dict) -> dict:
    return {k.removeprefix('backbone.'): v for k, v in state.items() if k.startswith('backbone.')}


@OWN_DATA_GROUP
@pytest.mark.slow
@pytest.mark.parametrize('task', list(OWN_DATA))
def test_own_data_example_trains_from_the_authors_imagenet_weights(
    task, shapes_root, release_m0_9, torch_home, tmp_path
):
    """The README's example config for each task, unchanged but for the data root: the dataset's own
    classes reach the dataset, the heads and the checkpoint; the backbone starts from the authors' ImageNet
    release (from torch.hub's cache, converted on loading); two iterations train."""
    from repvit_mm.apis import build_runner, load_config, prepare_train_cfg

    config, make, classes = OWN_DATA[task]
    make(shapes_root, tmp_path / 'data')
    prefill_hub_cache(IMAGENET_URL, release_m0_9[0])
    options = {f'{s}_dataloader.dataset.data_root': str(tmp_path / 'data') + '/' for s in ('train', 'val', 'test')}
    options.update(
        {
            'train_cfg.max_iters': 2,
            'train_cfg.val_interval': 2,
            'default_hooks.checkpoint.interval': 2,
            'train_dataloader.batch_size': 2,
        }
    )
    if task == 'detection':
        options['val_evaluator.ann_file'] = str(tmp_path / 'data' / 'annotations' / 'val.json')
    cfg = prepare_train_cfg(load_config(str(config), options), work_dir=str(tmp_path / 'work'))
    runner = build_runner(cfg)
    assert tuple(runner.train_dataloader.dataset.metainfo['classes']) == classes
    runner.model.init_weights()
    backbone = runner.model.backbone.state_dict()
    expected = _backbone_of(release_m0_9[1])
    differ = sorted(k for k, v in expected.items() if not torch.equal(backbone[k], v))
    assert not differ, differ[:5]
    runner.train()
    saved = torch.load(tmp_path / 'work' / 'iter_2.pth', weights_only=False)
    assert tuple(saved['meta']['dataset_meta']['classes']) == classes
    outputs = {
        'classification': {'head.head.linear.weight': len(classes)},
        'detection': {
            'roi_head.bbox_head.fc_cls.weight': len(classes) + 1,  # + background
            'roi_head.mask_head.conv_logits.weight': len(classes),
        },
        'segmentation': {'decode_head.conv_seg.weight': len(classes)},
    }[task]
    assert {k: saved['state_dict'][k].shape[0] for k in outputs} == outputs


def usage_section(title: str) -> str:
    return (ROOT / 'docs' / 'usage.md').read_text().split(f'\n## {title}\n', 1)[1].split('\n## ', 1)[0]


@OWN_DATA_GROUP
def test_own_classifier_command_of_the_usage_page_trains_on_folders_drawn_by_pil(tmp_path):
    """docs/usage.md's command that points the classifier at one's own folders and backbone file, as
    written but for the paths (and a 2-iteration schedule with lr 0): pictures written here by PIL in
    ``{train,val}/{cat,dog,fox}``, the backbone from a file of one's own (offline), every override taking
    effect: the classes reach the checkpoint, the head has 3 outputs, the backbone's parameters are the
    file's."""
    import shlex

    from PIL import Image, ImageDraw

    from repvit_mm.models import RepViT

    commands = re.findall(r'^    (python tools/train\.py .*?)(?<!\\)\n', usage_section('Your own data'), re.S | re.M)
    command = next(c for c in commands if '/data/pets' in c)
    args = shlex.split(command.replace('\\\n', ' ').replace('/data/pets', str(tmp_path / 'pets')))
    colours = {'cat': (230, 120, 20), 'dog': (60, 60, 200), 'fox': (200, 30, 30)}
    for split, count in (('train', 4), ('val', 2)):
        for name, colour in colours.items():
            (tmp_path / 'pets' / split / name).mkdir(parents=True)
            for i in range(count):
                picture = Image.new('RGB', (80, 60), (240 - 20 * i, 240, 230))
                ImageDraw.Draw(picture).ellipse((10 + 5 * i, 10, 60, 50), fill=colour)
                picture.save(tmp_path / 'pets' / split / name / f'{name}{i}.jpg')
    torch.manual_seed(0)
    backbone = randomize_bn_(RepViT('m0_9'))
    own = {f'backbone.{k}': v for k, v in backbone.state_dict().items()}
    i = args.index('model.backbone.init_cfg.checkpoint=checkpoints/my_backbone.pth')
    args[i] = f'model.backbone.init_cfg.checkpoint={tmp_path / "my_backbone.pth"}'
    torch.save({'state_dict': own}, tmp_path / 'my_backbone.pth')
    work = tmp_path / 'work'
    args[args.index('--work-dir') + 1] = str(work)
    assert args[:2] == ['python', 'tools/train.py']
    short = [
        'train_cfg.max_iters=2',
        'train_cfg.val_interval=2',
        'default_hooks.checkpoint.interval=2',
        'train_dataloader.batch_size=2',
        'optim_wrapper.optimizer.lr=0.0',
    ]
    run_tool('train.py', *args[2:], *short)
    saved = torch.load(work / 'iter_2.pth', weights_only=False)
    assert tuple(saved['meta']['dataset_meta']['classes']) == ('cat', 'dog', 'fox')
    assert saved['state_dict']['head.head.linear.weight'].shape[0] == 3
    params = [k for k, _ in backbone.named_parameters()]
    assert all(torch.equal(saved['state_dict'][f'backbone.{k}'], own[f'backbone.{k}']) for k in params)


def usage_config_snippets() -> list[str]:
    """The config files that docs/usage.md's "Your own data" shows (start from a COCO / ADE20K release)."""
    return re.findall(r'```python\n(.*?)```', usage_section('Your own data'), re.S)


@OWN_DATA_GROUP
@pytest.mark.parametrize('index,task', [(0, 'detection'), (1, 'segmentation')])
def test_own_data_from_the_authors_coco_ade20k_release_reinitialises_the_heads(index, task, shapes_root, tmp_path):
    """docs/usage.md's config that starts from the authors' M1.1 COCO / ADE20K release, as written but for
    the ``load_from`` and ``data_root`` values: a file in the release's layout (mmdet 2.28 / mmseg 0.30 names,
    80 / 150 classes), converted in memory, fits everything but the class-specific head layers, which start
    fresh (as tools/train.py loads ``load_from``); the dataset is the user's."""
    from test_checkpoint_integrity import _authors_release

    from repvit_mm.apis import build_runner, load_config, prepare_train_cfg
    from repvit_mm.models.checkpoints import allow_head_reinit

    _, make, classes = OWN_DATA[task]
    make(shapes_root, tmp_path / 'data')
    code = usage_config_snippets()[index]
    if task == 'detection':
        meta = {'CLASSES': tuple(f'class{i}' for i in range(80))}
        base = CONFIGS / 'detection' / 'mask-rcnn_repvit-m1.1_fpn_1x_coco.py'
        release, ours = _authors_release(tmp_path, base, 'repvit_m1_1_coco.pth', meta, arch='m1_1')
    else:
        meta = {'CLASSES': tuple(f'class{i}' for i in range(150)), 'PALETTE': [[0, 0, 0]] * 150}
        base = CONFIGS / 'segmentation' / 'fpn_repvit-m1.1_8xb4-40k_ade20k-512x512.py'
        release, ours = _authors_release(tmp_path, base, 'repvit_m1_1_ade20k.pth', meta, arch='m1_1')
    assert f"_base_ = ['../configs/{base.relative_to(CONFIGS)}']" in code
    assert f"load_from = 'https://github.com/THU-MIG/RepViT/releases/download/v1.0/{release.name}'" in code
    code = code.replace("'../configs/", repr(str(CONFIGS) + '/')[:-1])
    code = re.sub(r'^load_from = .*$', f'load_from = {str(release)!r}', code, flags=re.M)
    code, count = re.subn(r"^data_root = '[^']*'$", f'data_root = {str(tmp_path / "data") + "/"!r}', code, flags=re.M)
    assert count == 1
    (tmp_path / 'my_config.py').write_text(code)
    cfg = prepare_train_cfg(load_config(str(tmp_path / 'my_config.py'), {}), work_dir=str(tmp_path / 'work'))
    runner = build_runner(cfg)
    assert tuple(runner.train_dataloader.dataset.metainfo['classes']) == classes
    with allow_head_reinit():  # as repvit_mm.apis.train (tools/train.py) loads load_from
        runner.load_checkpoint(cfg.load_from)
    state = runner.model.state_dict()
    reinitialised = sorted(k for k in state if k in ours and state[k].shape != ours[k].shape)
    assert (
        reinitialised
        == {
            'detection': [
                'roi_head.bbox_head.fc_cls.bias',
                'roi_head.bbox_head.fc_cls.weight',
                'roi_head.bbox_head.fc_reg.bias',
                'roi_head.bbox_head.fc_reg.weight',
                'roi_head.mask_head.conv_logits.bias',
                'roi_head.mask_head.conv_logits.weight',
            ],
            'segmentation': ['decode_head.conv_seg.bias', 'decode_head.conv_seg.weight'],
        }[task]
    )
    taken = [k for k in state if k not in reinitialised and not k.endswith('num_batches_tracked')]
    assert all(torch.equal(state[k], ours[k]) for k in taken)


# ------------------------------------------------------------------------------------- README snippets
def readme_python_snippets() -> list[str]:
    section = README.split('\n## Python API\n', 1)[1].split('\n## ', 1)[0]
    return re.findall(r'```python\n(.*?)```', section, re.S)


@pytest.mark.parametrize('index,task', [(0, 'classification'), (1, 'detection'), (2, 'segmentation')])
def test_readme_python_api_snippet_runs(
    index, task, checkpoints, images, release_m0_9, torch_home, tmp_path, monkeypatch, capsys
):
    """Each snippet of the README's "Python API" section, run as written; only the values of its
    ``config``, ``checkpoint`` and ``image`` lines are this test's files."""
    code = readme_python_snippets()[index]
    config = {'classification': CLS_CONFIG, 'detection': DET_CONFIG, 'segmentation': SEG_CONFIG}[task]
    for name, value in (('config', config), ('checkpoint', checkpoints[task]), ('image', images[task])):
        code, count = re.subn(rf"^{name} = '[^']*'$", f'{name} = {str(value)!r}', code, flags=re.M)
        assert count == 1, f'snippet {index}: no single "{name} = ..." line'
    monkeypatch.chdir(tmp_path)  # what the snippets write (work_dirs/...) goes here
    prefill_hub_cache(IMAGENET_URL, release_m0_9[0])
    exec(compile(code, f'README.md, Python API snippet {index + 1}', 'exec'), {'__name__': '__readme__'})
    printed = capsys.readouterr().out
    assert printed.strip()
    if task == 'classification':
        assert DISTILL_NAME in printed
    else:
        drawn = list((tmp_path / 'work_dirs').rglob(images[task].name))
        assert len(drawn) == 1, drawn


# ------------------------------------------------------------------------------------------------ mim
@pytest.fixture(scope='session')
def mim_install(tmp_path_factory) -> Path:
    """This tree installed as pip installs it from a wheel (package data included), into a folder of its
    own (dependencies come from the test environment)."""
    import subprocess
    import sys

    site = tmp_path_factory.mktemp('site')
    subprocess.run(
        [
            sys.executable,
            '-m',
            'pip',
            'install',
            '-q',
            '--no-deps',
            '--no-build-isolation',
            '--no-index',
            '--target',
            str(site),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    return site


@pytest.fixture(scope='session')
def mim_editable(tmp_path_factory) -> Path:
    """A virtual environment holding this tree as ``tools/install.sh`` installs it into ``.venv``: an editable
    install (``pip install -e``), then ``tools/link_for_mim.sh``; the rest of the stack is this environment's
    (through a ``.pth`` file). Returns its interpreter."""
    import subprocess
    import sys
    import sysconfig

    venv = tmp_path_factory.mktemp('editable_venv')
    subprocess.run([sys._base_executable, '-m', 'venv', '--without-pip', str(venv)], check=True)
    python = venv / 'bin' / 'python'
    purelib = 'import sysconfig; print(sysconfig.get_path("purelib"))'
    site = Path(subprocess.check_output([str(python), '-c', purelib], text=True).strip())
    (site / 'stack.pth').write_text(sysconfig.get_path('purelib') + '\n')
    pip = [sys.executable, '-m', 'pip', '--python', str(python), 'install', '-q', '--no-deps']
    subprocess.run([*pip, '--no-build-isolation', '--no-index', '-e', str(ROOT)], check=True, capture_output=True)
    subprocess.run(['bash', str(ROOT / 'tools' / 'link_for_mim.sh'), str(python)], check=True)
    return python


def run_mim(install: Path, *args, cwd: Path, check: bool = True):
    """``mim ARGS`` in a fresh interpreter that sees the installed copy (not this source tree): ``install`` is
    the folder of a ``pip install --target`` or the interpreter of a virtual environment."""
    import os
    import subprocess
    import sys

    python = install if install.is_file() else Path(sys.executable)
    env = dict(os.environ, OMP_NUM_THREADS='1', PATH=os.pathsep.join([str(python.parent), os.environ.get('PATH', '')]))
    env.pop('PYTHONPATH', None)
    if not install.is_file():
        env['PYTHONPATH'] = str(install)
    proc = subprocess.run(
        [str(python), '-m', 'mim', *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f'mim {" ".join(map(str, args))} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}'
        )
    return proc


@MIM_GROUP
def test_package_installs_in_mims_layout(mim_install):
    mim_root = mim_install / 'repvit_mm' / '.mim'
    assert (mim_root / 'model-index.yml').is_file() and not (mim_root / 'model-index.yml').is_symlink()
    assert (mim_root / 'tools' / 'train.py').is_file() and (mim_root / 'tools' / 'test.py').is_file()
    assert (mim_root / 'configs' / 'classification' / 'metafile.yml').is_file()
    shipped = {p.relative_to(mim_root / 'configs') for p in (mim_root / 'configs').rglob('*.py')}
    assert shipped == {p.relative_to(CONFIGS) for p in CONFIGS.rglob('*.py')}
    # the source tree (and so an editable install) has the same layout through links
    assert (ROOT / 'repvit_mm' / '.mim' / 'configs' / 'classification' / 'metafile.yml').is_file()


@MIM_GROUP
@pytest.mark.slow
def test_mim_finds_the_editable_install(mim_editable, tmp_path):
    """After the README's set-up (tools/install.sh: an editable install), mim finds the model index and the
    configs through site-packages, and imports still read the source tree."""
    import subprocess

    out = run_mim(mim_editable, 'search', 'repvit_mm', '--config', DISTILL_NAME, cwd=tmp_path).stdout
    assert re.search(r'^imagenet-1k/top_1_accuracy\s+78.7', out, re.M), out
    where = 'import repvit_mm, os; print(os.path.realpath(repvit_mm.__file__))'
    found = subprocess.check_output([str(mim_editable), '-c', where], cwd=tmp_path, text=True).strip()
    assert found == str(ROOT / 'repvit_mm' / '__init__.py')


@MIM_GROUP
@pytest.mark.slow
@pytest.mark.parametrize('install', ['mim_install', 'mim_editable'])
def test_mim_search_download_train_test(install, request, shapes_root, release_m0_9, tmp_path):
    mim_install = request.getfixturevalue(install)
    out = run_mim(mim_install, 'search', 'repvit_mm', cwd=tmp_path).stdout
    for name in (DISTILL_NAME, 'mask-rcnn_repvit-m1.1_fpn_1x_coco', 'fpn_repvit-m2.3_8xb4-40k_ade20k-512x512'):
        assert name in out
    one = run_mim(mim_install, 'search', 'repvit_mm', '--config', DISTILL_NAME, cwd=tmp_path).stdout
    for key, value in (
        ('imagenet-1k/top_1_accuracy', '78.7'),
        ('epochs', '300'),
        ('batch_size', '2048'),
        ('parameters', '5100000'),
        ('flops', '800000000'),
        ('training_data', 'imagenet-1k'),
        ('weight', 'https://github.com/THU-MIG/RepViT/'),
    ):
        assert re.search(rf'^{re.escape(key)}\s+{re.escape(value)}', one, re.M), (key, one)

    # download: the file is already at the destination (no network here), the config is written next to it
    dest = tmp_path / 'checkpoints'
    dest.mkdir()
    (dest / 'repvit_m0_9_distill_300e.pth').write_bytes(release_m0_9[0].read_bytes())
    run_mim(mim_install, 'download', 'repvit_mm', '--config', DISTILL_NAME, '--dest', dest, cwd=tmp_path)
    assert (dest / f'{DISTILL_NAME}.py').is_file()

    # train and test through mim: the installed tools/train.py and tools/test.py, our command-line options
    options = [f'{k}={v}' for k, v in shapes_options('classification', shapes_root).items()]
    work = tmp_path / 'work'
    run_mim(
        mim_install,
        'train',
        'repvit_mm',
        'repvit-m0.9_shapes-64px.py',
        '--work-dir',
        work,
        '--cfg-options',
        *options,
        'train_cfg.max_iters=2',
        'train_cfg.val_interval=2',
        'default_hooks.checkpoint.interval=2',
        'train_dataloader.batch_size=4',
        cwd=tmp_path,
    )
    assert (work / 'iter_2.pth').is_file()
    proc = run_mim(
        mim_install,
        'test',
        'repvit_mm',
        CLS_CONFIG,
        '--checkpoint',
        work / 'iter_2.pth',
        '--work-dir',
        work,
        '--cfg-options',
        *options,
        cwd=tmp_path,
    )
    assert 'metrics: {"accuracy/top1"' in proc.stdout


@pytest.mark.slow
def test_demo_device_option(checkpoints, images, tmp_path):
    from PIL import Image

    from repvit_mm.deploy import render_prediction

    out = tmp_path / 'cls.png'
    info = render_prediction(images['classification'], CLS_CONFIG, checkpoints['classification'], out, device='cpu')
    assert Image.open(out).size[::-1] == info['size']
    if not torch.cuda.is_available():
        proc = run_tool(
            'demo.py',
            images['classification'],
            CLS_CONFIG,
            checkpoints['classification'],
            '--out',
            tmp_path / 'gpu.png',
            '--device',
            'cuda',
            check=False,
        )
        assert_one_line_error(proc, '--device cuda', 'no CUDA GPU')
        assert not (tmp_path / 'gpu.png').exists()
    proc = run_tool(
        'demo.py',
        images['classification'],
        CLS_CONFIG,
        checkpoints['classification'],
        '--out',
        tmp_path / 'x.png',
        '--device',
        'tpu',
        check=False,
    )
    assert_one_line_error(proc, '--device')
