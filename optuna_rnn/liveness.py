"""Which process ran a trial, and whether it still exists: finding a dead local worker's trial.

A worker records :func:`this_process` on each trial it starts. Another process on the same
machine can later tell from it whether that worker is gone (:func:`is_gone`), so that a
killed worker's trial is retried even on storages without a heartbeat.

A process id alone is not enough: ids are reused, and containers that share a host name
(``--network host``) each count their own. So the identity also holds, on Linux, the boot id
(with the machine id), the pid namespace and the process's start time; where any of these differ
from the asking process's view, it cannot tell, and says so (``None``) rather than guess. One
difference it can judge: the same machine (host name and machine id) booted since, which ended
every process of the earlier boot.

Example::

    from optuna_rnn.liveness import is_gone, this_process

    assert is_gone(this_process()) is False
"""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path

_SEP = "|"


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def _start_time(pid: int) -> str:
    """Clock ticks after boot at which ``pid`` started (Linux), or ``""``."""
    stat = _read(f"/proc/{pid}/stat")
    # the command name (field 2) may hold spaces and parentheses: count fields after its ')'
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else ""


@functools.cache
def _namespace() -> tuple[str, str]:
    """This boot of this machine (``boot id@machine id``) and this process's pid namespace (Linux),
    or empty strings."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    boot = _read("/proc/sys/kernel/random/boot_id")
    machine = _read("/etc/machine-id") or _read("/var/lib/dbus/machine-id")
    return (f"{boot}@{machine}" if boot and machine else boot), namespace


def _booted_since(boot: str, my_boot: str) -> bool:
    """Whether ``boot`` is an earlier boot of this machine: same machine id, another boot id."""
    boot_id, _, machine = boot.partition("@")
    my_boot_id, _, my_machine = my_boot.partition("@")
    return bool(boot_id and my_boot_id and machine) and machine == my_machine and boot_id != my_boot_id


def process_identity(pid: int) -> str:
    """The identity of process ``pid`` of this namespace: host, boot id, pid namespace, pid, start time."""
    boot, namespace = _namespace()
    return _SEP.join((socket.gethostname(), boot, namespace, str(pid), _start_time(pid)))


def this_process() -> str:
    """The identity of the calling process (see :func:`process_identity`)."""
    return process_identity(os.getpid())


def is_gone(identity: str) -> bool | None:
    """Whether the process named by ``identity`` no longer exists; ``None``: cannot tell from here."""
    parts = identity.split(_SEP)
    if len(parts) != 5 or not parts[3].isdigit() or int(parts[3]) < 1:
        return None
    host, boot, namespace, pid, started = parts
    my_boot, my_namespace = _namespace()
    if host != socket.gethostname():
        return None  # another machine: its process ids are not ours
    if boot != my_boot:
        return True if _booted_since(boot, my_boot) else None
    if namespace != my_namespace:
        return None  # another container: its process ids are not ours
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # another user's process: it exists
    return bool(started) and _start_time(int(pid)) != started  # the id now names a newer process
