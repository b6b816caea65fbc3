"""PruningSnapshot: the same verdicts as ``Trial.should_prune``, from a local copy of the study."""

from __future__ import annotations

import random
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from optuna_rnn import (
    Hyperparams,
    Objective,
    PruningCallback,
    PruningSnapshot,
    SearchSpace,
    Trainer,
    build_model,
    load_dataset,
)


def _curve(rng: random.Random, steps: int) -> dict[int, float]:
    level = rng.uniform(0.0, 1.0)
    return {step: level + rng.gauss(0.0, 0.1) for step in range(steps)}


def _sqlite_study(tmp_path: Path, pruner: optuna.pruners.BasePruner) -> optuna.Study:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    return optuna.create_study(study_name="s", storage=storage, direction="maximize", pruner=pruner)


@pytest.mark.parametrize(
    ("pruner", "direction"),
    [
        (optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1), "maximize"),
        (
            optuna.pruners.PercentilePruner(
                25.0, n_startup_trials=3, n_warmup_steps=0, interval_steps=2, n_min_trials=2
            ),
            "minimize",
        ),
        (optuna.pruners.ThresholdPruner(lower=0.3), "maximize"),
    ],
    ids=["median", "percentile-interval-min-trials", "threshold"],
)
def test_verdicts_match_should_prune_on_a_single_worker(
    tmp_path: Path, pruner: optuna.pruners.BasePruner, direction: str
) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=storage, direction=direction, pruner=pruner)
    snapshot = PruningSnapshot(study, max_age=3600)
    assert snapshot.supported
    rng = random.Random(0)
    verdicts = []
    for _ in range(12):
        trial = study.ask()
        reported: dict[int, float] = {}
        pruned = False
        for step, value in _curve(rng, 6).items():
            trial.report(value, step)
            reported[step] = value
            expected = trial.should_prune()
            assert snapshot.should_prune(trial, reported) == expected, (trial.number, step)
            verdicts.append(expected)
            if expected:
                pruned = True
                break
        snapshot.forget(trial)
        study.tell(trial, state=TrialState.PRUNED) if pruned else study.tell(trial, reported[5])
    assert True in verdicts and False in verdicts  # both kinds of verdict were compared


def test_values_stored_before_the_first_check_count(tmp_path: Path) -> None:
    # A retried trial inherits its earlier epochs' values; they are in the storage, not in ``reported``.
    study = _sqlite_study(tmp_path, optuna.pruners.MedianPruner(n_startup_trials=1))
    study.add_trial(create_trial(value=0.5, intermediate_values={0: 0.5, 1: 0.5, 2: 0.5}))
    trial = study.ask()
    trial.report(0.9, 0)  # best of the trial so far: above the median, so not pruned
    trial.report(0.1, 1)
    trial.report(0.1, 2)
    snapshot = PruningSnapshot(study)
    assert snapshot.should_prune(trial, {2: 0.1}) is False
    assert not trial.should_prune()


def test_other_workers_trials_count_within_max_age(tmp_path: Path) -> None:
    study = _sqlite_study(tmp_path, optuna.pruners.MedianPruner(n_startup_trials=1))
    study.add_trial(create_trial(value=0.1, intermediate_values={0: 0.1}))
    other_worker = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'study.db'}")
    stale = PruningSnapshot(study, max_age=3600)
    fresh = PruningSnapshot(study, max_age=0)

    trial = study.ask()
    trial.report(0.5, 0)
    assert not stale.should_prune(trial, {0: 0.5}) and not fresh.should_prune(trial, {0: 0.5})
    for _ in range(2):  # the median at step 0 moves from 0.1 to 0.9
        other_worker.add_trial(create_trial(value=0.9, intermediate_values={0: 0.9}))
    assert trial.should_prune()
    assert fresh.should_prune(trial, {0: 0.5})
    assert not stale.should_prune(trial, {0: 0.5})  # judged from its copy: the storage was not read
    stale.forget(trial)
    assert stale.should_prune(trial, {0: 0.5})  # a trial's first check always reads the storage again


def test_pruners_that_keep_state_in_the_storage_are_asked_through_optuna(tmp_path: Path) -> None:
    study = _sqlite_study(tmp_path, optuna.pruners.HyperbandPruner(min_resource=1, max_resource=9))
    snapshot = PruningSnapshot(study)
    assert not snapshot.supported
    trial = study.ask()
    trial.report(0.5, 1)
    assert snapshot.should_prune(trial, {1: 0.5}) is False
    # Optuna's own check ran: successive halving recorded the trial's rung in the storage
    assert any("completed_rung" in key for key in study.trials[0].system_attrs)
    assert PruningSnapshot(optuna.create_study(pruner=optuna.pruners.MedianPruner())).supported


def test_negative_max_age_is_refused() -> None:
    with pytest.raises(ValueError, match="max_age must be >= 0"):
        PruningSnapshot(optuna.create_study(), max_age=-1)


@pytest.mark.parametrize("background", [False, True])
def test_pruning_callback_with_a_snapshot_prunes_a_poor_trial(tmp_path: Path, background: bool) -> None:
    data = load_dataset("digits")
    study = _sqlite_study(tmp_path, optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0))
    study.add_trial(create_trial(value=1.0, intermediate_values={step: 1.0 for step in range(1, 5)}))
    snapshot = PruningSnapshot(study)
    hp = Hyperparams(cell="gru", hidden_size=4, batch_size=256)

    def objective(trial: optuna.Trial) -> float:
        model = build_model(hp, input_size=data.input_size, output_size=data.output_size)
        callback = PruningCallback(trial, background=background, snapshot=snapshot)
        return (
            Trainer(max_epochs=4, seed=0, device="cpu").fit(model, data, hp, callbacks=[callback]).best_value
        )

    study.optimize(objective, n_trials=1)
    trial = study.trials[1]
    assert trial.state == TrialState.PRUNED  # no accuracy reaches the completed trial's 1.0
    assert min(trial.intermediate_values) == 1
    assert snapshot._copy is not None  # judged against the snapshot, not by should_prune
    assert not snapshot._stored  # the callback let go of the finished trial


def test_the_copy_does_not_announce_itself(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    study = _sqlite_study(tmp_path, optuna.pruners.MedianPruner())
    trial = study.ask()
    trial.report(0.5, 0)
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.INFO)
    optuna.logging.enable_propagation()  # Optuna's records reach caplog only through propagation
    try:
        with caplog.at_level("INFO"):
            optuna.create_study()  # the records do get here: a study of our own is announced
            assert "created in memory" in caplog.text
            caplog.clear()
            PruningSnapshot(study).should_prune(trial, {0: 0.5})
        assert "created in memory" not in caplog.text
        assert optuna.logging.get_verbosity() == optuna.logging.INFO  # left alone
    finally:
        optuna.logging.disable_propagation()
        optuna.logging.set_verbosity(before)


def test_a_step_reported_twice_counts_with_its_first_value(tmp_path: Path) -> None:
    # A retry that restarts before its inherited epochs reports them again; Optuna keeps the first value.
    study = _sqlite_study(tmp_path, optuna.pruners.MedianPruner(n_startup_trials=1))
    study.add_trial(create_trial(value=0.5, intermediate_values={1: 0.5}))
    trial = study.ask()
    trial.report(0.9, 1)  # inherited
    with pytest.warns(UserWarning, match="already reported"):
        trial.report(0.1, 1)  # reported again by the retry: ignored by Optuna
    assert not trial.should_prune()
    assert not PruningSnapshot(study).should_prune(trial, {1: 0.1})


def test_subclasses_of_read_only_pruners_are_asked_through_optuna(tmp_path: Path) -> None:
    class ByName(optuna.pruners.MedianPruner):
        def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
            return bool(study.user_attrs.get("stop")) and trial.number >= 0

    study = _sqlite_study(tmp_path, ByName())
    study.set_user_attr("stop", True)
    snapshot = PruningSnapshot(study)
    trial = study.ask()
    trial.report(0.5, 0)
    assert not snapshot.supported
    assert snapshot.should_prune(trial, {0: 0.5})  # the copy has no user attrs: only Optuna can say so


def test_the_objective_judges_with_one_snapshot_per_study(tmp_path: Path) -> None:
    data = load_dataset("digits")
    space = SearchSpace(cell="gru", hidden_size=4, num_layers=1, bidirectional=False, batch_size=256)
    objective = Objective(data, space=space, max_epochs=3, patience=None, device="cpu", seed=0)
    study = _sqlite_study(tmp_path, optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0))
    study.add_trial(create_trial(value=1.0, intermediate_values={1: 1.0, 2: 1.0, 3: 1.0}))
    study.optimize(objective, n_trials=2)
    assert [t.state for t in study.trials[1:]] == [TrialState.PRUNED, TrialState.PRUNED]
    assert objective._snapshot is not None and objective._snapshot.study is study
    assert objective._snapshot._copy is not None  # the snapshot judged them
    assert not objective._snapshot._stored  # each trial let go of its values when it ended
