"""What every ``tools/*.py`` script shares: one clear error line instead of a traceback for bad input."""
from __future__ import annotations

import os
import sys
from typing import Callable

from ..utils.errors import UserInputError
from ..utils.safe_checkpoint import UnsafeCheckpointError

#: Errors whose message already says what is wrong with the user's input.
USER_ERRORS = (UserInputError, UnsafeCheckpointError, FileNotFoundError, FileExistsError, PermissionError,
               IsADirectoryError, NotADirectoryError)


def run_cli(main: Callable[[], object]) -> None:
    """Run ``main``; print user errors as ``error: ...`` (exit 2). ``REPVIT_MM_DEBUG=1`` shows tracebacks."""
    try:
        main()
    except USER_ERRORS as err:
        if os.environ.get('REPVIT_MM_DEBUG'):
            raise
        print(f'error: {_own_message(err)}', file=sys.stderr)
        sys.exit(2)


def _own_message(err: BaseException) -> str:
    """The error's message; for one re-raised from a DataLoader worker (which carries the worker's whole
    traceback in its message), the original error's message only."""
    message = str(err)
    if 'Original Traceback' in message:
        last = message.rstrip().splitlines()[-1]
        message = last.split(': ', 1)[1] if ': ' in last else last
    return message
