"""Every sampler the command offers runs a study to the end: its model fits, its imports exist."""

from __future__ import annotations

from pathlib import Path

import pytest
from optuna.trial import TrialState

from optuna_rnn import DatasetSpec, FloatRange, IntRange, SearchSpace
from optuna_rnn.config import SAMPLERS
from optuna_rnn.study import open_session, run_trials

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
