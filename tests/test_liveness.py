"""Telling whether the process that ran a trial is gone (a local worker killed with SIGKILL)."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from optuna_rnn.liveness import is_gone, process_identity, this_process

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def test_a_running_process_is_not_gone() -> None:
    assert is_gone(this_process()) is False


def test_a_process_that_exited_is_gone() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        identity = process_identity(child.pid)
        assert is_gone(identity) is False
    finally:
        child.kill()
        child.wait()
    assert is_gone(identity) is True


@linux_only
def test_a_reused_process_id_is_not_taken_for_the_worker_that_had_it() -> None:
    host, boot, namespace, pid, started = this_process().split("|")
    assert started, "Linux gives the start time"
    earlier = "|".join((host, boot, namespace, pid, str(int(started) - 1)))  # same id, older process
    assert is_gone(earlier) is True


@linux_only
def test_another_machine_boot_or_container_cannot_be_judged() -> None:
    host, boot, namespace, pid, started = this_process().split("|")
    for other in (
        ("elsewhere", boot, namespace, pid, started),
        (host, "another-boot", namespace, pid, started),
        (host, boot, "pid:[1]", "999999", started),  # a container with the same host name
    ):
        assert is_gone("|".join(other)) is None, other
    assert is_gone("host:123") is None  # not an identity at all


@linux_only
def test_a_trial_started_before_this_machine_last_booted_has_lost_its_worker() -> None:
    host, boot, namespace, pid, started = this_process().split("|")
    machine = Path("/etc/machine-id").read_text().strip() if Path("/etc/machine-id").exists() else ""
    if not machine:
        pytest.skip("this machine has no machine id (/etc/machine-id)")
    assert machine not in this_process()  # machine-id(5): only a keyed hash of it leaves the machine
    keyed = boot.partition("@")[2]
    earlier = "|".join((host, f"00000000-0000-0000-0000-000000000000@{keyed}", "pid:[1]", pid, started))
    # a boot ends every process, whatever the container or process id
    assert is_gone(earlier, trial_started=datetime(2000, 1, 1)) is True
    # a twin (a cloned image: same host name and machine id) runs trials started since this boot
    assert is_gone(earlier, trial_started=datetime.now()) is None
    assert is_gone(earlier) is None
    twin = earlier.replace(keyed, "another-machine")
    assert is_gone(twin, trial_started=datetime(2000, 1, 1)) is None


@linux_only
def test_a_dead_worker_recorded_by_the_previous_version_is_still_found() -> None:
    # identities written before the machine id was added hold the bare boot id
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        host, boot, namespace, pid, started = process_identity(child.pid).split("|")
        identity = "|".join((host, boot.partition("@")[0], namespace, pid, started))
        assert is_gone(identity) is False
    finally:
        child.kill()
        child.wait()
    assert is_gone(identity) is True
