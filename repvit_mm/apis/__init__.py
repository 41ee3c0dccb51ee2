from .cli import run_cli
from ..utils.data_checks import check_datasets, register_data_check
from ..utils.config import check_cfg_options, load_config
from .runner import build_runner, prepare_test_cfg, prepare_train_cfg, test, train

__all__ = ['run_cli', 'check_datasets', 'register_data_check', 'check_cfg_options', 'load_config', 'build_runner', 'prepare_test_cfg',
           'prepare_train_cfg', 'test', 'train']
