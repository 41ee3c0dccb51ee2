"""The documentation and the metafile tell the truth: what they name exists, their links resolve, and every
config is listed and builds. The documentation is README.md, docs/*.md and configs/*/README.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from helpers import CONFIGS, ROOT

README = (ROOT / 'README.md').read_text()
PAGES = [ROOT / 'README.md', *sorted((ROOT / 'docs').glob('*.md')), *sorted(CONFIGS.glob('*/README.md'))]
DOCS = '\n'.join(page.read_text() for page in PAGES)
# model-index.yml imports one metafile per task
METAFILE = {
    'Models': [
        model
        for path in yaml.safe_load((ROOT / 'model-index.yml').read_text())['Import']
        for model in yaml.safe_load((ROOT / path).read_text())['Models']
    ]
}
ALL_CONFIGS = sorted(p for p in CONFIGS.rglob('*.py') if '_base_' not in p.parts)


def test_every_path_named_in_the_documentation_exists():
    named = set(re.findall(r'\b((?:configs|tools|tests|repvit_mm)/[\w./-]+\.(?:py|sh|yml))', DOCS))
    assert len(named) > 20
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert not missing, missing


def test_demo_checkpoints_named_in_the_readme_and_configs_are_the_ones_the_demo_writes():
    """``work_dirs/demo/<task>/iter_N.pth`` (README examples, the dense configs' backbone init): N is the last
    iteration of that task's config, the checkpoint ``make demo`` keeps."""
    from mmengine.config import Config

    demo = (ROOT / 'tools' / 'run_demo.py').read_text()
    configs = dict(re.findall(r"CONFIGS / '(\w+)' / '([^']+)'", demo))  # its Task(name, CONFIGS / name / file)
    assert sorted(configs) == ['classification', 'detection', 'segmentation'], configs
    last = {task: Config.fromfile(str(CONFIGS / task / name)).train_cfg.max_iters for task, name in configs.items()}
    texts = [DOCS, *(p.read_text() for p in ALL_CONFIGS)]
    named = {(t, int(n)) for text in texts for t, n in re.findall(r'work_dirs/demo/(\w+)/iter_(\d+)\.pth', text)}
    assert {t for t, _ in named} == set(last)
    wrong = sorted(f'{t}/iter_{n}.pth (the demo writes iter_{last[t]}.pth)' for t, n in named if n != last[t])
    assert not wrong, wrong


def test_every_tool_is_documented():
    tools = sorted(
        str(p.relative_to(ROOT / 'tools')) for p in (ROOT / 'tools').rglob('*') if p.suffix in ('.py', '.sh')
    )
    assert 'analysis_tools/browse_dataset.py' in tools
    undocumented = [t for t in tools if f'tools/{t}' not in DOCS]
    assert not undocumented, undocumented


def test_readme_has_the_two_setup_commands_and_ci_runs_the_test_one():
    assert 'make demo' in README and 'make test' in README
    assert 'make test' in (ROOT / '.ci' / 'run').read_text()


def test_every_config_is_in_the_documentation_or_the_metafile():
    listed = {m['Config'] for m in METAFILE['Models']}
    unlisted = [
        str(p.relative_to(ROOT)) for p in ALL_CONFIGS if str(p.relative_to(ROOT)) not in listed and p.name not in DOCS
    ]
    assert not unlisted, unlisted
    assert all((ROOT / config).is_file() for config in listed)


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors of a Markdown page's headings: lower case, punctuation dropped, spaces to dashes."""
    headings = re.findall(r'^#+ (.+)$', page.read_text(), flags=re.M)
    return {re.sub(r'[^\w\- ]', '', h.strip().lower()).replace(' ', '-') for h in headings}


@pytest.mark.parametrize('page', PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_of_a_page_resolves(page: Path):
    """Relative links point at files that exist, and their #anchors at headings of the target page."""
    links = re.findall(r'\]\(([^)\s]+)\)', page.read_text())
    broken = []
    for link in links:
        if re.match(r'[a-z]+://', link):
            continue
        path, _, anchor = link.partition('#')
        target = (page.parent / path).resolve() if path else page
        if not target.exists() or (anchor and target.suffix == '.md' and anchor not in _anchors(target)):
            broken.append(link)
    assert not broken, broken


def test_readme_is_a_front_door():
    """Short, with the paper's citation and the license, and every other page reachable from it."""
    assert len(README.splitlines()) < 220
    assert '## Citation' in README and '@inproceedings{wang2024repvit' in README and '## License' in README
    unreachable = [str(p.relative_to(ROOT)) for p in PAGES[1:] if str(p.relative_to(ROOT)) not in README]
    assert not unreachable, unreachable


@pytest.mark.parametrize('config', ALL_CONFIGS, ids=lambda p: p.name)
def test_every_config_builds_its_model(config: Path):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    import repvit_mm  # noqa: F401

    cfg = Config.fromfile(str(config))
    assert cfg.default_hooks.checkpoint.type == 'AtomicCheckpointHook'  # crash-proof checkpoint saves
    scope = cfg.default_scope
    init_default_scope(scope)
    registry = {'mmpretrain': 'mmpretrain.registry', 'mmdet': 'mmdet.registry', 'mmseg': 'mmseg.registry'}[scope]
    models = __import__(registry, fromlist=['MODELS']).MODELS
    model_cfg = cfg.model
    if model_cfg.get('teacher') is not None:
        model_cfg.teacher.update(checkpoint=None, random_init=True)  # weights are a local download: architecture only
    model = models.build(model_cfg)
    assert sum(p.numel() for p in model.parameters()) > 1e6
