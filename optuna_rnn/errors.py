"""Exceptions that the command line turns into exit code 2 and a one-line message."""

from __future__ import annotations


class UsageError(ValueError):
    """Bad usage or bad input: a wrong option, an impossible range, unreadable data.

    The message is one line that names the problem (file, column, option) so
    that the command line can print it as is, without a traceback.
    """


class ConfigMismatchError(UsageError):
    """A ``run`` asked for a configuration that differs from the one the study recorded."""


class MissingModelError(LookupError):
    """A trained model that should be in the artifact store is not: never saved, or deleted since.

    A :class:`LookupError`, so that code catching that keeps working; the command line
    catches this class only, so that an internal ``KeyError`` still shows its traceback.
    """
