"""Several workers on one study, against the real PostgreSQL, MySQL and Redis services.

Each test uses a fresh study name and deletes its study afterwards. The
heartbeat runs every second with a 4 s grace period, so that a dead worker's
trial is retried within seconds.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState

from optuna_rnn import study as study_module
from optuna_rnn.callbacks import load_checkpoint
from optuna_rnn.config import DatasetSpec
from optuna_rnn.errors import UsageError
from optuna_rnn.liveness import process_identity
from optuna_rnn.objective import CURVE_KEYS, MAX_CURVE_POINTS, curve_attr
from optuna_rnn.recovery import (
    CHECKPOINT_ATTR,
    INTERRUPTED,
    RESUMED_ATTR,
    WORKER_ID_ATTR,
    checkpoints_dir,
)
from optuna_rnn.study import open_storage
from optuna_rnn.workers import available_cores
from tests.conftest import cli_command, cli_env, require_service

pytestmark = [pytest.mark.services, pytest.mark.slow]

POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
MYSQL = "mysql+pymysql://root@127.0.0.1:3306/test"
REDIS = "redis://127.0.0.1:6379/0"
HEARTBEAT = {
    "OPTUNA_RNN_HEARTBEAT_INTERVAL": "1",
    "OPTUNA_RNN_HEARTBEAT_GRACE": "4",
    "OPTUNA_RNN_CHECKPOINT_SECONDS": "0",  # a checkpoint after every epoch
}
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# Full-length trials (no pruning, no early stopping) that are long enough to interrupt.
LONG = ("--max-epochs", "8", "--patience", "8", "--pruner", "none", "--seed", "0", "-q")


# Epochs slow enough (tens of ms) that a trial seen running at epoch 2 is still running
# when the test's signal arrives: with the tiny space a trial can finish in between.
SLOW_SPACE = """
cell = "lstm"
hidden_size = 64
num_layers = 1
bidirectional = false
batch_size = 32
"""


@pytest.fixture
def slow_space(tmp_path: Path) -> Path:
    path = tmp_path / "slow.toml"
    path.write_text(SLOW_SPACE)
    return path


def postgres_up() -> bool:
    import psycopg2

    psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="test", connect_timeout=3).close()
    return True


def mysql_up() -> bool:
    import pymysql

    pymysql.connect(host="127.0.0.1", port=3306, user="root", database="test", connect_timeout=3).close()
    return True


def redis_up() -> bool:
    import redis

    return bool(redis.Redis.from_url(REDIS, socket_connect_timeout=3).ping())


@pytest.fixture
def new_study() -> Iterator[Callable[[str], str]]:
    """``new_study(url)`` names a fresh study on ``url``; every such study is deleted afterwards."""
    made: list[tuple[str, str]] = []

    def make(url: str) -> str:
        name = f"optuna-rnn-test-{uuid.uuid4().hex[:12]}"
        made.append((url, name))
        return name

    yield make
    for url, name in made:
        with contextlib.suppress(Exception):
            optuna.delete_study(study_name=name, storage=open_storage(url))


def trials_of(url: str, name: str) -> list[FrozenTrial]:
    return optuna.load_study(study_name=name, storage=open_storage(url)).get_trials(deepcopy=False)


def count(trials: list[FrozenTrial], *states: TrialState) -> int:
    return sum(t.state in states for t in trials)


def start(cwd: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        cli_command(*args),
        cwd=cwd,
        env=cli_env(**HEARTBEAT),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 240) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def running_with_checkpoint(
    url: str, name: str, directory: Path, *, min_epoch: int, timeout: float = 120
) -> tuple[FrozenTrial, Path]:
    """Wait until a running trial has a checkpoint of at least ``min_epoch`` epochs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        trials: list[FrozenTrial] = []
        with contextlib.suppress(KeyError):  # the run has yet to create the study
            trials = trials_of(url, name)
        for trial in trials:
            key = trial.user_attrs.get(CHECKPOINT_ATTR)
            if trial.state != TrialState.RUNNING or key is None:
                continue
            path = directory / f"{key}.pt"
            with contextlib.suppress(Exception):
                saved = load_checkpoint(path)
                if saved is not None and saved["epoch"] >= min_epoch:
                    return trial, path
        time.sleep(0.1)
    raise AssertionError(f"no running trial reached a checkpoint of {min_epoch} epochs")


def assert_total(trials: list[FrozenTrial], total: int) -> None:
    assert count(trials, *FINISHED) == total
    assert count(trials, TrialState.RUNNING, TrialState.WAITING) == 0
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))


def test_three_workers_share_a_postgresql_study_and_stop_at_its_total(run_cli, tiny_space, new_study) -> None:
    require_service("PostgreSQL", postgres_up)
    name = new_study(POSTGRES)
    out = run_cli(
        "run",
        "--dataset",
        "digits",
        "--study",
        name,
        "--storage",
        POSTGRES,
        "--n-trials",
        "12",
        "--workers",
        "3",
        "--space",
        str(tiny_space),
        "--max-epochs",
        "3",
        "--seed",
        "0",
        "-q",
        **HEARTBEAT,
    )
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    trials = trials_of(POSTGRES, name)
    assert_total(trials, 12)
    assert len({t.user_attrs["worker"] for t in trials}) >= 2, "the trials did not spread over workers"
    # one recorded seed, yet the workers' random start-up trials differ
    # (a retry repeats its trial; a surplus trial, refused before sampling, has no parameters)
    fresh = [t for t in trials if t.params and "failed_trial" not in t.system_attrs]
    assert len({tuple(sorted(t.params.items())) for t in fresh}) == len(fresh)


def create(run_cli, url: str, name: str, space: Path, *, epochs: int = 8) -> None:
    """A study with one finished trial, created by `run` so that workers can join it."""
    out = run_cli(
        "run", "--dataset", "digits", "--study", name, "--storage", url, "--n-trials", "1",
        "--space", str(space), *LONG, "--max-epochs", str(epochs), "--patience", str(epochs), **HEARTBEAT,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("storage", ["postgresql", "journal"])
def test_a_killed_workers_trial_is_retried_by_another_from_its_checkpoint(
    run_cli, tmp_path, slow_space, new_study, storage: str
) -> None:
    # PostgreSQL finds the dead worker by its heartbeat; a journal file has none, and the next
    # worker on this machine sees that the process named in the trial's `worker` attr is gone.
    if storage == "postgresql":
        require_service("PostgreSQL", postgres_up)
        url, name = POSTGRES, new_study(POSTGRES)
    else:
        url, name = str(tmp_path / "study.log"), "killed"
    create(run_cli, url, name, slow_space)
    directory = checkpoints_dir(tmp_path / "optuna-rnn-artifacts", name)
    worker = ("worker", "--study", name, "--storage", url, "--n-trials", "5", "-q")

    doomed = start(tmp_path, *worker)
    try:
        victim, path = running_with_checkpoint(url, name, directory, min_epoch=2)
    finally:
        doomed.kill()  # SIGKILL: no clean-up, the trial stays RUNNING
        doomed.wait()
    last_checkpoint = load_checkpoint(path)["epoch"]

    code, err = finish(start(tmp_path, *worker))
    assert code == 0, err
    trials = trials_of(url, name)
    assert_total(trials, 5)
    victim = trials[victim.number]
    assert victim.state == TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retries) == 1
    retry = retries[0]
    assert retry.state == TrialState.COMPLETE
    assert retry.params == victim.params and retry.user_attrs["seed"] == victim.user_attrs["seed"]
    assert retry.user_attrs["worker"] != victim.user_attrs["worker"]
    # it trained from the epoch after the checkpoint, and its record covers the whole run
    assert retry.user_attrs[RESUMED_ATTR] == last_checkpoint >= 2
    assert sorted(retry.intermediate_values) == list(range(1, 9))
    assert len(retry.user_attrs["curve"]["val_metric"]) == 8
    assert not path.exists(), "a finished trial's checkpoint was left behind"


def test_sigterm_closes_a_workers_trial_and_a_new_worker_resumes_it(
    run_cli, tmp_path, slow_space, new_study
) -> None:
    require_service("PostgreSQL", postgres_up)
    name = new_study(POSTGRES)
    create(run_cli, POSTGRES, name, slow_space, epochs=20)
    directory = checkpoints_dir(tmp_path / "optuna-rnn-artifacts", name)
    worker = ("worker", "--study", name, "--storage", POSTGRES, "--n-trials", "4", "-q")

    stopped = start(tmp_path, *worker)
    victim, path = running_with_checkpoint(POSTGRES, name, directory, min_epoch=2)
    sent = time.monotonic()
    stopped.send_signal(signal.SIGTERM)
    code, err = finish(stopped, timeout=30)
    assert code == 0, err
    assert time.monotonic() - sent < 10
    assert "interrupted" in err and "Traceback" not in err
    victim = trials_of(POSTGRES, name)[victim.number]
    assert victim.state == TrialState.FAIL and victim.user_attrs["stop_reason"] == INTERRUPTED
    kept = load_checkpoint(path)
    assert kept is not None, "the interrupted trial's checkpoint is gone"

    code, err = finish(start(tmp_path, *worker))
    assert code == 0, err
    trials = trials_of(POSTGRES, name)
    assert_total(trials, 4)
    assert count(trials, TrialState.FAIL) == 1
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == victim.number]
    assert retry.state == TrialState.COMPLETE and retry.params == victim.params
    assert retry.user_attrs[RESUMED_ATTR] == kept["epoch"]
    assert not path.exists()


@pytest.mark.parametrize("storage", ["journal", "redis"])
def test_two_workers_finish_a_journal_study(run_cli, tmp_path, tiny_space, new_study, storage: str) -> None:
    if storage == "redis":
        require_service("Redis", redis_up)
        url = REDIS
    else:
        url = str(tmp_path / "study.log")
    name = new_study(url)
    out = run_cli(
        "run", "--dataset", "digits", "--study", name, "--storage", url, "--n-trials", "6",
        "--workers", "2", "--space", str(tiny_space), "--max-epochs", "3",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    trials = trials_of(url, name)
    assert_total(trials, 6)
    assert len({t.user_attrs["worker"] for t in trials}) == 2
    # the parent's bar ends at the total, with the best value and the number pruned, as one worker's does
    pruned = sum(t.state == TrialState.PRUNED for t in trials)
    assert re.search(rf"6/6 \[[^]]*, best=[0-9.]+, pruned={pruned}\]", out.stderr), out.stderr[-500:]


def test_a_worker_joins_a_mysql_study_from_its_recorded_config(run_cli, tiny_space, new_study) -> None:
    require_service("MySQL", mysql_up)
    name = new_study(MYSQL)
    create(run_cli, MYSQL, name, tiny_space)
    out = run_cli("worker", "--study", name, "--n-trials", "3", "-q", OPTUNA_RNN_STORAGE=MYSQL)
    assert out.returncode == 0, out.stderr
    assert f"study '{name}' holds 3 finished trials" in out.stdout
    assert_total(trials_of(MYSQL, name), 3)


def test_an_unreachable_database_is_one_line_without_the_password(cli_in_process, monkeypatch) -> None:
    bad = "postgresql://alice:s3cr3t-pw@127.0.0.1:1/db"
    cases = [
        ("run", "--dataset", "digits", "--storage", bad),
        ("run", "--dataset", "digits", "--storage", bad, "--workers", "2"),
        ("worker", "--study", "any", "--storage", bad),
    ]
    for args in cases:
        out = cli_in_process(*args)
        assert out.returncode == 2, (args, out.stderr)
        assert out.stderr.startswith(
            "optuna-rnn: error: cannot open storage postgresql://alice:***@127.0.0.1:1/db"
        )
        assert len(out.stderr.strip().splitlines()) == 1 and "s3cr3t" not in out.stderr + out.stdout
    monkeypatch.setenv("OPTUNA_RNN_STORAGE", bad)
    out = cli_in_process("worker", "--study", "any")
    assert out.returncode == 2 and "s3cr3t" not in out.stderr and "alice:***@" in out.stderr


def test_ctrl_c_stops_local_sqlite_workers_and_the_next_run_resumes_their_trials(
    run_cli, tmp_path, slow_space
) -> None:
    url = f"sqlite:///{tmp_path / 'optuna-rnn.db'}"
    directory = checkpoints_dir(tmp_path / "optuna-rnn-artifacts", "digits")
    parent = start(
        tmp_path, "run", "--dataset", "digits", "--n-trials", "40", "--workers", "2",
        "--space", str(slow_space), "--max-epochs", "40", "--patience", "40", "--pruner", "none", "-q",
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            with contextlib.suppress(KeyError, Exception):
                if count(trials_of(url, "digits"), *FINISHED) >= 2:
                    break
            time.sleep(0.3)
        else:
            raise AssertionError("two sqlite workers did not finish two trials")
        victim, path = running_with_checkpoint(url, "digits", directory, min_epoch=1)
    except BaseException:
        parent.kill()
        raise
    parent.send_signal(signal.SIGINT)
    code, err = finish(parent, timeout=60)
    assert code == 0, err
    assert "interrupted" in err and "Traceback" not in err and "locked" not in err
    assert err.count("interrupted; the running trials were closed") == 1, err  # the parent's, once
    assert err.count("optuna-rnn: interrupted") == 1, err  # the workers say nothing of their own
    trials = trials_of(url, "digits")
    assert count(trials, TrialState.RUNNING) == 0
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert victim.number in {t.number for t in failed}
    assert all(t.user_attrs.get("stop_reason") == INTERRUPTED for t in failed)
    for pid in {int(t.user_attrs["worker"].rsplit(":", 1)[1]) for t in trials}:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # every worker has exited

    total = count(trials, *FINISHED) + 3
    out = run_cli("run", "--study", "digits", "--n-trials", str(total), "--workers", "2", "-q", **HEARTBEAT)
    assert out.returncode == 0, out.stderr
    trials = trials_of(url, "digits")
    assert_total(trials, total)
    retried = {t.system_attrs["failed_trial"]: t for t in trials if "failed_trial" in t.system_attrs}
    assert set(retried) == {t.number for t in failed}  # each interrupted trial queued once
    assert retried[victim.number].user_attrs[RESUMED_ATTR] >= 1


def test_a_sigkilled_local_worker_is_named_and_the_next_run_retries_its_trial(
    run_cli, tmp_path, slow_space
) -> None:
    # A journal file has no heartbeat: the killed worker's trial stays RUNNING, and the next
    # run, on this machine, sees that its process is gone.
    url = str(tmp_path / "study.log")
    directory = checkpoints_dir(tmp_path / "optuna-rnn-artifacts", "digits")
    parent = start(
        tmp_path, "run", "--dataset", "digits", "--storage", url, "--n-trials", "3", "--workers", "2",
        "--space", str(slow_space), "--max-epochs", "20", "--patience", "20", "--pruner", "none", "-q",
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not any(s.study_name == "digits" for s in optuna.get_all_study_summaries(open_storage(url))):
            assert time.monotonic() < deadline, "the run did not create its study"
            time.sleep(0.2)
        victim, path = running_with_checkpoint(url, "digits", directory, min_epoch=1)
        os.kill(int(victim.user_attrs["worker"].rsplit(":", 1)[1]), signal.SIGKILL)
    except BaseException:
        parent.kill()
        raise
    code, err = finish(parent)
    assert code == 1 and "was killed by SIGKILL" in err, err
    trials = trials_of(url, "digits")
    assert trials[victim.number].state == TrialState.RUNNING
    assert count(trials, *FINISHED) == 2  # the other worker stopped at the total, counting the victim

    out = run_cli("run", "--study", "digits", "--storage", url, "--n-trials", "3", "-q", **HEARTBEAT)
    assert out.returncode == 0, out.stderr
    trials = trials_of(url, "digits")
    assert_total(trials, 3)
    assert trials[victim.number].state == TrialState.FAIL
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == victim.number]
    assert retry.state == TrialState.COMPLETE and retry.user_attrs[RESUMED_ATTR] >= 1
    assert not path.exists()


def test_more_workers_than_trials_left_start_only_as_many_as_needed(run_cli, tmp_path, tiny_space) -> None:
    out = run_cli(
        "run", "--dataset", "digits", "--n-trials", "1", "--workers", "3", "--space", str(tiny_space),
        "--max-epochs", "1",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "digits (1 worker)" in out.stderr  # the progress bar's title
    trials = trials_of(f"sqlite:///{tmp_path / 'optuna-rnn.db'}", "digits")
    assert [t.state for t in trials] == [TrialState.COMPLETE]  # no surplus trials closed as FAIL


def test_two_local_workers_on_a_grid_run_each_configuration_once_and_say_so_once(run_cli, tmp_path) -> None:
    space = tmp_path / "grid.toml"  # everything fixed but the cell: 2 configurations
    space.write_text(
        'cell = ["gru", "rnn"]\nhidden_size = 4\nnum_layers = 1\nbatch_size = 256\nbidirectional = false\n'
        'dropout = 0.0\ninput_init = "xavier_uniform"\nrecurrent_init = "orthogonal"\noptimizer = "adam"\n'
        'lr = 0.01\nweight_decay = 1e-6\nbeta1 = 0.9\nbeta2 = 0.999\ngrad_clip = "none"\n'
    )
    out = run_cli(
        "run", "--dataset", "digits", "--n-trials", "6", "--workers", "2", "--space", str(space),
        "--sampler", "grid", "--max-epochs", "1", "-q",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    trials = trials_of(f"sqlite:///{tmp_path / 'optuna-rnn.db'}", "digits")
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    # a worker asking after the grid was spent used to run a configuration again
    assert sorted(t.params["cell"] for t in finished) == ["gru", "rnn"]
    assert out.stderr.count("every configuration of the grid has run") == 1, out.stderr  # not once per worker


class CuttableProxy:
    """A TCP relay to a local server's ``port`` that can be cut, as when the database goes away."""

    def __init__(self, port: int) -> None:
        self.upstream = port
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:  # cut
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream))
            self.sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._relay, args=(source, sink), daemon=True).start()

    @staticmethod
    def _relay(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)

    def cut(self) -> None:
        for sock in (self.server, *self.sockets):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def test_a_database_lost_mid_trial_is_one_line_and_the_next_run_resumes_the_trial(
    tmp_path, slow_space, new_study
) -> None:
    require_service("MySQL", mysql_up)
    proxy = CuttableProxy(3306)
    through_proxy = MYSQL.replace(":3306/", f":{proxy.port}/")
    name = new_study(MYSQL)
    run = start(
        tmp_path, "run", "--dataset", "digits", "--study", name, "--storage", through_proxy,
        "--n-trials", "1", "--space", str(slow_space), "--max-epochs", "200", "--patience", "200",
        "--pruner", "none", "-q",
    )  # fmt: skip
    try:
        directory = checkpoints_dir(tmp_path / "optuna-rnn-artifacts", name)
        trial, path = running_with_checkpoint(MYSQL, name, directory, min_epoch=2)
    finally:
        proxy.cut()
    code, err = finish(run)
    # It used to end in hundreds of lines of tracebacks, the last an UnboundLocalError inside Optuna.
    assert code == 1 and "Traceback" not in err, err
    *warnings, error = err.strip().splitlines()
    assert error.startswith(f"optuna-rnn: error: the storage {through_proxy} failed (")
    assert error.endswith(
        "once it is back, run the command again: a trial it could not close resumes from its checkpoint"
    )
    # the heartbeat thread, when it met the failure first, says so in a line of its own
    assert all(
        line.startswith("optuna-rnn: warning: ") and "lost the storage" in line for line in warnings
    ), err
    assert [t.state for t in trials_of(MYSQL, name)] == [TrialState.RUNNING]
    assert path.is_file()  # the checkpoint used to be deleted: the retry began again from epoch 0
    resumed = start(
        tmp_path, "run", "--study", name, "--storage", MYSQL, "--n-trials", "1", "--max-epochs", "200"
    )
    code, err = finish(resumed)
    assert code == 0, err
    retry = trials_of(MYSQL, name)[-1]
    assert retry.state == TrialState.COMPLETE and retry.user_attrs["resumed_from_epoch"] >= 2


def test_only_a_storage_that_cannot_be_reached_counts_as_lost(tmp_path, new_study) -> None:
    from optuna_rnn.errors import storage_failure

    require_service("MySQL", mysql_up)
    with pytest.raises(Exception) as refused:  # no server on port 1
        optuna.create_study(storage=MYSQL.replace(":3306/", ":1/"))
    assert storage_failure(refused.value) is not None
    name = new_study(MYSQL)
    with pytest.raises(Exception) as too_long:  # the data's fault: a retry would fail the same way
        optuna.create_study(study_name=name + "x" * 600, storage=MYSQL)
    assert storage_failure(too_long.value) is None  # so it keeps its traceback and Optuna's hint
    journal = tmp_path / "gone" / "study.log"
    journal.parent.mkdir()
    study = optuna.create_study(storage=open_storage(str(journal)))
    journal.parent.rename(tmp_path / "moved")  # a disk or network share that went away
    with pytest.raises(OSError) as unwritable:
        study.ask()
    assert storage_failure(unwritable.value) is unwritable.value
    assert storage_failure(OSError("a checkpoint's disk is full")) is None  # not the storage's
    import pymysql.err
    import redis.exceptions

    # pymysql calls unmapped server errors OperationalError: only connection errors count
    assert storage_failure(pymysql.err.OperationalError(2013, "Lost connection to MySQL server")) is not None
    assert storage_failure(pymysql.err.OperationalError(1267, "Illegal mix of collations")) is None
    # a Redis failover or full memory arrives as a response error
    assert (
        storage_failure(redis.exceptions.ReadOnlyError("You can't write against a read only replica"))
        is not None
    )
    assert storage_failure(redis.exceptions.ResponseError("WRONGTYPE Operation against a key")) is None


_ASK = """
import sys, optuna
from optuna_rnn.study import open_storage
study = optuna.load_study(study_name="queue", storage=open_storage(sys.argv[1]))
print("ready", flush=True)
sys.stdin.readline()  # go
print(" ".join(str(study.ask().number) for _ in range(40)))
"""


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_two_workers_asking_at_once_never_get_the_same_queued_trial(tmp_path, kind: str) -> None:
    # Retries of interrupted trials are queued (WAITING); Optuna's pop relies on SELECT FOR
    # UPDATE, which SQLite ignores, so both workers used to run the same retry.
    url = f"sqlite:///{tmp_path / 'q.db'}" if kind == "sqlite" else str(tmp_path / "q.log")
    study = optuna.create_study(study_name="queue", storage=open_storage(url))
    for x in range(80):
        study.enqueue_trial({"x": x})
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _ASK, url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=cli_env(),
        )
        for _ in range(2)
    ]
    for p in procs:  # both have imported everything and opened the study
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    for p in procs:  # then both start asking at once
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    got = [set(map(int, p.communicate(timeout=120)[0].split())) for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert [len(g) for g in got] == [40, 40]
    assert got[0].isdisjoint(got[1]), sorted(got[0] & got[1])
    assert got[0] | got[1] == set(range(80))  # the queued trials, none new
    assert count(trials_of(url, "queue"), TrialState.RUNNING) == 80


def test_two_runs_racing_to_create_one_study_share_it_or_refuse_a_different_config(
    tmp_path, tiny_space
) -> None:
    # On a new SQLite file, both create the schema and the study at once.
    args = ("run", "--dataset", "digits", "--study", "race", "--space", str(tiny_space), "--seed", "0", "-q")
    same = [start(tmp_path, *args, "--n-trials", "3", "--max-epochs", "1") for _ in range(2)]
    results = [finish(p, timeout=240) for p in same]
    assert [code for code, _ in results] == [0, 0], results
    url = f"sqlite:///{tmp_path / 'optuna-rnn.db'}"
    assert count(trials_of(url, "race"), *FINISHED) == 3
    # With different configurations, whichever records its own first wins; the other is refused.
    other = ("--study", "race2", "--n-trials", "2")
    racing = [start(tmp_path, *args, *other, "--max-epochs", epochs) for epochs in ("1", "2")]
    codes = sorted(finish(p, timeout=240)[0] for p in racing)
    assert codes == [0, 2]


def test_a_study_left_bare_by_a_stop_during_its_creation_is_adopted(run_cli, tmp_path, tiny_space) -> None:
    url = f"sqlite:///{tmp_path / 'optuna-rnn.db'}"
    optuna.create_study(study_name="bare", storage=url, direction="maximize")  # no configuration yet
    out = run_cli(
        "run", "--dataset", "digits", "--study", "bare", "--n-trials", "2", "--space", str(tiny_space),
        "--max-epochs", "1", "-q",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert count(trials_of(url, "bare"), *FINISHED) == 2


@pytest.mark.parametrize("directions", [["minimize"], ["maximize", "minimize"]])
def test_a_bare_study_that_optuna_rnn_would_not_have_made_is_not_adopted(
    tmp_path, monkeypatch, directions: list[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'optuna-rnn.db'}"
    optuna.create_study(study_name="bare", storage=url, directions=directions)  # digits maximises
    monkeypatch.setattr(
        study_module, "settled_config", functools.partial(study_module.settled_config, wait=0.1)
    )
    with pytest.raises(UsageError, match="study 'bare' exists but was not created by optuna-rnn"):
        study_module.open_session(
            "bare", storage=url, given={"dataset": DatasetSpec(name="digits")}, create=True
        )
    assert optuna.load_study(study_name="bare", storage=url).user_attrs == {}


def test_the_curve_of_a_very_long_trial_fits_a_mysql_user_attr(new_study) -> None:
    require_service("MySQL", mysql_up)
    history = [
        # 6 significant digits, the longest they print: a negative value in scientific notation
        {
            "epoch": e,
            "train_loss": 1 / e,
            "val_loss": 1.1 / e,
            "val_metric": -1 / e / 3e4,
            "seconds": 1.23456789e-5,
        }
        for e in range(1, 3001)
    ]
    curve = curve_attr(history)
    assert (
        len(curve["val_loss"]) == MAX_CURVE_POINTS and curve["epoch"][0] == 1 and curve["epoch"][-1] == 3000
    )
    assert curve["epoch"][:3] == [1, 4, 7] and curve["val_loss"][1] == round(1.1 / 4, 6)
    assert curve_attr(history[:50]) == {k: [float(f"{h[k]:.6g}") for h in history[:50]] for k in CURVE_KEYS}
    name = new_study(MYSQL)
    study = optuna.create_study(study_name=name, storage=MYSQL)
    trial = study.ask()
    trial.set_user_attr("curve", curve)  # a 3000-epoch curve in full would exceed MySQL's TEXT
    study.tell(trial, 1.0)
    assert optuna.load_study(study_name=name, storage=MYSQL).trials[0].user_attrs["curve"] == curve


def test_a_hand_started_worker_notes_other_local_workers_sharing_the_cores(
    cli_in_process, tmp_path, tiny_space
) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    args = ("--space", str(tiny_space), "--max-epochs", "1", "-q")
    assert (
        cli_in_process("run", "--dataset", "digits", "--storage", url, "--n-trials", "1", *args).returncode
        == 0
    )
    study = optuna.load_study(study_name="digits", storage=open_storage(url))
    with subprocess.Popen(["sleep", "60"]) as alive, subprocess.Popen(["true"]) as dead:
        dead.wait()
        try:
            for pid in (alive.pid, dead.pid):  # running trials of another live worker and of a dead one
                study.ask().set_user_attr(WORKER_ID_ATTR, process_identity(pid))
            cores = available_cores()
            note = (
                f"optuna-rnn: note: 1 other worker(s) of this study run on this machine and this one takes "
                f"all {cores} cores; give each of the 2 --threads {max(1, cores // 2)}"
            )
            out = cli_in_process("worker", "--study", "digits", "--storage", url, "--n-trials", "4", "-q")
            assert out.returncode == 0 and note in out.stderr, out.stderr
            given = cli_in_process(
                "worker", "--study", "digits", "--storage", url, "--n-trials", "5", "--threads", "1", "-q"
            )
            assert given.returncode == 0 and "note: 1 other worker" not in given.stderr
        finally:
            alive.kill()
