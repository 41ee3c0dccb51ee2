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


@pytest.fixture(scope='module')
def tiny_shapes(tmp_path_factory) -> Path:
    """The smallest Shapes dataset with every format and split (a few images each)."""
    from repvit_mm.datasets.shapes import make_shapes

    root = tmp_path_factory.mktemp('tiny_shapes')
    make_shapes(
        root, num_train={'imagenet': 2, 'coco': 2, 'ade20k': 2}, num_val={'imagenet': 1, 'coco': 1, 'ade20k': 1}
    )
    return root
