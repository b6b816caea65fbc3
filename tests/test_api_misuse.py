"""The Python API refuses what would otherwise give wrong numbers without a word."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch

import optuna_rnn
from optuna_rnn import (
    ForecastSeries,
    Hyperparams,
    KeepTopModels,
    Objective,
    SearchSpace,
    Trainer,
    build_model,
    load_model_file,
)
from optuna_rnn.artifacts import in_original_units, model_payload
from optuna_rnn.errors import UsageError
from optuna_rnn.training import metric_for

HP = Hyperparams(cell="gru", hidden_size=4, num_layers=1, window=6, batch_size=64)


@pytest.fixture(scope="module")
def forecaster() -> tuple[torch.nn.Module, torch.nn.Module, object]:
    """A forecaster trained on a load series with two covariates, and the model its file loads to."""
    rng = np.random.default_rng(0)
    values = np.cumsum(rng.normal(size=(160, 3)), axis=0) * 50 + 700  # temperature, humidity, load
    series = ForecastSeries(name="load", values=values, columns=("temperature", "humidity", "load"))
    data = series.windowed(HP.window)
    torch.manual_seed(0)
    net = build_model(HP, input_size=3, output_size=1, task="forecasting")
    Trainer(max_epochs=1, device="cpu", seed=0).fit(net, data, HP)
    payload = model_payload(
        net,
        HP,
        input_size=3,
        output_size=1,
        task="forecasting",
        classes=None,
        target_scale=data.target_scale,
        target_mean=data.target_mean,
        input_mean=list(data.input_mean),
        input_std=list(data.input_std),
    )
    return net, in_original_units(payload), data


def test_a_loaded_model_refuses_input_with_other_channels_than_it_was_trained_on(forecaster) -> None:
    _, loaded, _ = forecaster
    assert loaded(torch.full((2, 6, 3), 700.0)).shape == (2, 1)
    # the target column alone used to broadcast over all three channels and answer wrongly
    for shape in ((2, 6, 1), (2, 6), (2, 6, 4)):
        with pytest.raises(ValueError, match=r"reads input shaped \(batch, time, 3\): 3 channels"):
            loaded(torch.full(shape, 700.0))


@pytest.mark.parametrize(
    ("lengths", "message"),
    [
        ([0, 3], r"lengths must lie in 1\.\.6 \(the batch's time steps\), got 0\.\.3"),
        ([7, 3], r"got 3\.\.7"),
        ([3], r"one whole number per sequence \(2\), got shape \(1,\)"),
        ([2.5, 3.0], "one whole number per sequence"),
    ],
)
def test_a_loaded_model_refuses_lengths_outside_its_batch(forecaster, lengths, message) -> None:
    _, loaded, _ = forecaster
    with pytest.raises(ValueError, match=message):
        loaded(torch.full((2, 6, 3), 700.0), lengths)
    assert loaded(torch.full((2, 6, 3), 700.0), [6, 3]).shape == (2, 1)  # a plain list will do


def test_a_loaded_model_tells_what_its_file_knows(forecaster) -> None:
    _, loaded, _ = forecaster
    assert loaded.task == "forecasting" and loaded.classes is None
    assert loaded.hyperparams == HP and loaded.hyperparams.window == 6


def test_the_trainer_scores_a_loaded_model_as_the_network_it_wraps(forecaster) -> None:
    net, loaded, data = forecaster
    trainer = Trainer(device="cpu")
    # the wrapper standardised the already standardised data a second time: an RMSE many times off
    assert trainer.evaluate(loaded, data, "valid") == pytest.approx(trainer.evaluate(net, data, "valid"))
    assert torch.equal(trainer.predict(loaded, data.valid), trainer.predict(net, data.valid))
    with pytest.raises(TypeError, match="predict takes a Split such as data.test, got SequenceData"):
        trainer.predict(net, data)


def test_a_task_not_spelt_right_is_refused() -> None:
    with pytest.raises(
        UsageError, match="task must be 'classification' or 'forecasting', got 'clasification'"
    ):
        metric_for("clasification")  # used to mean forecasting: accuracy minimised
    with pytest.raises(UsageError, match="got 'forecast'"):
        SearchSpace().suggest(optuna.trial.FixedTrial({}), task="forecast")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"horizon": 1.5}, "horizon must be a whole number >= 1, got 1.5"),
        ({"min_train_windows": -50}, "min_train_windows must be a whole number >= 1, got -50"),
    ],
)
def test_a_series_refuses_options_that_are_not_whole_counts(options, message) -> None:
    with pytest.raises(UsageError, match=message):
        ForecastSeries(name="s", values=np.arange(100.0), **options)


def test_max_epochs_and_eval_batch_size_must_be_whole_numbers() -> None:
    with pytest.raises(ValueError, match="max_epochs must be a whole number >= 1, got 1.5"):
        Trainer(max_epochs=1.5)  # type: ignore[arg-type]
    assert Trainer(max_epochs=np.int64(3)).max_epochs == 3  # a count from numpy will do
    with pytest.raises(ValueError, match="eval_batch_size must be a whole number >= 1, got 0"):
        Trainer(eval_batch_size=0)  # evaluate used to fail with "range() arg 3 must not be zero"


def test_a_model_whose_output_does_not_fit_the_data_is_refused(forecaster) -> None:
    _, _, data = forecaster
    # Three outputs against one target used to train by broadcasting and report a summed RMSE.
    wide = build_model(HP, input_size=3, output_size=3, task="forecasting")
    with pytest.raises(ValueError, match=r"answers \(3,\) per sequence where load needs 1 value"):
        Trainer(max_epochs=1, device="cpu").fit(wide, data, HP)
    with pytest.raises(ValueError, match="build it with output_size=1"):
        Trainer(device="cpu").evaluate(wide, data)


def test_a_model_of_your_own_with_a_lazy_layer_trains(forecaster) -> None:
    _, _, data = forecaster

    class LazyHead(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = torch.nn.GRU(3, 4, batch_first=True)
            self.head = torch.nn.LazyLinear(1)  # sized by the first forward pass

        def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
            return self.head(self.rnn(x)[1][-1])

    # The output-size check's forward pass, under inference mode, made weights autograd refused.
    result = Trainer(max_epochs=1, device="cpu", seed=0).fit(LazyHead(), data, HP)
    assert math.isfinite(result.best_value)


def test_objective_and_keep_top_take_a_folder_as_load_best_model_does(tmp_path: Path) -> None:
    from optuna_rnn import load_dataset

    data = load_dataset("digits")
    space = SearchSpace(cell="gru", hidden_size=4, num_layers=1, bidirectional=False, batch_size=256)
    # a folder name used to be accepted, then fail at upload once the trial had trained
    objective = Objective(
        data, space=space, max_epochs=1, device="cpu", seed=0, artifacts=str(tmp_path / "m")
    )
    study = optuna.create_study(direction=objective.direction)
    study.optimize(objective, n_trials=1, callbacks=[KeepTopModels(tmp_path / "m", 1)])
    (saved,) = (tmp_path / "m").iterdir()
    assert saved.name == study.best_trial.user_attrs["model_artifact_id"]
    # the in-memory study itself finds its best model (a name pointed at the default SQLite file)
    model = optuna_rnn.load_best_model(study, artifacts=tmp_path / "m")
    store = optuna.artifacts.FileSystemArtifactStore(str(tmp_path / "m"))  # as Objective also takes it
    assert torch.equal(
        optuna_rnn.load_best_model(study, artifacts=store).net.head.weight, model.net.head.weight
    )
    assert model.classes == data.classes and model(data.valid.X[:2]).shape == (2, 10)
    with pytest.raises(UsageError, match=r"load_best_model\(study\): give artifacts="):
        optuna_rnn.load_best_model(study)


def test_a_file_that_is_not_a_model_says_so(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(bytes(range(256)) * 3)
    with pytest.raises(ValueError, match="junk.pt is not an optuna-rnn model file"):
        load_model_file(junk)
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match=r"list.pt is not an optuna-rnn model file \(it holds a list\)"):
        load_model_file(tmp_path / "list.pt")


def test_the_package_has_a_version() -> None:
    from importlib.metadata import version

    assert optuna_rnn.__version__ == version("optuna-rnn")


def _data(task: str = "forecasting", **splits: optuna_rnn.Split) -> optuna_rnn.SequenceData:
    X = torch.randn(40, 5, 3)
    y = torch.randn(40, 1) if task == "forecasting" else torch.arange(40) % 2
    base = {name: optuna_rnn.Split(X, y) for name in ("train", "valid", "test")}
    kwargs = {"name": "mine", "task": task, "input_size": 3, "output_size": 1 if task == "forecasting" else 2}
    return optuna_rnn.SequenceData(**kwargs, **(base | splits))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("task", "split", "message"),
    [
        # (n,) targets against the model's (n, 1) output broadcast into an (n, n) loss: a wrong RMSE
        (
            "forecasting",
            (torch.randn(40, 5, 3), torch.randn(40)),
            r"train y must be float targets shaped \(n, 1\)",
        ),
        (
            "classification",
            (torch.randn(40, 5, 3), torch.arange(40, dtype=torch.int32) % 2),
            "int64 class indices",
        ),
        (
            "classification",
            (torch.randn(40, 5, 3), torch.arange(40) % 3),
            r"labels must lie in 0\.\.1.*got 0\.\.2",
        ),
        (
            "forecasting",
            (torch.randn(40, 5, 4), torch.randn(40, 1)),
            "train X has 4 channels; input_size is 3",
        ),
        ("forecasting", (torch.randn(0, 5, 3), torch.randn(0, 1)), "the train split is empty"),
    ],
)
def test_hand_built_data_is_refused_when_made_not_inside_a_trial(task, split, message) -> None:
    _data(task)  # the same data with this split right is accepted
    with pytest.raises(UsageError, match=message):
        _data(task, train=optuna_rnn.Split(*split))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            (torch.randn(4, 5, 3, dtype=torch.float64), torch.randn(4, 1)),
            r"X must be a float32 tensor.*float64",
        ),
        ((torch.randn(4, 5), torch.randn(4, 1)), r"shaped \(n, time, channels\), got float32 \(4, 5\)"),
        ((torch.randn(4, 5, 3), torch.randn(3, 1)), "y must be a tensor of 4 rows"),
        ((torch.randn(4, 5, 3), torch.randn(4, 1), torch.tensor([5.0, 5, 5, 5])), "whole-number tensor of 4"),
    ],
)
def test_a_split_refuses_tensors_the_trainer_cannot_use(args, message) -> None:
    with pytest.raises(UsageError, match=message):
        optuna_rnn.Split(*args)


def test_datasets_compare_by_identity_rather_than_by_their_tensors() -> None:
    data = _data()
    assert data == data and data != _data()  # comparing the tensors raised "Boolean value ... ambiguous"


def test_a_fixed_trial_retrains_a_study_trials_configuration(tmp_path: Path) -> None:
    from optuna_rnn import load_dataset

    space = SearchSpace(hidden_size=optuna_rnn.IntRange(4, 8), num_layers=1, batch_size=256)
    objective = Objective(
        load_dataset("digits"), space=space, max_epochs=2, seed=0, device="cpu", artifacts=tmp_path / "m"
    )
    study = optuna.create_study(direction=objective.direction)
    study.optimize(objective, n_trials=1)
    # Optuna's way to re-run given parameters; it had no .study and raised AttributeError
    fixed = optuna.trial.FixedTrial(study.trials[0].params)  # number 0, so seed 0 + 0, as trial 0
    assert objective(fixed) == study.trials[0].value
    assert fixed.user_attrs["seed"] == 0 and fixed.user_attrs["epochs"] == 2
    assert len(list((tmp_path / "m").iterdir())) == 1  # nothing saved for it: no study to attach to


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"max_epochs": 0}, ValueError, "max_epochs must be a whole number >= 1"),
        ({"patience": 0}, ValueError, "patience must be a whole number >= 1, got 0"),
        ({"patience": "3"}, ValueError, "patience must be a whole number >= 1, got '3'"),
        ({"device": "gpu"}, ValueError, "device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'gpu'"),
        (
            {"device": "mps"} if not torch.backends.mps.is_available() else {"device": "meta"},
            ValueError,
            "not available",
        ),
        ({"seed": "0"}, ValueError, "seed must be a whole number or None, got '0'"),
        ({"space": {"cell": "gru"}}, UsageError, "space must be a SearchSpace .* got dict"),
    ],
)
def test_an_objective_refuses_bad_options_when_made_not_in_its_first_trial(kwargs, error, message) -> None:
    from optuna_rnn import load_dataset

    with pytest.raises(error, match=message):
        Objective(load_dataset("digits"), **kwargs)


def test_an_objective_needs_loaded_data_and_a_choice_a_list() -> None:
    with pytest.raises(UsageError, match="dataset must be a SequenceData or ForecastSeries .* got str"):
        Objective("digits")  # type: ignore[arg-type]
    with pytest.raises(
        UsageError, match=r"Choice takes a list of options, got the string 'gru': Choice\(\['gru'\]\)"
    ):
        optuna_rnn.Choice("gru")  # was the choice of "g", "r" and "u"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_a_cuda_device_index_is_refused_without_cuda() -> None:
    with pytest.raises(ValueError, match="'cuda:0' .* no CUDA device is available"):
        Trainer(device="cuda:0")  # was accepted, then failed in fit with torch's AssertionError


def test_a_loaded_model_predicts_from_numpy_and_gives_plain_numbers(forecaster) -> None:
    _, loaded, _ = forecaster
    rows = np.full((2, 6, 3), 700.0)  # NumPy's float64, as the README advises for large levels
    forecast = loaded(rows)
    assert forecast.dtype == torch.float64 and forecast.numpy().shape == (2, 1)  # no grad to detach
    assert torch.equal(forecast, loaded(torch.from_numpy(rows)))


def test_a_file_written_before_the_statistics_loads_to_the_same_kind_of_model(forecaster) -> None:
    net, _, data = forecaster
    payload = model_payload(net, HP, input_size=3, output_size=1)  # weights and sizes only
    old = in_original_units(payload)
    assert isinstance(old, optuna_rnn.OriginalUnits) and old.task is None and old.columns is None
    with torch.inference_mode():  # it reads standardised input, as the bare network does
        assert torch.allclose(old(data.valid.X), net.eval()(data.valid.X))


def test_a_failed_trial_records_why_it_failed() -> None:
    from optuna_rnn import Callback, load_dataset

    class Boom(Callback):
        def on_epoch_end(self, state: optuna_rnn.TrainState) -> None:
            raise RuntimeError("boom\nsecond line")

    space = SearchSpace(cell="gru", hidden_size=4, num_layers=1, batch_size=256)
    objective = Objective(load_dataset("digits"), space=space, max_epochs=2, device="cpu", callbacks=[Boom()])
    study = optuna.create_study(direction=objective.direction)
    study.optimize(objective, n_trials=1, catch=(RuntimeError,))
    (trial,) = study.trials
    assert trial.state == optuna.trial.TrialState.FAIL
    assert trial.user_attrs["stop_reason"] == "failed: RuntimeError: boom" and trial.user_attrs["epochs"] == 1


def test_each_trial_gets_its_own_copy_of_the_callbacks_given_to_the_objective() -> None:
    from optuna_rnn import Callback, load_dataset

    class Tracker(Callback):
        def __init__(self) -> None:
            self.copies: list[int] = []  # shared by the copies: what the caller collects
            self.first_epoch: float | None = None  # per trial: what n_jobs threads must not share

        def on_epoch_end(self, state: optuna_rnn.TrainState) -> None:
            if self.first_epoch is None:
                self.first_epoch = state.history[0]["val_metric"]
                self.copies.append(id(self))

    tracker = Tracker()
    space = SearchSpace(cell="gru", hidden_size=4, num_layers=1, batch_size=256)
    objective = Objective(
        load_dataset("digits"), space=space, max_epochs=1, device="cpu", callbacks=[tracker]
    )
    optuna.create_study(direction=objective.direction).optimize(objective, n_trials=2)
    assert len(set(tracker.copies)) == 2 and id(tracker) not in tracker.copies  # each trial saw a fresh one
    assert tracker.first_epoch is None


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: build_model(HP, input_size=3, output_size=0),
            "output_size must be a whole number >= 1, got 0",
        ),
        (lambda: build_model(HP, input_size=3, output_size=1, task="regression"), "task must be"),
        (lambda: optuna_rnn.DivergenceGuard(max_grad_norm=-1), "max_grad_norm must be a number > 0"),
        (lambda: optuna_rnn.FloatRange(1e-3, 1e-2, log=1), "FloatRange: log must be True or False, got 1"),
        (lambda: optuna_rnn.IntRange(8, 64, log="yes"), "IntRange: log must be True or False"),
        (
            lambda: optuna_rnn.SequenceData.from_arrays(
                np.zeros((20, 4, 1)), np.arange(20) % 2, name="a", valid_fraction=0.5, test_fraction=0.5
            ),
            r"a: valid_fraction and test_fraction must lie in \(0, 1\) and leave sequences for training",
        ),
    ],
)
def test_small_options_are_checked_where_they_are_given(make, message) -> None:
    with pytest.raises(ValueError, match=message):
        make()


def test_numpy_numbers_pass_where_python_ones_do() -> None:
    assert optuna_rnn.EarlyStopping(patience=np.int64(3)).patience == 3
    data = optuna_rnn.SequenceData.from_arrays(
        np.zeros((40, 4, 1)), np.arange(40) % 2, name="a", valid_fraction=np.float32(0.2), test_fraction=0.2
    )
    assert data.summary()["baseline"]["valid"] == 0.5  # the majority class: half of a balanced split
