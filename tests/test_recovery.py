"""Fast checks of the pieces that let several workers share a study and survive crashes."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from optuna_rnn import recovery
from optuna_rnn.errors import UsageError
from optuna_rnn.liveness import process_identity, this_process
from optuna_rnn.recovery import (
    CHECKPOINT_ATTR,
    DEATHS_ATTR,
    GRACE_ENV,
    HEARTBEAT_ENV,
    INTERRUPTED,
    STALE_CLAIM_SECONDS,
    WORKER_ID_ATTR,
    RetryDeadWorker,
    checkpoints_dir,
    drop_leftovers,
    heartbeat_settings,
    mark_interrupted,
    requeue_interrupted,
    requeue_orphaned,
)
from optuna_rnn.study import (
    default_artifacts_dir,
    mask_secrets,
    mask_url,
    open_storage,
    with_installed_driver,
)
from optuna_rnn.workers import (
    SharedTotal,
    SurplusTrial,
    TrialGuard,
    cpu_quota,
    gpus_per_worker,
    how_it_ended,
    threads_per_worker,
)


def test_heartbeat_defaults_and_overrides(monkeypatch) -> None:
    monkeypatch.delenv(HEARTBEAT_ENV, raising=False)
    monkeypatch.delenv(GRACE_ENV, raising=False)
    assert heartbeat_settings() == (10, 30)
    monkeypatch.setenv(HEARTBEAT_ENV, "2")
    assert heartbeat_settings() == (2, 6)
    monkeypatch.setenv(GRACE_ENV, "5")
    assert heartbeat_settings() == (2, 5)
    monkeypatch.setenv(GRACE_ENV, "3")  # shorter than two heartbeats: live trials would look dead
    with pytest.raises(UsageError, match="at least twice the heartbeat interval"):
        heartbeat_settings()
    monkeypatch.setenv(GRACE_ENV, "5")
    monkeypatch.setenv(HEARTBEAT_ENV, "0")
    assert heartbeat_settings() == (None, None)
    monkeypatch.setenv(HEARTBEAT_ENV, "soon")
    with pytest.raises(UsageError, match="whole number of seconds"):
        heartbeat_settings()


def test_threads_never_oversubscribe_the_cores(monkeypatch) -> None:
    monkeypatch.setattr("optuna_rnn.workers.available_cores", lambda: 8)
    assert [threads_per_worker(n) for n in (1, 2, 3, 8, 20)] == [8, 4, 2, 1, 1]


@pytest.mark.parametrize(
    ("files", "cpus"),
    [
        ({"cpu.max": "200000 100000\n"}, 2),  # cgroup v2, docker --cpus 2
        ({"cpu.max": "150000 100000\n"}, 2),  # 1.5 CPUs: two threads, rounded up
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu/cpu.cfs_quota_us": "50000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1),  # cgroup v1
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({}, None),
    ],
)
def test_a_containers_cpu_quota_caps_the_cores(tmp_path, files: dict[str, str], cpus: int | None) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cpu_quota(tmp_path) == cpus


def test_each_worker_gets_its_own_gpu_when_several_are_visible(monkeypatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert gpus_per_worker(3, "auto") == ["3", "5", "3"]
    assert gpus_per_worker(2, "cpu") == [None, None]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert gpus_per_worker(2, "cuda") == [None, None]  # one GPU: shared, as the parent sees it


def test_urls_get_an_installed_driver_and_passwords_are_masked() -> None:
    assert with_installed_driver("postgresql://u@h/db").startswith(
        ("postgresql+psycopg", "postgresql+psycopg2")
    )
    assert with_installed_driver("mysql://root@127.0.0.1/test").startswith(("mysql+mysqldb", "mysql+pymysql"))
    assert with_installed_driver("postgresql+psycopg2://u@h/db") == "postgresql+psycopg2://u@h/db"
    url = "postgresql://alice:p%40ss-w0rd@db.example:5432/optuna"
    text = f"could not connect to {url}; password p@ss-w0rd rejected"
    masked = mask_secrets(text, url)
    assert "p%40ss" not in masked and "p@ss" not in masked
    assert "alice:***@db.example" in masked
    slash = "postgresql://postgres:s3cr/et@127.0.0.1:5432/test"  # SQLAlchemy reads the password 's3cr/et'
    assert mask_url(f"no study in {slash}") == "no study in postgresql://postgres:***@127.0.0.1:5432/test"
    assert "cr/et" not in mask_secrets(f"{slash} rejected s3cr/et", slash)
    assert mask_url("sqlite:///a.db, then host:5432/x and a@b") == "sqlite:///a.db, then host:5432/x and a@b"
    no_password = "postgresql://host:5432/db?sslrootcert=/etc/ca@x.pem"
    assert mask_url(no_password) == no_password


def test_a_percent_encoded_sqlite_url_means_the_file_optuna_opens(tmp_path) -> None:
    url = f"sqlite:///{tmp_path}/a%20b.db"
    optuna.create_study(study_name="s", storage=open_storage(url))
    assert (tmp_path / "a b.db").exists() and not any("%" in p.name for p in tmp_path.iterdir())
    assert optuna.get_all_study_names(url) == ["s"]
    assert open_storage(url, must_exist=True, for_reading=True).get_all_studies()[0].study_name == "s"
    assert default_artifacts_dir(url) == str(tmp_path / "optuna-rnn-artifacts")


def test_checkpoint_directories_are_safe_and_distinct(tmp_path) -> None:
    assert checkpoints_dir(tmp_path, "digits") == tmp_path / "checkpoints" / "digits"
    odd = checkpoints_dir(tmp_path, "../x y")
    assert odd.parent == tmp_path / "checkpoints" and ".." not in odd.name
    assert checkpoints_dir(tmp_path, "a/b") != checkpoints_dir(tmp_path, "a_b")


def _add(study: optuna.Study, state: TrialState, **user_attrs: object) -> None:
    study.add_trial(
        optuna.create_trial(
            state=state,
            params={"x": 0.5},
            distributions={"x": FloatDistribution(0, 1)},
            value=1.0 if state == TrialState.COMPLETE else None,
            user_attrs=user_attrs,
            intermediate_values={1: 0.1, 2: 0.2},
        )
    )


def test_interrupted_trials_are_queued_once_with_their_seed_and_checkpoint(tmp_path) -> None:
    study = optuna.create_study()
    _add(study, TrialState.COMPLETE)
    _add(study, TrialState.FAIL, stop_reason=INTERRUPTED, seed=7, **{CHECKPOINT_ATTR: "trial-1"})
    _add(study, TrialState.FAIL, stop_reason="diverged")  # a real failure is not retried
    assert requeue_interrupted(study, tmp_path) == [1]
    assert requeue_interrupted(study, tmp_path) == []  # already queued
    retry = study.trials[-1]
    assert retry.state == TrialState.WAITING and retry.params == {"x": 0.5}
    assert retry.user_attrs["seed"] == 7 and retry.user_attrs[CHECKPOINT_ATTR] == "trial-1"
    assert retry.intermediate_values == {1: 0.1, 2: 0.2}
    assert retry.system_attrs["failed_trial"] == 1
    assert "stop_reason" not in retry.user_attrs  # the retry has not been interrupted (yet)
    taken = study.ask()  # a worker takes the retry...
    assert taken.number == retry.number
    mark_interrupted(taken)  # ...and is interrupted too
    study.tell(taken, state=TrialState.FAIL)
    assert requeue_interrupted(study, tmp_path) == [taken.number]  # interrupted again: queued again
    again = study.trials[-1]
    assert again.state == TrialState.WAITING and again.user_attrs[CHECKPOINT_ATTR] == "trial-1"
    assert again.system_attrs["retry_history"] == [1, taken.number]
    assert requeue_interrupted(study, tmp_path) == []
    study.tell(study.ask(), state=TrialState.FAIL)  # that retry fails for a reason of its own
    assert requeue_interrupted(study, tmp_path) == []  # a real failure: not retried again and again


def test_a_claim_left_by_a_process_killed_before_queueing_is_taken_over(tmp_path) -> None:
    study = optuna.create_study()
    _add(study, TrialState.FAIL, stop_reason=INTERRUPTED)
    trial = study.trials[0]
    marker = tmp_path / f"requeued-0-{int(trial.datetime_start.timestamp())}"
    marker.touch()  # claimed a moment ago by a worker still queueing it: not ours
    assert requeue_interrupted(study, tmp_path) == []
    old = time.time() - STALE_CLAIM_SECONDS - 1
    os.utime(marker, (old, old))  # claimed long ago by a worker that died before queueing it
    assert requeue_interrupted(study, tmp_path) == [0]
    assert study.trials[-1].system_attrs["failed_trial"] == 0
    assert requeue_interrupted(study, tmp_path) == []
    assert [p.name for p in tmp_path.iterdir()] == [marker.name]  # a fresh claim, nothing stale left


def test_a_fresh_claim_of_a_process_that_is_gone_is_taken_over_at_once(tmp_path) -> None:
    study = optuna.create_study()
    _add(study, TrialState.FAIL, stop_reason=INTERRUPTED)
    marker = tmp_path / f"requeued-0-{int(study.trials[0].datetime_start.timestamp())}"
    child = subprocess.Popen([sys.executable, "-c", "input()"], stdin=subprocess.PIPE)
    marker.write_text(process_identity(child.pid))  # claimed a moment ago by a run killed before queueing
    child.communicate(b"\n")  # and gone
    # a restart within STALE_CLAIM_SECONDS used to skip the trial, and a full total dropped it for good
    assert requeue_interrupted(study, tmp_path) == [0]
    assert marker.read_text() == this_process()  # the claim is this run's now


def test_a_trial_whose_worker_died_before_recording_itself_is_retried_once_it_is_old(
    tmp_path, monkeypatch
) -> None:
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage)
    study.ask({"x": FloatDistribution(0, 1)})  # RUNNING with no worker recorded: killed while sampling
    assert requeue_orphaned(study, tmp_path, storage=storage) == []  # young: its worker may be sampling
    monkeypatch.setattr(recovery, "OWNERLESS_STALE_SECONDS", -1.0)
    assert requeue_orphaned(study, tmp_path, storage=storage) == [0]
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.WAITING]
    assert study.trials[1].params == study.trials[0].params
    assert requeue_orphaned(study, tmp_path, storage=storage) == []
    # A stalled worker whose trial the heartbeat failed, and which took the retry up itself: the
    # retry carries the same (live) worker id as the trial it continues, and is left alone.
    storage = optuna.storages.InMemoryStorage()
    other = optuna.create_study(storage=storage)
    _add(other, TrialState.FAIL, **{WORKER_ID_ATTR: this_process()})
    RetryDeadWorker()(other, other.trials[0])  # queued, as the heartbeat does
    taken = other.ask()  # by the same worker, awake again: it carries the inherited id
    assert taken.user_attrs[WORKER_ID_ATTR] == this_process()
    assert requeue_orphaned(other, tmp_path, storage=storage) == []


def test_an_orphan_of_a_finished_grid_is_retried_rather_than_stopping_the_run(tmp_path, monkeypatch) -> None:
    storage = open_storage(str(tmp_path / "j.log"))  # a journal file: no heartbeat
    grid = optuna.samplers.GridSampler({"x": [0.0, 1.0]})
    study = optuna.create_study(storage=storage, sampler=grid)
    first = study.ask({"x": FloatDistribution(0, 1)})
    study.tell(first, 1.0)
    study.ask({"x": FloatDistribution(0, 1)})  # the grid's last point, its worker killed while sampling
    monkeypatch.setattr(recovery, "OWNERLESS_STALE_SECONDS", -1.0)
    # closing it through the study would call the grid's after_trial, which stops the study:
    # outside optimize that raised, and the run lost the trial
    assert requeue_orphaned(study, tmp_path, storage=storage) == [1]
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.WAITING]
    assert study.trials[2].params == study.trials[1].params


def test_a_trial_resumed_after_an_interruption_is_still_retried_when_its_worker_dies(tmp_path) -> None:
    study = optuna.create_study()
    _add(study, TrialState.FAIL, stop_reason=INTERRUPTED)
    assert requeue_interrupted(study, tmp_path) == [0]
    resumed = study.ask()  # trial 1 continues trial 0, and then its worker is killed
    study.tell(resumed, state=TrialState.FAIL)
    assert RetryDeadWorker().retry(study, study.trials[1])  # the heartbeat's callback: a first death
    assert study.trials[2].state == TrialState.WAITING
    assert study.trials[2].system_attrs["retry_history"] == [0, 1]
    again = study.ask()  # the retry's worker dies too: the trial may be what kills them
    study.tell(again, state=TrialState.FAIL)
    assert not RetryDeadWorker().retry(study, study.trials[2])
    assert len(study.trials) == 3


def _dead_worker() -> str:
    """The identity of a worker process that has exited."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        return process_identity(child.pid)
    finally:
        child.kill()
        child.wait()


def test_a_trial_killed_while_closing_an_interruption_is_retried_once_not_for_ever(tmp_path) -> None:
    storage = open_storage(str(tmp_path / "j.log"))  # a journal file: requeue_orphaned finds the dead
    study = optuna.create_study(storage=storage)
    trial = study.ask({"x": FloatDistribution(0, 1)})
    # SIGTERM: the objective wrote its stop reason; then SIGKILL, before the trial was closed
    trial.set_user_attr(WORKER_ID_ATTR, _dead_worker())
    trial.set_user_attr("stop_reason", INTERRUPTED)
    assert requeue_orphaned(study, tmp_path, storage=storage) == [0]
    retry = study.ask()
    assert "stop_reason" not in retry.user_attrs and retry.user_attrs[DEATHS_ATTR] == 1
    retry.set_user_attr(WORKER_ID_ATTR, _dead_worker())  # its worker is killed too
    # It used to inherit "interrupted", which hid this death and every later one: retried for ever.
    assert requeue_orphaned(study, tmp_path, storage=storage) == []
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.FAIL]


def test_a_trial_whose_worker_cannot_be_judged_is_named_and_retried_when_asked(
    cli_in_process, tmp_path, tiny_space
) -> None:
    # a journal file has no heartbeat, and a worker on another machine (or in a container since
    # restarted) cannot be judged from here: its trial used to fill --n-trials silently, for ever
    args = ("--study", "s", "--storage", "j.log", "-q")
    new = ("--dataset", "digits", "--space", str(tiny_space), "--max-epochs", "1", "--seed", "0")
    assert cli_in_process("run", *args, *new, "--n-trials", "1").returncode == 0
    study = optuna.load_study(study_name="s", storage=open_storage(str(tmp_path / "j.log")))
    study.enqueue_trial(study.trials[0].params)
    stuck = study.ask()
    stuck.set_user_attr(WORKER_ID_ATTR, "elsewhere|boot|pid:[1]|123|456")

    out = cli_in_process("run", *args, "--n-trials", "2")
    assert out.returncode == 0, out.stderr
    assert (
        "running trials make up the rest of --n-trials 2, so this run starts none: 1 (elsewhere|"
        in out.stderr
    )
    assert "give --retry-trial N for each" in out.stderr
    assert len(study.get_trials()) == 2
    for number, why in (
        (5, "trial 5 of 's' is not in the study"),
        (0, "trial 0 of 's' is complete, not running"),
    ):
        refused = cli_in_process("run", *args, "--n-trials", "2", "--retry-trial", str(number))
        assert refused.returncode == 2 and f"--retry-trial {number}: {why}" in refused.stderr

    out = cli_in_process("run", *args, "--n-trials", "2", "--retry-trial", "1")
    assert out.returncode == 0, out.stderr
    assert "trial 1 closed as failed and queued again" in out.stderr
    trials = study.get_trials()
    assert [t.state for t in trials[1:]] == [TrialState.FAIL, TrialState.COMPLETE]
    assert trials[2].system_attrs["retry_history"] == [1]

    alive = study.ask()  # trial 3: its worker is this very process, alive
    alive.set_user_attr(WORKER_ID_ATTR, this_process())
    refused = cli_in_process("run", *args, "--n-trials", "4", "--retry-trial", "3")
    assert refused.returncode == 2
    assert f"trial 3's worker is alive on this machine (pid {os.getpid()}); stop it first" in refused.stderr
    alive.set_user_attr(WORKER_ID_ATTR, "elsewhere|boot|pid:[1]|123|456")
    alive.set_user_attr(DEATHS_ATTR, 1)  # a worker died under it before: no retry is left
    out = cli_in_process("run", *args, "--n-trials", "3", "--retry-trial", "3")
    assert "trial 3 closed as failed, not queued again: a worker died under it before" in out.stderr
    assert study.get_trials()[3].state == TrialState.FAIL


def test_retry_trial_tells_a_retry_another_worker_queued_from_the_retry_limit(
    cli_in_process, tmp_path, tiny_space, monkeypatch
) -> None:
    args = ("--study", "s", "--storage", "j.log", "-q")
    new = ("--dataset", "digits", "--space", str(tiny_space), "--max-epochs", "1", "--seed", "0")
    assert cli_in_process("run", *args, *new, "--n-trials", "1").returncode == 0
    study = optuna.load_study(study_name="s", storage=open_storage(str(tmp_path / "j.log")))
    study.ask().set_user_attr(WORKER_ID_ATTR, "elsewhere|boot|pid:[1]|123|456")
    original = recovery._fail_and_retry

    def beaten_to_it(*args: object, **kwargs: object) -> bool:
        original(*args, **kwargs)  # another worker's start-up check fails and queues it first
        return False

    monkeypatch.setattr(recovery, "_fail_and_retry", beaten_to_it)
    out = cli_in_process("run", *args, "--n-trials", "2", "--retry-trial", "1")
    assert "trial 1 closed as failed and queued again by another worker" in out.stderr
    assert [t.state for t in study.get_trials()][1:] == [TrialState.FAIL, TrialState.COMPLETE]


def test_checkpoints_no_trial_will_resume_are_removed(tmp_path) -> None:
    study = optuna.create_study()
    for key in ("dead-twice", "interrupted", "running", "done-retry"):
        (tmp_path / f"{key}.pt").write_bytes(b"x")
    (tmp_path / "dead-twice.pt.tmp-123").write_bytes(b"x")  # a killed writer's leftover
    # a retry whose worker died too stays FAIL for good: nothing resumes its checkpoint
    _add(study, TrialState.FAIL, **{CHECKPOINT_ATTR: "dead-twice"})
    _add(study, TrialState.FAIL, stop_reason=INTERRUPTED, **{CHECKPOINT_ATTR: "interrupted"})
    _add(study, TrialState.FAIL, **{CHECKPOINT_ATTR: "running"})  # taken over by the next trial...
    _add(study, TrialState.RUNNING, **{CHECKPOINT_ATTR: "running"})  # ...which is still training
    _add(study, TrialState.COMPLETE, **{CHECKPOINT_ATTR: "done-retry"})  # a stalled writer's late save
    # claims: of the retry that died too (failed by the next run, not retried again), and of the
    # interrupted trial (claimed by a worker killed before queueing it, to be taken over)
    for number in (0, 1):
        start = int(study.trials[number].datetime_start.timestamp())
        (tmp_path / f"requeued-{number}-{start}").touch()
    drop_leftovers(study, tmp_path)
    kept = sorted(p.name for p in tmp_path.iterdir())
    assert kept == ["interrupted.pt", f"requeued-1-{start}", "running.pt"]


def test_the_shared_total_counts_running_trials_and_refuses_surplus_ones() -> None:
    study = optuna.create_study()
    total = SharedTotal(3)
    for _ in range(2):
        _add(study, TrialState.COMPLETE)
    running = study.ask()
    assert total.reached(study)  # 2 finished + 1 running
    surplus = study.ask()
    with pytest.raises(SurplusTrial):
        total.admit(study, surplus)
    assert "surplus" in study.trials[surplus.number].user_attrs["stop_reason"]
    total.admit(study, running)  # the trial that makes the total may run


def test_a_trial_taken_over_by_another_worker_is_told_apart_from_a_failing_one() -> None:
    study = optuna.create_study()

    def stalled(trial: optuna.Trial) -> float:
        # Meanwhile another worker found this trial's heartbeat stale and failed it.
        study.tell(trial.number, state=TrialState.FAIL)
        trial.report(0.5, 1)
        return 0.5

    guard = TrialGuard(study, stalled, SharedTotal(5))
    with pytest.raises((ValueError, optuna.exceptions.UpdateFinishedTrialError)):
        study.optimize(guard, n_trials=1)
    assert guard.lost()
    assert study.trials[0].user_attrs["worker"] == guard.worker

    def woke_to_a_missing_file(trial: optuna.Trial) -> float:
        study.tell(trial.number, state=TrialState.FAIL)  # failed and retried while this worker stalled
        # its half-written checkpoint was removed by the retry, which finished meanwhile
        raise FileNotFoundError("trial-1.pt.tmp-24054 -> trial-1.pt")

    guard = TrialGuard(study, woke_to_a_missing_file, SharedTotal(5))
    with pytest.raises((ValueError, FileNotFoundError)):
        study.optimize(guard, n_trials=1)
    assert guard.lost()  # it goes on with the next trial (it crashed the worker with a traceback)

    def broken(trial: optuna.Trial) -> float:
        raise ValueError("a bug")

    guard = TrialGuard(study, broken, SharedTotal(5))
    with pytest.raises(ValueError, match="a bug"):
        study.optimize(guard, n_trials=1)
    assert not guard.lost()


def test_a_worker_warns_of_running_trials_whose_heartbeat_settings_clash_with_its_own(
    cli_in_process, tmp_path, tiny_space
) -> None:
    url = f"sqlite:///{tmp_path / 'hb.db'}"
    first = cli_in_process(
        "run", "--dataset", "digits", "--storage", url, "--space", str(tiny_space),
        "--n-trials", "1", "--max-epochs", "1", "-q",
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    study = optuna.load_study(study_name="digits", storage=open_storage(url))
    assert study.trials[0].user_attrs["heartbeat"] == [10, 30]  # the defaults, for others to compare
    # trials left running by workers with other settings (never stale: they send no heartbeat here)
    for theirs in ([10, 30], [60, 180], [2, 4]):
        study.ask().set_user_attr("heartbeat", theirs)
    joined = cli_in_process("worker", "--study", "digits", "--storage", url, "--n-trials", "5", "-q")
    assert joined.returncode == 0, joined.stderr
    advice = (
        "give every worker of a study the same $OPTUNA_RNN_HEARTBEAT_INTERVAL and $OPTUNA_RNN_HEARTBEAT_GRACE"
    )
    assert [line for line in joined.stderr.splitlines() if "warning" in line] == [
        "optuna-rnn: warning: trial 2 runs on a worker whose heartbeat comes every 60 s; this worker's "
        f"grace of 30 s would fail it while it is alive; {advice}",
        "optuna-rnn: warning: trial 3 runs on a worker whose grace is 4 s; it would fail this worker's "
        f"trials between two of its heartbeats (10 s apart); {advice}",
    ]


def test_a_workers_end_is_told_in_words_even_for_a_real_time_signal() -> None:
    assert how_it_ended(3) == "exited with code 3"
    assert how_it_ended(-9) == "was killed by SIGKILL"
    assert how_it_ended(-35) == "was killed by signal 35"  # signal.Signals(35) raised ValueError


def test_a_stalled_trials_error_leaves_the_checkpoint_to_its_retry(tmp_path, monkeypatch) -> None:
    from optuna_rnn import Callback, Objective, SearchSpace, load_dataset

    monkeypatch.setenv("OPTUNA_RNN_CHECKPOINT_SECONDS", "0")  # a checkpoint after every epoch
    study = optuna.create_study(direction="maximize")

    class StalledThenFailed(Callback):
        def on_epoch_end(self, state) -> None:
            if state.epoch == 2:  # meanwhile another worker failed this trial and retried it
                study.tell(study.trials[-1].number, state=TrialState.FAIL)
                raise RuntimeError("woke up to a changed world")

    space = SearchSpace(cell="gru", hidden_size=4, num_layers=1, batch_size=256)
    objective = Objective(
        load_dataset("digits"), space=space, max_epochs=3, device="cpu", checkpoints=tmp_path / "ck",
        callbacks=[StalledThenFailed()],
    )  # fmt: skip
    with pytest.raises((ValueError, RuntimeError)):
        study.optimize(objective, n_trials=1)
    assert [p.name for p in (tmp_path / "ck").iterdir()] == ["trial-0.pt"]  # the retry resumes from it
    assert "stop_reason" not in study.trials[0].user_attrs  # a FAIL of the other worker's making
