"""Telling whether the process that ran a trial is gone (a local worker killed with SIGKILL)."""

from __future__ import annotations

import subprocess
import sys
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
def test_a_worker_of_an_earlier_boot_of_this_machine_is_gone() -> None:
    host, _, namespace, pid, started = this_process().split("|")
    machine = Path("/etc/machine-id").read_text().strip() if Path("/etc/machine-id").exists() else ""
    if not machine:
        pytest.skip("this machine has no machine id (/etc/machine-id)")
    earlier = "00000000-0000-0000-0000-000000000000"
    # a reboot ends every process, whatever the container or process id
    assert is_gone("|".join((host, f"{earlier}@{machine}", "pid:[1]", pid, started))) is True
    assert is_gone("|".join((host, f"{earlier}@another-machine", namespace, pid, started))) is None
    assert is_gone("|".join(("elsewhere", f"{earlier}@{machine}", namespace, pid, started))) is None
