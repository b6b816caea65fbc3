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


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message, or its type's name when it has none: for one-line errors."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# The drivers' errors for a storage that cannot be reached or answer: a lost connection, a
# server gone, a timeout, a locked SQLite file. Errors about the data (too long, a duplicate key)
# are not among them: they come from a bug or from the input, and a retry would meet them again.
_DRIVER_MODULES = ("sqlalchemy.exc", "redis.exceptions", "pymysql.err", "psycopg2", "psycopg")
_UNREACHABLE = frozenset(
    ("OperationalError", "InterfaceError", "DisconnectionError", "ConnectionError", "TimeoutError")
)
# pymysql calls every server error it has no class for an OperationalError (a collation clash
# too): only the client's connection errors (2000-2999) and these server states count.
_MYSQL_UNREACHABLE = {1040, 1053, 1205, 1927}  # too many connections, shutdown, lock wait, killed
# Redis answers these states of the server (a failover, a full disk or memory, a reload) as errors:
# redis-py's classes for them, and the generic error's text for the rest.
_REDIS_CLASSES = {
    "ReadOnlyError",
    "OutOfMemoryError",
    "MasterDownError",
    "BusyLoadingError",
    "TryAgainError",
    "ClusterDownError",
}
_REDIS_UNREACHABLE = ("MISCONF", "BUSY", "CLUSTERDOWN")


def storage_failure(exc: BaseException) -> BaseException | None:
    """The error behind ``exc`` that says the storage could not be reached, or ``None``.

    A trial whose storage went away cannot be closed: it stays RUNNING for the next run to
    resume, so its checkpoint must be kept, and the command says so in one line. Optuna may
    raise something else while handling the storage's error (its own cleanup reads a state
    it never got) and wraps a driver's error in a generic one, so the whole chain is searched
    for a driver's connection error, or an ``OSError`` from Optuna's storage code (a journal
    file whose disk or share went away).
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _unreachable(current):
            return current
        if isinstance(current, OSError) and _raised_in_optuna_storage(current):
            return current
        # SQLAlchemy keeps the driver's error as ``orig``: judge by that one, which has the code
        current = getattr(current, "orig", None) or current.__cause__ or current.__context__
    return None


def _unreachable(exc: BaseException) -> bool:
    kind = type(exc)
    if not kind.__module__.startswith(_DRIVER_MODULES) or hasattr(exc, "orig"):
        return False
    names = {base.__name__ for base in kind.__mro__}
    if kind.__module__.startswith("pymysql"):
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
        return (
            bool(names & _UNREACHABLE)
            and code is not None
            and (2000 <= code < 3000 or code in _MYSQL_UNREACHABLE)
        )
    if kind.__module__.startswith("redis") and "ResponseError" in names:
        return bool(names & _REDIS_CLASSES) or str(exc).startswith(_REDIS_UNREACHABLE)
    return bool(names & _UNREACHABLE)


def _raised_in_optuna_storage(exc: BaseException) -> bool:
    tb = exc.__traceback__
    while tb is not None:
        if str(tb.tb_frame.f_globals.get("__name__", "")).startswith("optuna.storages"):
            return True
        tb = tb.tb_next
    return False
