"""Run one study under an epoch budget and return its best-so-far curve (used by two sections).

The budget is total training epochs, not trials: a pruned trial costs only the epochs it ran.
Each run uses a temporary journal-file storage and the package's own objective, seeded, so
(dataset, method, seed) triples are paired across methods.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from optuna_rnn import Choice, DatasetSpec, SearchSpace
from optuna_rnn.artifacts import ranked_complete
from optuna_rnn.study import FINISHED, open_session

# method -> (sampler, pruner) as `optuna-rnn run` names them
METHODS: dict[str, tuple[str, str]] = {
    "default (tpe + median)": ("tpe", "median"),
    "tpe, no pruning": ("tpe", "none"),
    "random": ("random", "none"),
    "grid": ("grid", "none"),
}


# The grid a user would start from: the few parameters people grid over, the rest fixed.
GRID_SPACE = SearchSpace(
    cell=Choice(["lstm", "gru"]),
    hidden_size=Choice([32, 64, 128]),
    num_layers=Choice([1, 2]),
    lr=Choice([1e-3, 3e-3, 1e-2]),
    dropout=Choice([0.0, 0.25]),
    window=Choice([8, 16, 32]),
    bidirectional=False,
    input_init="xavier_uniform",
    recurrent_init="orthogonal",
    forget_bias=1.0,
    optimizer="adam",
    weight_decay=0.0,
    beta1=0.9,
    beta2=0.999,
    batch_size=64,
    grad_clip=1.0,
)


@dataclass(frozen=True)
class BudgetRun:
    dataset: str
    method: str
    seed: int
    direction: str
    curve: list[tuple[int, float]]  # (epochs spent so far, best validation value so far)
    trials: int
    pruned: int
    best_params: dict[str, Any]
    all_params: list[dict[str, Any]]
    test_value: float | None
    states: list[str] = field(default_factory=list)  # each trial's final state, by trial number
    best_number: int | None = None

    def best_at(self, epochs: float) -> float:
        """Best validation value after at most ``epochs`` epochs (NaN before the first trial)."""
        value = math.nan
        for spent, best in self.curve:
            if spent > epochs:
                break
            value = best
        return value


def run_budget(
    dataset: str,
    method: str,
    seed: int,
    *,
    budget: int,
    max_epochs: int,
    enqueue: list[dict[str, Any]] | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
) -> BudgetRun:
    """Run trials until ``budget`` epochs are spent; ``enqueue`` replays fixed params in order.

    ``pruner`` replaces the method's pruner (to compare settings the command line does not name).
    """
    import torch

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    sampler, default_pruner = METHODS.get(method, ("tpe", "none"))
    given = {
        "dataset": DatasetSpec(name=dataset),
        "sampler": sampler,
        "pruner": default_pruner,
        "seed": seed,
        "max_epochs": max_epochs,
    }
    if sampler == "grid":
        given["space"] = GRID_SPACE
    with tempfile.TemporaryDirectory() as tmp:
        session = open_session("budget", storage=str(Path(tmp) / "s.log"), given=given, create=True)
        study = session.study
        if pruner is not None:
            study.pruner = pruner
        for params in enqueue or []:
            study.enqueue_trial(params)
        objective = session.objective(device="cpu")
        spent = [0]
        curve: list[tuple[int, float]] = []
        within: set[int] = set()  # trials finished within the budget
        better = objective.metric.better

        def account(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            spent[0] += int(trial.user_attrs.get("epochs", 0))
            best = curve[-1][1] if curve else objective.metric.worst
            if trial.state == TrialState.COMPLETE and trial.value is not None and better(trial.value, best):
                best = trial.value
            curve.append((spent[0], best))
            if spent[0] <= budget:
                within.add(trial.number)
            if spent[0] >= budget or (enqueue is not None and trial.number + 1 >= len(enqueue)):
                study.stop()

        study.optimize(objective, callbacks=[account])
        # The trial that crossed the budget ran epochs past it: like the curve's values at the
        # budget, the best trial, its test metric and the trial count stop before it.
        trials = [t for t in study.get_trials(deepcopy=False, states=FINISHED) if t.number in within]
        ordered = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
        best = next((t for t in ranked_complete(study) if t.number in within), None)
        return BudgetRun(
            dataset=dataset,
            method=method,
            seed=seed,
            direction=objective.direction,
            curve=curve,
            trials=len(trials),
            pruned=sum(t.state == TrialState.PRUNED for t in trials),
            best_params=best.params if best else {},
            all_params=[t.params for t in ordered],
            test_value=session.test_value(best) if best else None,
            states=[t.state.name for t in ordered],
            best_number=best.number if best else None,
        )
