"""Train and test any repvit-mm config with mmengine's Runner; the Shapes data; dataset browsing, log curves,
publishing."""

from ..datasets.shapes import make_shapes
from ..utils.config import load_config
from .convert import convert_checkpoint_file
from .runner import build_runner, prepare_test_cfg, prepare_train_cfg, test, train

__all__ = [
    'load_config',
    'convert_checkpoint_file',
    'build_runner',
    'make_shapes',
    'prepare_test_cfg',
    'prepare_train_cfg',
    'test',
    'train',
]
