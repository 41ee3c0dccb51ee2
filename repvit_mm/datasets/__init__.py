"""Datasets of repvit-mm: the Shapes generator (numpy and PIL; importing it through ``repvit_mm`` still
registers the models, so it costs what ``import repvit_mm`` costs)."""

from .shapes import (
    ADE20K_UNLABELED,
    DEFAULT_SPECS,
    SHAPES_CLASSES,
    SHAPES_FORMATS,
    SHAPES_METAINFO,
    SHAPES_PALETTE,
    SHAPES_SEG_CLASSES,
    SHAPES_SEG_PALETTE,
    FormatSpec,
    make_shapes,
)

__all__ = [
    'ADE20K_UNLABELED',
    'DEFAULT_SPECS',
    'SHAPES_CLASSES',
    'SHAPES_FORMATS',
    'SHAPES_METAINFO',
    'SHAPES_PALETTE',
    'SHAPES_SEG_CLASSES',
    'SHAPES_SEG_PALETTE',
    'FormatSpec',
    'make_shapes',
]
