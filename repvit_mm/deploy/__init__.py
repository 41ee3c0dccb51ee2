"""Deployment and measurement: fused checkpoints, ONNX and Core ML export, benchmarks, FLOPs, demo pictures.

The ``tools/`` scripts (``fuse.py``, ``export_onnx.py``, ``export_coreml.py``, ``benchmark.py``,
``get_flops.py``, ``demo.py``) are thin command lines over these functions. Importing this package costs
no more than ``import repvit_mm`` (torch, mmengine, mmpretrain): onnx, onnxruntime, coremltools, timm and
the frameworks' inferencers are imported by the functions that need them.
"""

from .benchmark import benchmark
from .export_coreml import export_coreml
from .export_onnx import export_onnx
from .flops import model_complexity
from .fuse import fuse_checkpoint
from .model import LoadedModel, load_model, tensor_model
from .render import render_prediction

__all__ = [
    'benchmark',
    'export_coreml',
    'export_onnx',
    'model_complexity',
    'fuse_checkpoint',
    'LoadedModel',
    'load_model',
    'tensor_model',
    'render_prediction',
]
