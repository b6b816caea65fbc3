"""Every sampler the command offers runs a study to the end: its model fits, its imports exist."""

from __future__ import annotations

import threading
from pathlib import Path

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState

from optuna_rnn import Choice, DatasetSpec, FloatRange, IntRange, SearchSpace, Trainer
from optuna_rnn.config import PRUNERS, SAMPLERS
from optuna_rnn.recovery import CHECKPOINT_ATTR, INTERRUPTED
from optuna_rnn.study import make_pruner, open_session, run_trials

# Two parameters searched, so that the grid is small; the rest fixed.
SPACE = SearchSpace(
    cell="gru",
    hidden_size=IntRange(4, 8),
    num_layers=1,
    bidirectional=False,
    dropout=0.0,
    input_init="xavier_uniform",
    recurrent_init="orthogonal",
    optimizer="adam",
    lr=FloatRange(1e-3, 1e-2, log=True),
    weight_decay=0.0,
    beta1=0.9,
    beta2=0.999,
    batch_size=256,
    grad_clip=1.0,
)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_each_sampler_runs_past_its_start_up_trials(sampler: str, tmp_path: Path) -> None:
    given = {"dataset": DatasetSpec(name="digits"), "space": SPACE, "sampler": sampler, "seed": 0}
    given["max_epochs"] = 1
    session = open_session("s", storage=f"sqlite:///{tmp_path / 'o.db'}", given=given, create=True)
    # GP models the study after 10 random start-up trials; CMA-ES after 1
    run_trials(session, n_trials=12, device="cpu", progress=False)
    states = [t.state for t in session.study.trials]
    assert TrialState.FAIL not in states, [t.user_attrs.get("stop_reason") for t in session.study.trials]
    expected = 9 if sampler == "grid" else 12  # the grid holds 3 x 3 points
    assert sum(s in (TrialState.COMPLETE, TrialState.PRUNED) for s in states) == expected


@pytest.mark.parametrize("pruner", [p for p in PRUNERS if p != "median"])  # the default runs in most tests
def test_each_pruner_runs_a_study_reporting_every_epoch(pruner: str, tmp_path: Path) -> None:
    given = {"dataset": DatasetSpec(name="digits"), "space": SPACE, "pruner": pruner, "seed": 0}
    given["max_epochs"] = 4
    session = open_session("p", storage=f"sqlite:///{tmp_path / 'p.db'}", given=given, create=True)
    run_trials(session, n_trials=8, device="cpu", progress=False)
    trials = session.study.trials
    assert [t.state for t in trials if t.state not in (TrialState.COMPLETE, TrialState.PRUNED)] == []
    assert len(trials) == 8 and session.config.pruner == pruner
    for t in trials:  # each epoch trained was reported to the pruner, a pruned trial's last included
        assert sorted(t.intermediate_values) == list(range(1, t.user_attrs["epochs"] + 1))
    if pruner == "none":
        assert all(t.state == TrialState.COMPLETE for t in trials)


def test_the_default_pruner_judges_from_the_first_epoch_once_two_trials_completed() -> None:
    study = optuna.create_study(direction="maximize", pruner=make_pruner("median", max_epochs=10))
    study.add_trial(optuna.trial.create_trial(value=0.9, intermediate_values={1: 0.9}))
    running = study.ask()
    running.report(0.1, 1)  # a poor first epoch
    assert not running.should_prune()  # one completed trial: still starting up
    study.add_trial(optuna.trial.create_trial(value=0.8, intermediate_values={1: 0.8}))
    assert running.should_prune()  # two: the first epoch is judged, no warm-up beyond it
    better = study.ask()
    better.report(0.95, 1)
    assert not better.should_prune()


def test_a_trial_interrupted_after_the_total_was_reached_waits_for_a_larger_run(tmp_path: Path) -> None:
    given = {"dataset": DatasetSpec(name="digits"), "space": SPACE, "seed": 0, "max_epochs": 1}
    session = open_session("s", storage=f"sqlite:///{tmp_path / 'o.db'}", given=given, create=True)
    run_trials(session, n_trials=2, device="cpu", progress=False)
    # A worker stopped by a signal while the others finished the study's 2 trials.
    donor = session.study.trials[0]
    session.study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.FAIL,
            params=donor.params,
            distributions=donor.distributions,
            user_attrs={"stop_reason": INTERRUPTED, CHECKPOINT_ATTR: "trial-2"},
        )
    )
    checkpoint = session.checkpoints_dir / "trial-2.pt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"kept for the retry")
    run_trials(session, n_trials=2, device="cpu", progress=False)  # done already: nothing is queued
    assert [t.state for t in session.study.trials] == [*[TrialState.COMPLETE] * 2, TrialState.FAIL]
    assert checkpoint.exists()
    checkpoint.unlink()  # (a stand-in: the retry starts over when the file is gone)
    run_trials(session, n_trials=3, device="cpu", progress=False)  # a larger total retries it
    retry = session.study.trials[3]
    assert retry.state in (TrialState.COMPLETE, TrialState.PRUNED) and retry.system_attrs["failed_trial"] == 2
    assert retry.params == donor.params and len(session.study.trials) == 4


def test_a_grid_study_asked_for_more_stops_once_every_configuration_has_run(tmp_path: Path, capsys) -> None:
    # Adam, or SGD with one of two momenta: 3 configurations, 4 points of the product grid.
    space = SPACE.replace(
        hidden_size=4, lr=1e-2, optimizer=Choice(["adam", "sgd"]), momentum=Choice([0.5, 0.9]), nesterov=False
    )
    given = {"dataset": DatasetSpec(name="digits"), "space": space, "sampler": "grid", "seed": 0}
    given.update(max_epochs=1, pruner="none")
    session = open_session("g", storage=f"sqlite:///{tmp_path / 'o.db'}", given=given, create=True)
    run_trials(session, n_trials=10, device="cpu", progress=False)  # the sampler stops after its 4 points
    assert len(session.study.trials) == 4
    assert "every configuration of the grid has run" in capsys.readouterr().err  # said in the first run too
    assert (
        len({tuple(sorted(t.params.items())) for t in session.study.trials})
        == 3
        == session.space.gridded(task="classification").grid_size(task="classification")
    )
    assert session.grid_left() == 0
    run_trials(session, n_trials=10, device="cpu", progress=False)  # asked again: nothing is repeated
    assert len(session.study.trials) == 4
    assert "every configuration of the grid has run" in capsys.readouterr().err


def test_a_grid_study_whose_trial_failed_says_it_stops_short(tmp_path: Path, capsys, monkeypatch) -> None:
    space = SPACE.replace(
        hidden_size=4, lr=1e-2, optimizer=Choice(["adam", "sgd"]), momentum=0.5, nesterov=False
    )
    given = {"dataset": DatasetSpec(name="digits"), "space": space, "sampler": "grid", "seed": 0}
    given.update(max_epochs=1, pruner="none")
    session = open_session("g", storage=f"sqlite:///{tmp_path / 'o.db'}", given=given, create=True)
    fit = Trainer.fit

    def fails_once(self: Trainer, *args: object, **kwargs: object) -> object:
        monkeypatch.setattr(Trainer, "fit", fit)
        raise RuntimeError("out of memory")

    monkeypatch.setattr(Trainer, "fit", fails_once)
    with pytest.raises(RuntimeError, match="out of memory"):
        run_trials(session, n_trials=3, device="cpu", progress=False)
    run_trials(session, n_trials=3, device="cpu", progress=False)
    assert [t.state for t in session.study.trials] == [TrialState.FAIL, TrialState.COMPLETE]
    # Optuna's grid sampler counts the failed configuration as visited: the run stopped short silently
    assert session.grid_left() == 0
    assert (
        "every configuration of the grid has run (a failed one is not run again)" in capsys.readouterr().err
    )


def test_an_interrupted_grid_trial_runs_again(tmp_path: Path, capsys) -> None:
    space = SPACE.replace(
        hidden_size=4, lr=1e-2, optimizer=Choice(["adam", "sgd"]), momentum=0.5, nesterov=False
    )
    given = {"dataset": DatasetSpec(name="digits"), "space": space, "sampler": "grid", "seed": 0}
    given.update(max_epochs=1, pruner="none")
    session = open_session("g", storage=f"sqlite:///{tmp_path / 'o.db'}", given=given, create=True)
    run_trials(session, n_trials=1, device="cpu", progress=False)
    other = "sgd" if session.study.trials[0].params["optimizer"] == "adam" else "adam"
    session.study.add_trial(  # the other configuration's trial, stopped by a signal
        optuna.trial.create_trial(
            state=TrialState.FAIL,
            params={"optimizer": other},
            distributions={"optimizer": optuna.distributions.CategoricalDistribution(["adam", "sgd"])},
            user_attrs={"stop_reason": INTERRUPTED},
        )
    )
    assert session.grid_left() == 1  # to be queued again, not run: counted as run, it stopped the study short
    run_trials(session, n_trials=2, device="cpu", progress=False)
    done = [t for t in session.study.trials if t.state == TrialState.COMPLETE]
    assert sorted(t.params["optimizer"] for t in done) == ["adam", "sgd"]
    assert "stops short" not in capsys.readouterr().err


def test_a_grid_whose_last_configuration_runs_elsewhere_does_not_claim_to_stop_short(
    tmp_path: Path, capsys
) -> None:
    space = SPACE.replace(
        hidden_size=4, lr=1e-2, optimizer=Choice(["adam", "sgd"]), momentum=0.9, nesterov=False
    )
    given = {"dataset": DatasetSpec(name="digits"), "space": space, "sampler": "grid", "seed": 0}
    given.update(max_epochs=1, pruner="none")
    session = open_session("g", storage=f"sqlite:///{tmp_path / 'o.db'}", given=given, create=True)
    elsewhere = session.study.ask()  # another worker's trial takes one of the 2 configurations
    session.space.suggest(elsewhere, task="classification")
    run_trials(session, n_trials=2, device="cpu", progress=False)
    assert [t.state for t in session.study.trials] == [TrialState.RUNNING, TrialState.COMPLETE]
    assert "stops short" not in capsys.readouterr().err  # the running trial makes the total


def test_a_resumed_runs_progress_bar_counts_the_studys_pruned_trials(tmp_path: Path, capsys) -> None:
    given = {
        "dataset": DatasetSpec(name="digits"),
        "space": SPACE,
        "seed": 0,
        "max_epochs": 1,
        "pruner": "none",
    }
    session = open_session("p", storage=f"sqlite:///{tmp_path / 'o.db'}", given=given, create=True)
    run_trials(session, n_trials=1, device="cpu", progress=False)
    done = session.study.trials[0]
    session.study.add_trial(  # pruned by an earlier run
        optuna.trial.create_trial(
            state=TrialState.PRUNED,
            params=done.params,
            distributions=done.distributions,
            intermediate_values={1: 0.1},
        )
    )
    run_trials(session, n_trials=3, device="cpu", progress=True)  # one more, never pruned
    assert "pruned=1" in capsys.readouterr().err.splitlines()[-1]


def test_the_progress_bar_counts_other_workers_trials(tmp_path: Path, capsys) -> None:
    given = {"dataset": DatasetSpec(name="digits"), "space": SPACE, "seed": 0, "max_epochs": 1}
    session = open_session("w", storage=f"sqlite:///{tmp_path / 'o.db'}", given=given, create=True)

    def another_worker_finishes_one(study: optuna.Study, trial: FrozenTrial) -> None:
        if len(study.trials) == 1:
            study.add_trial(
                optuna.trial.create_trial(value=0.5, params=trial.params, distributions=trial.distributions)
            )

    run_trials(session, n_trials=3, device="cpu", progress=True, callbacks=[another_worker_finishes_one])
    assert len(session.study.trials) == 3
    assert " 3/3 " in capsys.readouterr().err.splitlines()[-1]


def test_a_seeded_study_repeats_with_its_resumes_and_trial_n_trains_with_seed_plus_n(tmp_path: Path) -> None:
    def two_runs(name: str) -> list[optuna.trial.FrozenTrial]:
        given = {"dataset": DatasetSpec(name="digits"), "space": SPACE, "seed": 3, "max_epochs": 1}
        url = f"sqlite:///{tmp_path / name}"
        run_trials(open_session("s", storage=url, given=given, create=True), n_trials=4, progress=False)
        resumed = open_session("s", storage=url, given=given, create=True)  # a second run: resumes
        run_trials(resumed, n_trials=8, device="cpu", progress=False)
        return resumed.study.trials

    first, again = two_runs("a.db"), two_runs("b.db")
    assert [t.params for t in first] == [t.params for t in again]
    assert [t.value for t in first] == [t.value for t in again]
    assert [t.user_attrs["seed"] for t in first] == [3 + n for n in range(8)]
    assert len({tuple(sorted(t.params.items())) for t in first}) == 8  # the resume did not replay draws


def test_a_grid_point_refused_as_surplus_runs_later_and_none_runs_twice(tmp_path: Path) -> None:
    from optuna_rnn.workers import SharedTotal, SurplusTrial

    space = SPACE.replace(hidden_size=Choice([4, 8]), lr=Choice([1e-3, 1e-2]))  # 4 configurations
    given = {"dataset": DatasetSpec(name="digits"), "space": space, "sampler": "grid", "seed": 0}
    given.update(max_epochs=1, pruner="none")
    session = open_session("g", storage=f"sqlite:///{tmp_path / 'o.db'}", given=given, create=True)
    study = session.study
    run_trials(session, n_trials=2, device="cpu", progress=False)
    late = study.ask()  # another worker raced past the total of 2: it holds grid point 2
    with pytest.raises(SurplusTrial, match="surplus: 2 trials were already finished or running"):
        SharedTotal(2).admit(study, late)
    study.tell(late, state=TrialState.FAIL)
    # The grid sampler counts a failed trial's point as visited: it used never to run.
    run_trials(session, n_trials=4, device="cpu", progress=False)
    finished = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(finished) == 4 and len({tuple(sorted(t.params.items())) for t in finished}) == 4
    assert session.grid_left() == 0
    # Once every point has run, a worker asking again is drawn a repeat: refused, and it stops.
    repeat = study.ask()  # Optuna logs that it is "re-evaluating a configuration"
    with pytest.raises(SurplusTrial, match="every configuration of the grid has run or is running"):
        SharedTotal(10).admit(study, repeat)


def test_two_workers_drawn_one_grid_point_at_once_leave_it_to_the_earlier_trial(tmp_path: Path) -> None:
    from optuna_rnn.workers import SharedTotal, SurplusTrial

    space = SPACE.replace(hidden_size=Choice([4, 8]), lr=1e-2)  # 2 configurations
    given = {"dataset": DatasetSpec(name="digits"), "space": space, "sampler": "grid", "seed": 0}
    given.update(max_epochs=1, pruner="none")
    study = open_session("g", storage=f"sqlite:///{tmp_path / 'o.db'}", given=given, create=True).study
    first, second, third = (study.ask() for _ in range(3))  # three workers ask before any starts
    holders = [t for t in (first, second) if study.trials[t.number].system_attrs["grid_id"]
               == study.trials[third.number].system_attrs["grid_id"]]  # fmt: skip
    total = SharedTotal(10)
    with pytest.raises(SurplusTrial, match="every configuration of the grid"):
        total.admit(study, third)
    for trial in (first, second):  # each used to refuse itself for the other: the point never ran
        total.admit(study, trial)
    assert len(holders) == 1


def test_a_grid_point_held_by_a_surplus_trial_and_a_later_one_is_queued_again(tmp_path: Path) -> None:
    from optuna_rnn.workers import SharedTotal, SurplusTrial

    space = SPACE.replace(hidden_size=Choice([4, 8]), lr=1e-2)  # 2 configurations
    given = {"dataset": DatasetSpec(name="digits"), "space": space, "sampler": "grid", "seed": 0}
    given.update(max_epochs=1, pruner="none")
    session = open_session("g", storage=f"sqlite:///{tmp_path / 'o.db'}", given=given, create=True)
    study = session.study
    run_trials(session, n_trials=1, device="cpu", progress=False)  # point 0
    both_asked, early_judged, late_judged = threading.Barrier(2), threading.Event(), threading.Event()
    total = SharedTotal(1)

    def two_workers_past_the_total(trial: optuna.Trial) -> float:
        both_asked.wait(timeout=30)  # each holds point 1: the later one was drawn it again
        if trial.number == 1:
            try:  # surplus: it used not to queue the point, since the later trial held it...
                total.admit(study, trial)
            finally:
                early_judged.set()
                late_judged.wait(timeout=30)  # still running while the later one is judged
        early_judged.wait(timeout=30)
        try:  # ...which is refused for the earlier one's sake
            total.admit(study, trial)
        finally:
            late_judged.set()
        return 0.0

    study.optimize(two_workers_past_the_total, n_trials=2, n_jobs=2, catch=(SurplusTrial,))
    refused = [t.user_attrs["stop_reason"] for t in study.trials[1:3]]
    assert all(reason.startswith("surplus") for reason in refused), refused
    run_trials(session, n_trials=2, device="cpu", progress=False)
    finished = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert sorted(t.params["hidden_size"] for t in finished) == [4, 8]
