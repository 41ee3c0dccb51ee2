from .errors import DataWarning, UserInputError
from .safe_checkpoint import (
    MMENGINE_CHECKPOINT_GLOBALS,
    UnsafeCheckpointError,
    safe_torch_load,
)

__all__ = [
    'DataWarning',
    'UserInputError',
    'MMENGINE_CHECKPOINT_GLOBALS',
    'UnsafeCheckpointError',
    'safe_torch_load',
]
