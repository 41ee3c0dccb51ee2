"""Shared fixtures: the Shapes data in every format; scopes a test created are forgotten after it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import THREADS

# Before anything imports torch: each pytest-xdist worker takes its share of the cores. Set in the workers
# only: they inherit the controller's environment, where THREADS is the whole machine's count.
if 'PYTEST_XDIST_WORKER' in os.environ:
    os.environ.setdefault('OMP_NUM_THREADS', str(THREADS))


@pytest.fixture(scope='session')
def shapes_root(tmp_path_factory) -> Path:
    """A small Shapes dataset in the ImageNet, COCO and ADE20K layouts (made once per test session)."""
    from repvit_mm.datasets.shapes import make_shapes

    root = tmp_path_factory.mktemp('shapes')
    make_shapes(root, seed=0)
    return root


def _forget_new_scopes():
    """Yield, then forget the DefaultScopes created meanwhile (mmengine keeps the newest DefaultScope as the
    current one, so a scope left behind would decide registry lookups of the tests after it)."""
    from mmengine.registry import DefaultScope

    before = set(DefaultScope._instance_dict)
    yield
    for name in set(DefaultScope._instance_dict) - before:
        DefaultScope._instance_dict.pop(name)


@pytest.fixture(autouse=True)
def _restore_default_scope():
    """Scopes a test created."""
    yield from _forget_new_scopes()


@pytest.fixture(autouse=True, scope='module')
def _restore_default_scope_of_module():
    """Scopes a test module's module-scoped fixtures created (they run before the per-test fixture)."""
    yield from _forget_new_scopes()


def _shared_fixtures(item: pytest.Item) -> set[str]:
    """The module- and session-scoped fixtures a test uses that a test module defines (trained models,
    written files): the expensive ones. conftest's own (the Shapes data, scope bookkeeping) are cheap."""
    info = getattr(item, '_fixtureinfo', None)  # test functions have one; other collected items do not
    if info is None:
        return set()
    return {
        f'{defs[-1].baseid}::{name}'
        for name, defs in info.name2fixturedefs.items()
        if defs[-1].scope in ('module', 'package', 'session') and defs[-1].baseid.endswith('.py')
    }


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under ``pytest -n N --dist loadgroup`` (``make test``): tests that share an expensive fixture, directly
    or through other tests, form one group that runs on one worker, so the fixture is made once; every other
    test goes to whichever worker is free."""
    parent: dict[str, str] = {}

    def root(key: str) -> str:
        while parent.setdefault(key, key) != key:
            key = parent[key]
        return key

    shared = {item: sorted(_shared_fixtures(item)) for item in items}
    for names in shared.values():
        for name in names[1:]:
            parent[root(name)] = root(names[0])
    for item, names in shared.items():
        if names and not item.get_closest_marker('xdist_group'):
            item.add_marker(pytest.mark.xdist_group(root(names[0]).split('::')[-1]))
