from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import optuna
import pytest
import tomllib
import torch

from optuna_rnn import (
    Choice,
    FloatRange,
    Hyperparams,
    IntRange,
    Objective,
    SearchSpace,
    Trainer,
    UsageError,
    build_model,
    load_dataset,
)
from optuna_rnn.data import ForecastSeries, fit_space
from optuna_rnn.datasets import DatasetSpec
from optuna_rnn.study import open_session
from tests.conftest import TINY_SPACE


def sample(space: SearchSpace, n: int = 40, task: str = "classification") -> list[optuna.trial.FrozenTrial]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: (space.suggest(t, task=task), 0.0)[1], n_trials=n)  # type: ignore[arg-type]
    return study.trials


def test_conditional_parameters_only_where_they_apply() -> None:
    for trial in sample(SearchSpace(), n=60):
        params = trial.params
        assert ("forget_bias" in params) == (params["cell"] == "lstm")
        assert ("momentum" in params) == (params["optimizer"] == "sgd")
        assert ("nesterov" in params) == (params["optimizer"] == "sgd")
        assert ("beta1" in params) == (params["optimizer"] in ("adam", "adamw"))
        assert ("rmsprop_alpha" in params) == (params["optimizer"] == "rmsprop")
        assert "window" not in params


def test_window_is_sampled_for_forecasting_only() -> None:
    trials = sample(SearchSpace(window=IntRange(5, 9)), n=10, task="forecasting")
    assert all(5 <= t.params["window"] <= 9 for t in trials)


def test_fixed_and_narrowed_parameters() -> None:
    space = SearchSpace(cell="gru", hidden_size=IntRange(8, 16), optimizer=Choice(["sgd"]), grad_clip=None)
    for trial in sample(space, n=15):
        assert "cell" not in trial.params and "optimizer" not in trial.params
        assert 8 <= trial.params["hidden_size"] <= 16
        hp = space.hyperparams_from(trial.params, task="classification")
        assert hp.cell == "gru" and hp.optimizer == "sgd" and hp.grad_clip is None


def test_hyperparams_roundtrip_from_trial_params() -> None:
    space = SearchSpace()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    trial = study.ask()
    hp = space.suggest(trial)
    assert space.hyperparams_from(trial.params, task="classification") == hp
    assert Hyperparams(**hp.to_dict()) == hp


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"lr": FloatRange(0.1, 0.01)}, "lr: empty range, low 0.1 > high 0.01"),
        ({"hidden_size": IntRange(0, 8, log=True)}, "hidden_size: a log range needs low > 0"),
        ({"cell": Choice(["lstm", "transformer"])}, "cell: 'transformer' is not one of"),
        ({"dropout": 1.5}, "dropout: 1.5 is outside the allowed"),
        ({"optimizer": Choice([])}, "optimizer: a choice needs at least one option"),
        ({"num_layers": FloatRange(1, 2)}, "num_layers"),
        ({"hidden_size": IntRange(16, 64, log=True, step=2)}, "hidden_size: a log range cannot have a step"),
        ({"lr": [1e-3, 1e-2]}, r"lr: expected a number, got \[0.001, 0.01\]; in Python give Choice"),
    ],
)
def test_impossible_spaces_are_clear_errors(changes: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        SearchSpace(**changes)


def test_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "space.toml"
    path.write_text(
        '[space]\ncell = "lstm"\nhidden_size = {low = 8, high = 32, log = true}\n'
        'batch_size = [16, 32]\ngrad_clip = "none"\n'
    )
    space = SearchSpace.from_toml(path)
    assert space.cell == "lstm"
    assert space.hidden_size == IntRange(8, 32, log=True)
    assert space.batch_size == Choice([16, 32])
    assert space.grad_clip is None
    assert SearchSpace.from_dict(space.to_dict()) == space


def test_toml_errors_name_file_and_parameter(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("lr = {low = 0.1, high = 0.001, log = true}\n")
    with pytest.raises(UsageError, match=r"bad.toml: lr: empty range"):
        SearchSpace.from_toml(path)
    path.write_text("learning_rate = 0.1\n")
    with pytest.raises(UsageError, match=r"bad.toml: unknown hyperparameter 'learning_rate'"):
        SearchSpace.from_toml(path)
    path.write_text("lr = [\n")
    with pytest.raises(UsageError, match="not valid TOML"):
        SearchSpace.from_toml(path)
    with pytest.raises(UsageError, match="not found"):
        SearchSpace.from_toml(tmp_path / "missing.toml")
    with pytest.raises(UsageError, match=r"cannot read the search-space file \(Is a directory\)"):
        SearchSpace.from_toml(tmp_path)
    path.write_text('cell = "gru"\n[space]\nlr = 0.01\n')  # cell would silently be searched
    with pytest.raises(UsageError, match=r"bad.toml: 'cell' outside the \[space\] table would be ignored"):
        SearchSpace.from_toml(path)
    path.write_bytes('# réglage\ncell = "gru"\n'.encode())  # UTF-8 whatever the locale
    assert SearchSpace.from_toml(path).cell == "gru"


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            'optimizer = "adamw"\nweight_decay = 1e-4\n',
            r"weight_decay would have no effect: only sgd, adam and ",
        ),
        ('cell = "gru"\nforget_bias = 1.0\n', "forget_bias would have no effect: only the lstm cell uses"),
        (
            'optimizer = ["adam", "adamw"]\nmomentum = 0.9\n',
            "this space's cell is lstm or gru or rnn and its optimizer adam or adamw",
        ),
    ],
)
def test_a_new_study_refuses_a_parameter_no_optimiser_or_cell_uses(tmp_path: Path, toml, message) -> None:
    # fixing weight_decay for AdamW (which reads adamw_weight_decay) used to change nothing, silently
    path = tmp_path / "unused.toml"
    path.write_text(toml)
    given = {"dataset": DatasetSpec(name="digits"), "space": SearchSpace.from_toml(path), "max_epochs": 1}
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    with pytest.raises(UsageError, match="--space: .*" + message):
        open_session("s", storage=storage, given=given, create=True)
    assert not (tmp_path / "o.db").exists()  # refused before a database was made
    optuna.create_study(study_name="other", storage=storage)  # an existing storage: refused there too
    with pytest.raises(UsageError, match=message):
        open_session("s", storage=storage, given=given, create=True)
    path.write_text('optimizer = ["sgd", "adamw"]\nmomentum = 0.9\nforget_bias = 1.0\n')  # some use them
    assert SearchSpace.from_toml(path).momentum == 0.9


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("batch_size = [32, 32.0]\n", "batch_size: 32 is listed twice; list each option once"),
        ('cell = ["lstm", "gru", "lstm"]\n', "cell: 'lstm' is listed twice"),
        (  # Optuna used to warn, in its own words, and stop at 96
            "batch_size = {low = 32, high = 100, step = 32}\n",
            r"batch_size: steps of 32 from 32 never reach 100; write high = 96",
        ),
    ],
)
def test_a_new_study_refuses_an_option_listed_twice_or_a_step_short_of_high(
    tmp_path: Path, toml: str, message: str
) -> None:
    # A grid used to run such a configuration twice, and one more time at every later run.
    path = tmp_path / "twice.toml"
    path.write_text(toml)
    given = {"dataset": DatasetSpec(name="digits"), "space": SearchSpace.from_toml(path), "max_epochs": 1}
    with pytest.raises(UsageError, match=f"--space: {message}"):
        open_session("s", storage=f"sqlite:///{tmp_path / 'o.db'}", given=given, create=True)
    assert not (tmp_path / "o.db").exists()


def test_a_study_made_before_the_new_study_checks_resumes_with_its_space_file(tmp_path: Path) -> None:
    path = tmp_path / "old.toml"
    path.write_text(
        'cell = "gru"\nhidden_size = 4\nnum_layers = 1\noptimizer = "adamw"\nweight_decay = 1e-4\n'
        "batch_size = [32, 32]\n"
    )
    given = {"dataset": DatasetSpec(name="digits"), "space": SearchSpace.from_toml(path), "max_epochs": 1}
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    with pytest.MonkeyPatch.context() as patch:  # as an earlier version created it
        patch.setattr(SearchSpace, "refuse_for_new_study", lambda self: None)
        open_session("old", storage=storage, given=given, create=True)
    resumed = open_session("old", storage=storage, given=given, create=True)  # the same command again
    assert resumed.config.space.weight_decay == 1e-4


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('hidden_size = {low = "a", high = 64}', "hidden_size: 'low' must be a number, got 'a'"),
        ("num_layers = {low = 1, high = 2.5}", "num_layers: 'high' must be a whole number, got 2.5"),
        ('hidden_size = {low = 8, high = 64, log = "false"}', "hidden_size: 'log' must be true or false"),
        ("lr = {low = 0.001, high = 0.1, step = 0.01}", "lr: 'step' applies to integer ranges only"),
        ("hidden_size = {low = 16, high = 64, log = true, step = 2}", "hidden_size: a log range cannot"),
        ("batch_size = {low = 16, high = 64, step = 1.5}", "batch_size: 'step' must be a whole number"),
        ("hidden_size = {low = 32, high = 64, lg = true}", "hidden_size: unknown key 'lg' in a range"),
        ('bidirectional = "yes"', "bidirectional: 'yes' is neither true nor false"),
    ],
)
def test_range_tables_are_checked_not_coerced(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml + "\n")
    with pytest.raises(UsageError, match=f"bad.toml: {message}"):
        SearchSpace.from_toml(path)


def test_grid_covers_choices_and_range_points() -> None:
    grid = SearchSpace(
        hidden_size=IntRange(8, 32, log=True),
        lr=FloatRange(1e-3, 1e-1, log=True),
        input_init="xavier_uniform",
        optimizer="adam",
        dropout=0.0,
        weight_decay=0.0,
    ).grid(task="classification")
    assert grid["hidden_size"] == [8, 16, 32]
    assert grid["lr"] == pytest.approx([1e-3, 1e-2, 1e-1])
    assert grid["cell"] == ["lstm", "gru", "rnn"]
    assert "window" not in grid and "momentum" not in grid  # cannot apply: classification, Adam only


def test_a_grid_counts_conditional_parameters_only_where_they_apply() -> None:
    names = [name for name in SearchSpace.param_names() if name != "adamw_weight_decay"]  # no adamw here
    defaults = {name: getattr(Hyperparams(), name) for name in names}
    fixed = SearchSpace(**{name: value for name, value in defaults.items() if value is not None})
    space = fixed.replace(
        cell=Choice(["lstm", "gru"]),
        forget_bias=Choice([0.0, 1.0]),
        optimizer=Choice(["adam", "sgd"]),
        momentum=FloatRange(0.5, 0.9),
        beta1=Choice([0.8, 0.9]),
        window=IntRange(8, 64, log=True),
    )
    grid = space.gridded(task="classification")
    assert grid.momentum == Choice([0.5, 0.7, 0.9]) and grid.window == Choice([8, 23, 64])
    # lstm: 2 forget biases x (adam: 2 beta1 + sgd: 3 momenta); gru: 1 x (2 + 3)
    assert grid.grid_size(task="classification") == 2 * 5 + 5
    assert grid.grid_size(task="forecasting") == 15 * 3
    product = space.grid(task="classification")  # what the grid sampler walks
    assert math.prod(len(values) for values in product.values()) == 2 * 2 * 2 * 3 * 2


def test_grid_points_of_a_range_narrower_than_their_rounding_are_one_point() -> None:
    grid = SearchSpace(dropout=FloatRange(0.1, 0.1000001)).gridded(task="classification")
    assert grid.dropout == 0.1  # three points rounded to the same value used to be three configurations


def test_grid_too_large_is_a_clear_error() -> None:
    with pytest.raises(UsageError, match=r"the grid over this space has [\d,]+ points"):
        SearchSpace().grid(task="classification")


def test_grid_points_of_a_stepped_range_are_on_its_steps() -> None:
    space = SearchSpace(batch_size=IntRange(32, 250, step=32), hidden_size=IntRange(16, 128, step=16))
    grid = space.replace(cell="gru", optimizer="adam", input_init="normal").grid(task="classification")
    assert grid["batch_size"] == [32, 128, 224]  # 250 is not on a step: Optuna's top value is 224
    assert grid["hidden_size"] == [16, 80, 128]
    assert grid["dropout"] == [0.0, 0.25, 0.5]


def test_whole_number_floats_of_integer_parameters_become_ints(tmp_path: Path) -> None:
    path = tmp_path / "space.toml"
    path.write_text("hidden_size = 16.0\nbatch_size = [64.0, 128.0]\nnum_layers = 1\n")
    space = SearchSpace.from_toml(path)
    assert space.hidden_size == 16 and type(space.hidden_size) is int
    assert space.batch_size == Choice([64, 128])
    hp = space.suggest(optuna.create_study().ask())
    assert type(hp.hidden_size) is int and type(hp.batch_size) is int


def test_window_cannot_be_switched_off() -> None:
    with pytest.raises(UsageError, match="window: cannot be switched off"):
        SearchSpace(window=None)
    with pytest.raises(UsageError, match="window: cannot be switched off"):
        SearchSpace.from_dict({"window": "none"})


def test_a_window_choice_is_narrowed_to_what_the_series_serves() -> None:
    series = ForecastSeries(name="s", values=np.arange(100.0))  # 70 training rows: windows up to 54
    assert fit_space(SearchSpace(window=Choice([8, 32, 64])), series).window == Choice([8, 32])
    with pytest.raises(UsageError, match="s: 100 rows are too few for window 64"):
        fit_space(SearchSpace(window=Choice([64, 128])), series)


def test_a_stepped_window_range_is_narrowed_onto_its_step_grid() -> None:
    series = ForecastSeries(name="s", values=np.arange(100.0))  # windows up to 54
    assert fit_space(SearchSpace(window=IntRange(8, 64, step=8)), series).window == IntRange(8, 48, step=8)
    assert fit_space(SearchSpace(window=IntRange(8, 64)), series).window == IntRange(8, 54)


def test_numpy_values_are_taken_as_the_python_values_they_hold() -> None:
    space = SearchSpace(
        hidden_size=Choice(np.array([16, 32])),
        num_layers=np.int64(1),  # type: ignore[arg-type]
        batch_size=IntRange(np.int64(32), np.int64(64)),  # type: ignore[arg-type]
        bidirectional=Choice([np.False_, np.True_]),  # type: ignore[list-item]
        lr=FloatRange(np.float32(1e-3), np.float64(1e-2)),  # type: ignore[arg-type]
    )
    assert json.loads(json.dumps(space.to_dict()))["hidden_size"] == [16, 32]
    assert type(space.num_layers) is int and space.bidirectional == Choice([False, True])
    hp = Hyperparams(hidden_size=np.int64(8), dropout=np.float32(0.25))  # type: ignore[arg-type]
    assert type(hp.hidden_size) is int and json.dumps(hp.to_dict())


def test_hyperparams_built_by_hand_are_checked_like_a_space() -> None:
    with pytest.raises(UsageError, match="cell: 'LSTM' is not one of lstm, gru, rnn"):
        Hyperparams(cell="LSTM")
    with pytest.raises(UsageError, match=r"batch_size: 0 is outside the allowed \[1,"):
        Hyperparams(batch_size=0)
    with pytest.raises(UsageError, match="dropout: expected a number, got '0.1'"):
        Hyperparams(dropout="0.1")  # type: ignore[arg-type]
    assert Hyperparams(window=16, grad_clip=None).window == 16


def test_an_objective_refuses_a_study_that_would_keep_its_worst_model() -> None:
    digits = load_dataset("digits")
    objective = Objective(digits, space=SearchSpace(cell="gru", hidden_size=4), max_epochs=1, device="cpu")
    study = optuna.create_study()  # minimises by default; accuracy is to be maximised
    with pytest.raises(
        UsageError, match=r"accuracy is to maximize: create the study with direction='maximize'"
    ):
        study.optimize(objective, n_trials=1)
    assert (
        study.trials[0].state == optuna.trial.TrialState.FAIL and "epochs" not in study.trials[0].user_attrs
    )


def test_an_objective_and_a_loaded_model_leave_the_callers_random_state_alone(tmp_path: Path) -> None:
    from optuna_rnn.artifacts import download_model_payload, model_from_payload

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    (tmp_path / "models").mkdir()
    store = optuna.artifacts.FileSystemArtifactStore(str(tmp_path / "models"))
    space = SearchSpace(cell="gru", hidden_size=4, num_layers=1, batch_size=256, dropout=0.2)
    objective = Objective(
        load_dataset("digits"), space=space, max_epochs=1, device="cpu", seed=0, artifacts=store
    )
    study = optuna.create_study(direction=objective.direction)
    study.optimize(objective, n_trials=1)
    model_from_payload(download_model_payload(store, study.best_trial))
    assert torch.equal(torch.rand(3), expected)  # as if neither had run


def test_a_retry_does_not_report_again_the_epochs_it_inherited() -> None:
    from optuna_rnn.recovery import retry_callback

    space = SearchSpace(cell="gru", hidden_size=4, num_layers=1, batch_size=256)
    objective = Objective(
        load_dataset("digits"), space=space, max_epochs=3, patience=None, device="cpu", seed=0
    )
    study = optuna.create_study(direction=objective.direction, pruner=optuna.pruners.NopPruner())
    study.optimize(objective, n_trials=1)
    done = study.trials[0]
    assert sorted(done.intermediate_values) == [1, 2, 3]
    study.add_trial(  # a trial interrupted after its 3 epochs, as a stopped worker leaves it
        optuna.trial.create_trial(
            state=optuna.trial.TrialState.FAIL,
            params=done.params,
            distributions=done.distributions,
            user_attrs={"seed": done.user_attrs["seed"]},
            intermediate_values=done.intermediate_values,
        )
    )
    retry_callback()(study, study.trials[1])
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        study.optimize(objective, n_trials=1)  # retrains epochs 1-3 (no checkpoint here)
    assert not [w for w in seen if "already reported" in str(w.message)]
    retried = study.trials[2]
    assert retried.state == optuna.trial.TrialState.COMPLETE
    assert retried.intermediate_values == done.intermediate_values  # the first values count


def test_the_trainer_says_how_to_train_on_a_forecasting_series() -> None:
    series = load_dataset("sunspots")
    hp = SearchSpace(cell="gru", hidden_size=4).suggest(optuna.create_study().ask(), task=series.task)
    model = build_model(hp, input_size=series.input_size, output_size=1, task=series.task)
    with pytest.raises(
        TypeError,
        match=r"into samples first: data.windowed\(hp.window, forecast=hp.forecast\)",
    ):
        Trainer(max_epochs=1, device="cpu").fit(model, series, hp)  # type: ignore[arg-type]
    samples = series.windowed(hp.window, forecast=hp.forecast)
    assert Trainer(max_epochs=1, device="cpu").fit(model, samples, hp).epochs == 1


def test_an_objective_used_directly_draws_only_windows_the_series_serves() -> None:
    series = ForecastSeries(name="s", values=np.sin(np.arange(100.0) / 5))  # windows up to 54
    space = SearchSpace.from_dict(tomllib.loads(TINY_SPACE)).replace(window=IntRange(4, 128))
    objective = Objective(series, space=space, max_epochs=1, patience=None, device="cpu", seed=0)
    assert objective.space.window == IntRange(4, 54)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=6)  # a longer window would stop the study with UsageError
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    assert len(study.trials) == 6 and all(t.state in finished for t in study.trials)
    assert max(t.params["window"] for t in study.trials) > 12


def test_adamw_samples_its_decoupled_decay_on_its_own_larger_range() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    space = SearchSpace()
    seen: dict[str, list[float]] = {"adamw": [], "other": []}
    for _ in range(60):
        trial = study.ask()
        hp = space.suggest(trial)
        study.tell(trial, 0.0)
        if hp.optimizer == "adamw":
            assert "weight_decay" not in trial.params
            assert hp.weight_decay == trial.params["adamw_weight_decay"]
            seen["adamw"].append(hp.weight_decay)
        else:
            assert "adamw_weight_decay" not in trial.params
            assert hp.weight_decay == trial.params["weight_decay"]
            seen["other"].append(hp.weight_decay)
    assert seen["adamw"] and all(1e-4 <= wd <= 1e-1 for wd in seen["adamw"])
    assert seen["other"] and all(1e-8 <= wd <= 1e-3 for wd in seen["other"])
    # fixing the L2 penalty leaves AdamW's decay searched, and the other way round
    fixed = {k: v for k, v in Hyperparams().to_dict().items() if v is not None and k != "optimizer"}
    grid = SearchSpace(**fixed, optimizer=Choice(["adam", "adamw"])).grid(task="classification", points=2)
    assert grid == {"optimizer": ["adam", "adamw"], "adamw_weight_decay": pytest.approx([1e-4, 1e-1])}


def test_a_trial_recorded_before_adamw_had_its_own_decay_still_rebuilds() -> None:
    params = {"cell": "gru", "optimizer": "adamw", "weight_decay": 1e-4}
    fixed = {k: v for k, v in Hyperparams().to_dict().items() if v is not None and k not in params}
    hp = SearchSpace(**fixed).hyperparams_from(params, task="classification")
    assert hp.optimizer == "adamw" and hp.weight_decay == 1e-4
