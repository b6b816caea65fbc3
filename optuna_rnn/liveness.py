"""Which process ran a trial, and whether it still exists: finding a dead local worker's trial.

A worker records :func:`this_process` on each trial it starts. Another process on the same
machine can later tell from it whether that worker is gone (:func:`is_gone`), so that a
killed worker's trial is retried even on storages without a heartbeat.

A process id alone is not enough: ids are reused, and containers that share a host name
(``--network host``) each count their own. So the identity also holds, on Linux, the boot id
(with a hash of the machine id: ``machine-id(5)`` asks that the id itself stay private), the pid
namespace and the process's start time; where any of these differ from the asking process's view,
it cannot tell, and says so (``None``) rather than guess. One difference it can judge: a trial
started before this machine (same host name and machine id) last booted, since a boot ends every
process. Twins that share both, such as cloned images, still run trials started after the boot.

Example::

    from optuna_rnn.liveness import is_gone, this_process

    assert is_gone(this_process()) is False
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import socket
from datetime import datetime
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
    if not (boot and machine):
        return boot, namespace
    keyed = hmac.new(machine.encode(), b"optuna-rnn worker identity", hashlib.sha256).hexdigest()[:16]
    return f"{boot}@{keyed}", namespace


@functools.cache
def _booted_at() -> datetime | None:
    """When this machine last booted, in local time as Optuna records a trial's start (Linux)."""
    for line in _read("/proc/stat").splitlines():
        if line.startswith("btime "):
            return datetime.fromtimestamp(int(line.split()[1]))
    return None


def _started_before_this_boot(boot: str, my_boot: str, started: datetime | None) -> bool:
    """Whether ``boot`` is an earlier boot of this machine (same machine, another boot id) and the
    trial ``started`` before this one began."""
    boot_id, _, machine = boot.partition("@")
    my_boot_id, _, my_machine = my_boot.partition("@")
    booted = _booted_at()
    if started is None or booted is None or not (boot_id and my_boot_id and machine):
        return False
    return machine == my_machine and boot_id != my_boot_id and started < booted


def process_identity(pid: int) -> str:
    """The identity of process ``pid`` of this namespace: host, boot id, pid namespace, pid, start time."""
    boot, namespace = _namespace()
    return _SEP.join((socket.gethostname(), boot, namespace, str(pid), _start_time(pid)))


def this_process() -> str:
    """The identity of the calling process (see :func:`process_identity`)."""
    return process_identity(os.getpid())


def pid_of(identity: str) -> str:
    """The process id that ``identity`` names, or ``?`` when it is not an identity."""
    parts = identity.split(_SEP)
    return parts[3] if len(parts) == 5 else "?"


def is_gone(identity: str, *, trial_started: datetime | None = None) -> bool | None:
    """Whether the process named by ``identity`` no longer exists; ``None``: cannot tell from here.

    ``trial_started`` (the trial's ``datetime_start``) lets it judge a worker of an earlier boot.
    """
    parts = identity.split(_SEP)
    if len(parts) != 5 or not parts[3].isdigit() or int(parts[3]) < 1:
        return None
    host, boot, namespace, pid, started = parts
    my_boot, my_namespace = _namespace()
    if host != socket.gethostname():
        return None  # another machine: its process ids are not ours
    if "@" not in boot:  # recorded by a version that kept the boot id alone
        my_boot = my_boot.partition("@")[0]
    if boot != my_boot:
        return True if _started_before_this_boot(boot, my_boot, trial_started) else None
    if namespace != my_namespace:
        return None  # another container: its process ids are not ours
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # another user's process: it exists
    return bool(started) and _start_time(int(pid)) != started  # the id now names a newer process
