"""Datasets of repvit-mm. Importing this package is cheap: numpy and PIL only, no torch."""
from .shapes import (ADE20K_UNLABELED, DEFAULT_SPECS, SHAPES_CLASSES, SHAPES_FORMATS,
                     SHAPES_METAINFO, SHAPES_PALETTE, SHAPES_SEG_CLASSES, SHAPES_SEG_PALETTE,
                     FormatSpec, make_shapes)

__all__ = [
    'ADE20K_UNLABELED', 'DEFAULT_SPECS', 'SHAPES_CLASSES', 'SHAPES_FORMATS', 'SHAPES_METAINFO',
    'SHAPES_PALETTE', 'SHAPES_SEG_CLASSES', 'SHAPES_SEG_PALETTE', 'FormatSpec', 'make_shapes',
]
