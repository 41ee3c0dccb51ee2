"""Errors caused by what the user gave (paths, configs, options); the tools print them as one line."""


class UserInputError(ValueError):
    """Bad input from the user: the message names the file, key or shape at fault."""


class DataWarning(UserInputError):
    """Data the loaders would use after silently dropping part of it (e.g. invalid COCO boxes): the tools
    print the message as one ``warning:`` line, or stop with it as an ``error:`` under ``--strict-data``."""
