"""Errors caused by what the user gave (paths, configs, options); the tools print them as one line."""


class UserInputError(ValueError):
    """Bad input from the user: the message names the file, key or shape at fault."""


class DataWarning(UserInputError):
    """Data the loaders would use after silently dropping part of it (e.g. invalid COCO boxes): the tools
    print the message as one ``warning:`` line, or stop with it as an ``error:`` under ``--strict-data``."""


def one_line(message: str) -> str:
    """The original message of an error re-raised from a DataLoader worker process, which carries the
    worker's whole traceback (``Caught ... in DataLoader worker process N.\nOriginal Traceback ...``)."""
    if 'Original Traceback' in message:
        last = message.strip().splitlines()[-1]  # "<module>.<ErrorClass>: <message>"
        message = last.split(': ', 1)[1] if ': ' in last else last
    return message
