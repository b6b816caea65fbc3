"""Exceptions that the command line turns into exit code 2 and a one-line message, and how to tell
that the storage, not the training, failed."""

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


# Where the storages' drivers keep their errors: connection lost, server gone, write refused.
_STORAGE_ERROR_MODULES = ("sqlalchemy.exc", "redis.exceptions", "pymysql.err", "psycopg2", "psycopg")


def storage_failure(exc: BaseException) -> BaseException | None:
    """The storage's own error behind ``exc``, or ``None`` when the training (or anything else) failed.

    A trial whose storage went away cannot be closed: it stays RUNNING for the next run to
    resume, so its checkpoint must be kept, and the command says so in one line. Optuna may
    raise something else while handling the storage's error (its own cleanup reads a state
    it never got), and wraps a driver's error in a generic one, so the whole chain is searched
    and the driver's error, which says what happened, is preferred.
    """
    import optuna

    found: BaseException | None = None
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if type(current).__module__.startswith(_STORAGE_ERROR_MODULES):
            return current
        if isinstance(current, optuna.exceptions.StorageInternalError):
            found = current
        current = current.__cause__ or current.__context__
    return found
