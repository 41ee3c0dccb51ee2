"""Errors caused by what the user gave (paths, configs, options); the tools print them as one line."""

from __future__ import annotations

__all__ = ['DataWarning', 'UserInputError', 'original_message']


class UserInputError(ValueError):
    """Bad input from the user: the message names the file, key or shape at fault."""


class DataWarning(UserInputError):
    """Data the loaders would use after silently dropping part of it (e.g. invalid COCO boxes): the tools
    print the message as one ``warning:`` line, or stop with it as an ``error:`` under ``--strict-data``."""


def original_message(err: BaseException | str) -> str:
    """The message of an error, without the traceback a DataLoader worker wraps around it.

    A worker process re-raises an exception in the main process as ``type(err)('Caught ... in DataLoader
    worker process N.\\nOriginal Traceback ...\\n<module>.<Class>: <message>')``; the original one-line
    message is the last line's text after the class name.
    """
    message = str(err)
    if 'Original Traceback' not in message:
        return message
    last = message.rstrip().splitlines()[-1]
    return last.split(': ', 1)[1] if ': ' in last else last
