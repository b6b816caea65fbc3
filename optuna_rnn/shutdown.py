"""Graceful stop on SIGINT and SIGTERM: close the running trial as FAIL, then exit 0.

Raising :class:`KeyboardInterrupt` at an arbitrary point is unsafe while a
process talks to its storage: a read or write cut in half can leave a
connection inside a transaction that holds a database lock, and the process
(and every other worker) then waits on it instead of closing the trial. So
within :func:`deferred` (the whole optimisation loop) a signal only records a
stop request, and code raises it at safe points (:func:`check`). The trainer
marks its epochs' computation :func:`interruptible`: there, where no storage
call is in flight, a signal raises at once, so a worker stops within moments
even in the middle of a long epoch. Outside both, a signal raises at once as
usual.

Further signals while stopping are ignored, so a Ctrl-C that reaches a worker
twice (from the terminal and from its parent) cannot interrupt the clean-up.
Only the main thread's state counts: Python delivers signals there.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _State:
    requested = False
    deferring = False


_state = _State()


@contextmanager
def installed() -> Iterator[None]:
    """Handle SIGINT and SIGTERM in this process within the block (enter from the main thread).

    The previous handlers come back afterwards, and a stop asked for inside is forgotten:
    a notebook that ran a command goes on as before.
    """
    _state.requested = False
    _state.deferring = False
    previous = {signum: signal.signal(signum, _handle) for signum in SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _state.requested = False


def _handle(signum: int, frame: FrameType | None) -> None:
    if _state.requested:
        return  # already stopping
    _state.requested = True
    if not _state.deferring:
        raise KeyboardInterrupt


def stop_requested() -> bool:
    """Whether SIGINT or SIGTERM arrived since :func:`installed` was entered."""
    return _state.requested


def check() -> None:
    """Raise :class:`KeyboardInterrupt` if a stop was requested (call at safe points)."""
    if _state.requested:
        raise KeyboardInterrupt


@contextmanager
def _deferring(value: bool) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous, _state.deferring = _state.deferring, value
    try:
        yield
    finally:
        _state.deferring = previous


@contextmanager
def deferred() -> Iterator[None]:
    """Within this block a signal only requests a stop; see :func:`check`."""
    with _deferring(True):
        yield


@contextmanager
def interruptible() -> Iterator[None]:
    """Within this block (pure computation, no storage call) a signal raises at once.

    A stop requested before the block raises on entry.
    """
    with _deferring(False):
        if threading.current_thread() is threading.main_thread():
            check()
        yield
