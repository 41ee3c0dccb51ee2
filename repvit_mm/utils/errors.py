"""Errors caused by what the user gave (paths, configs, options); the tools print them as one line."""


class UserInputError(ValueError):
    """Bad input from the user: the message names the file, key or shape at fault."""
