"""The user's own data: CSV and NPZ readers, padding, whole studies, and every bad-input case."""

from __future__ import annotations

import json
import shutil
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
from optuna.trial import TrialState

from optuna_rnn import Hyperparams, SequenceData, Trainer, build_model, load_model_file
from optuna_rnn import data as data_module
from optuna_rnn.artifacts import model_from_payload
from optuna_rnn.data import ForecastSeries, Split
from optuna_rnn.errors import UsageError
from optuna_rnn.objective import curve_attr
from optuna_rnn.readers import read_csv, read_file, read_npz
from optuna_rnn.training import iterate_batches
from tests.conftest import TINY_SPACE
from tests.userdata import call_main, replace_cell, sequences, series_rows, write_csv

FAST = ("--max-epochs", "3", "--seed", "0", "-q")

# --- readers ------------------------------------------------------------------------


def test_csv_rows_are_ordered_by_the_time_column_and_the_split_is_chronological(tmp_path: Path) -> None:
    rows = series_rows(150)
    series = read_csv(write_csv(tmp_path / "s.csv", rows), target="x")
    ordered = read_csv(write_csv(tmp_path / "o.csv", rows, shuffle=False), target="x")
    assert np.array_equal(series.values, ordered.values)  # shuffled rows come back in time order
    assert series.columns == ("x", "y") and series.target == 0 and series.input_size == 2
    assert series.times[0] == "2020-01-01T00:00" and list(series.times) == sorted(series.times)
    summary = series.summary()
    assert summary["splits"] == {"train": 106, "valid": 22, "test": 22}
    assert summary["split_times"]["valid"][0] == series.times[106]
    assert "covariates 'y'" in summary["description"] and "ordered by 'date'" in summary["description"]
    # scaling is fit on the training span: later values do not change it
    changed = [*rows[:106], *(replace_cell([r], 0, 1, "1000")[0] for r in rows[106:])]
    late = read_csv(write_csv(tmp_path / "late.csv", changed), target="x")
    assert torch.equal(late.windowed(8).train.X, series.windowed(8).train.X)


def test_a_series_keeps_only_its_recently_used_window_lengths(monkeypatch: pytest.MonkeyPatch) -> None:
    series = ForecastSeries(name="s", values=np.random.default_rng(0).normal(size=(400, 3)))
    sizes = {w: data_module._nbytes(series.windowed(w)) for w in (8, 40)}
    monkeypatch.setattr(data_module, "WINDOW_CACHE_BYTES", 3 * sizes[40])
    for window in range(8, 41):  # a long study draws many lengths; each copies the series
        series.windowed(window)
    assert sum(map(data_module._nbytes, series._cache.values())) <= 3 * sizes[40]
    assert list(series._cache)[-1] == (40, "level") and (8, "level") not in series._cache
    assert series.windowed(40) is series.windowed(40)  # the recent one is reused, not rebuilt
    monkeypatch.setattr(data_module, "WINDOW_CACHE_BYTES", 0)
    assert series.windowed(8) is series.windowed(8)  # the one in use is always kept


def test_trials_in_threads_share_a_series_window_cache_safely() -> None:
    # study.optimize(n_jobs=2) runs trials in threads over one series: the cache's eviction
    # reads it while another thread inserts, which failed with "dictionary changed size".
    series = ForecastSeries(name="s", values=np.random.default_rng(0).normal(size=(400, 2)))
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often, so that a race shows within a second
    errors: list[BaseException] = []

    def draw(offset: int) -> None:
        try:
            for i in range(3000):
                series.windowed(8 + (offset + i) % 5)
        except BaseException as error:  # noqa: BLE001 - the assertion below shows it
            errors.append(error)

    try:
        for _ in range(20):  # without the lock, most rounds fail
            threads = [threading.Thread(target=draw, args=(k,)) for k in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    finally:
        sys.setswitchinterval(switch)
    assert errors == []


def _times_csv(path: Path, times: list[str]) -> Path:
    path.write_text("date,x\n" + "".join(f"{t},{i}\n" for i, t in enumerate(times)))
    return path


def test_csv_dates_in_local_time_iso_mixes_and_day_first_order_correctly(tmp_path: Path) -> None:
    # Local hourly times across the spring clock change carry two UTC offsets.
    local = pd.date_range("2024-03-30", periods=48, freq="h", tz="Europe/Berlin")
    order = np.random.default_rng(0).permutation(48)
    series = read_csv(_times_csv(tmp_path / "dst.csv", [local[i].isoformat() for i in order]))
    assert series.values[:, 0].tolist() == np.argsort(order).tolist()
    # ISO dates with and without a time of day (midnight written as the bare date).
    hours = pd.date_range("2024-01-01", periods=30, freq="h")
    iso = [str(t.date()) if t.hour == 0 else t.strftime("%Y-%m-%d %H:%M") for t in hours[::-1]]
    assert read_csv(_times_csv(tmp_path / "iso.csv", iso)).values[:, 0].tolist() == list(range(29, -1, -1))
    # Day first, told apart by a day above 12.
    days = pd.date_range("2024-01-01", periods=40, freq="D")
    dmy = [t.strftime("%d/%m/%Y") for t in days[::-1]]
    assert read_csv(_times_csv(tmp_path / "dmy.csv", dmy)).values[:, 0].tolist() == list(range(39, -1, -1))
    # A format pandas cannot infer is read value by value, and dateutil swapped 13.01.24 into a
    # month-first reading: the file used to be refused as reading both ways.
    dots = [t.strftime("%d.%m.%y") for t in days[::-1]]
    assert read_csv(_times_csv(tmp_path / "dots.csv", dots)).values[:, 0].tolist() == list(range(39, -1, -1))
    spaced = [t.strftime("%d %m %y") for t in days[::-1]]
    assert read_csv(_times_csv(tmp_path / "spaced.csv", spaced)).values[:, 0].tolist() == list(
        range(39, -1, -1)
    )


def test_csv_dates_that_read_both_ways_and_other_bad_rows_are_refused(tmp_path: Path) -> None:
    days = [f"{d:02d}/{m:02d}/2024" for m in range(1, 13) for d in (1, 6, 11)]
    with pytest.raises(
        UsageError, match=r"reads both as month/day and as day/month \(line 2: '01/01/2024'\)"
    ):
        read_csv(_times_csv(tmp_path / "ambiguous.csv", days))
    with pytest.raises(UsageError, match="reads both as month/day and as day/month"):  # time of day first
        read_csv(_times_csv(tmp_path / "clock.csv", [f"13:00 {d}" for d in days]))
    mixed = [str(i) for i in range(40)]
    mixed[5] = "2020-01-01"  # the odd one out is named, not the first number
    with pytest.raises(UsageError, match=r"mixes numbers and dates \(line 7: '2020-01-01'\); write every"):
        read_csv(_times_csv(tmp_path / "mixed.csv", mixed))
    with pytest.raises(UsageError, match=r"neither a number nor a date \(line 4: 'soon'\)"):
        read_csv(_times_csv(tmp_path / "neither.csv", [*mixed[:2], "soon", *mixed[6:]]))
    with pytest.raises(UsageError, match=r"time column 'date' repeats '2' \(lines 3 and 5\)"):
        read_csv(_times_csv(tmp_path / "repeat.csv", ["1", "2", "3", "2", *map(str, range(4, 40))]))
    # Blank lines (pandas skips them) still leave the named line the one to open in an editor.
    lines = ["time,y", "", *(f"{i},{i * 2}" for i in range(20)), "  ", "20,abc", "", "21,1", "5,2"]
    (tmp_path / "blank.csv").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(UsageError, match=r"column 'y' is not numeric \(line 24: 'abc'\)"):
        read_csv(tmp_path / "blank.csv")
    (tmp_path / "blank.csv").write_text("\n".join(lines).replace("20,abc", "20,1") + "\n")
    with pytest.raises(UsageError, match=r"repeats '5' \(lines 8 and 27\)"):
        read_csv(tmp_path / "blank.csv")
    # A quoted value spanning lines, CRLF endings and a byte-order mark count as pandas reads them.
    quoted = ["\ufefftime,y,note", *(f'{i},{i},"a\r\nb"' for i in range(20)), "", "20,x,c"]
    (tmp_path / "quoted.csv").write_bytes("\r\n".join(quoted).encode() + b"\r\n")
    with pytest.raises(UsageError, match=r"column 'y' is not numeric \(line 43: 'x'\)"):
        read_csv(tmp_path / "quoted.csv")
    (tmp_path / "extra.csv").write_text("a,b\n" + "".join(f"{i},{i * 2},{i * 3}\n" for i in range(40)))
    with pytest.raises(UsageError, match="the data rows have more fields than the header names"):
        read_csv(tmp_path / "extra.csv")


def test_csv_header_names_are_the_files_own(tmp_path: Path) -> None:
    rows = series_rows(60)
    # a spreadsheet export: a trailing comma on the header and on every row
    exported = write_csv(tmp_path / "export.csv", [r + "," for r in rows], header="date,x,y,")
    assert read_csv(exported).columns == ("x", "y")
    # a trailing comma on some later rows only: pandas stops at the first such row
    uneven = write_csv(tmp_path / "uneven.csv", [r + ("," if i % 3 else "") for i, r in enumerate(rows)])
    assert read_csv(uneven).columns == ("x", "y")
    np.testing.assert_array_equal(read_csv(uneven).values, read_csv(exported).values)
    # ... and its values read as in any other file: NA is a missing value, not text
    gap = replace_cell(rows, 40, 1, "NA")
    for i, uneven_rows in enumerate((gap, [r + ("," if i % 3 else "") for i, r in enumerate(gap)])):
        with pytest.raises(UsageError, match=r"column 'x' has a missing value \(line 42\)"):
            read_csv(write_csv(tmp_path / f"gap{i}.csv", uneven_rows, shuffle=False))
    # pandas would rename the second x to x.1 and a blank name to 'Unnamed: 1', and load them
    with pytest.raises(UsageError, match="column 'x' appears twice in the header; names must differ"):
        read_csv(write_csv(tmp_path / "twice.csv", rows, header="date,x,x"))
    with pytest.raises(UsageError, match="column 2 of the header has no name; name every column"):
        read_csv(write_csv(tmp_path / "blank.csv", rows, header="date,,y"))
    quoted = write_csv(tmp_path / "quoted.csv", rows, header='\ufeffdate, "x, raw" ,y')
    assert read_csv(quoted).columns == ("x, raw", "y")  # a byte-order mark, a quoted comma, spaces


def test_every_class_keeps_a_training_sequence_when_the_split_cannot_be_stratified() -> None:
    # 10 classes of 2 sequences: 3 test and 3 validation sequences cannot hold every class.
    y = np.repeat(np.array([f"c{i}" for i in range(10)]), 2)
    for seed in range(30):
        X = np.random.default_rng(seed).normal(size=(20, 5, 2))
        data = SequenceData.from_arrays(X, y, name="few", seed=seed)
        assert sorted(set(data.train.y.tolist())) == list(range(10)), seed
        assert len(data.valid.y) >= 1 and len(data.test.y) >= 1
        assert len(data.train.y) + len(data.valid.y) + len(data.test.y) == 20


def test_csv_target_defaults_to_the_last_column_and_numeric_times_order_too(tmp_path: Path) -> None:
    path = tmp_path / "years.csv"
    path.write_text("year_value,t\n" + "\n".join(f"{i % 7},{i}" for i in range(60)) + "\n")
    series = read_csv(path)
    assert series.columns == ("year_value", "t") and series.target == 1  # no time column here
    path.write_text("value,time\n" + "\n".join(f"{i},{100 - i}" for i in range(60)) + "\n")
    series = read_csv(path)
    assert series.columns == ("value",) and series.values[:3, 0].tolist() == [59, 58, 57]


def test_npz_string_labels_are_mapped_and_recorded(tmp_path: Path) -> None:
    path = tmp_path / "seqs.npz"
    np.savez(path, **sequences(90))
    data = read_npz(path)
    assert data.classes == ("high", "low", "mid")  # class index i stands for classes[i]
    summary = data.summary()
    assert summary["classes"] == ["high", "low", "mid"] and summary["variable_length"]
    assert summary["splits"] == {"train": 63, "valid": 13, "test": 14}
    for split in (data.train, data.valid, data.test):
        assert np.bincount(split.y.numpy(), minlength=3).min() >= 4  # stratified
        padding = torch.arange(split.X.shape[1])[None, :] >= split.lengths[:, None]
        assert torch.isfinite(split.X).all() and (split.X[padding] == 0).all()  # NaN padding dropped
    # Byte strings (h5py, older NumPy files) are text too: they used to be refused by dtype.
    arrays = sequences(90)
    np.savez(path, **{**arrays, "y": np.char.encode(arrays["y"], "utf-8")})
    assert read_npz(path).classes == ("high", "low", "mid")
    np.savez(path, **{**arrays, "y": np.array([b"\xff"] * 90)})
    with pytest.raises(UsageError, match="seqs.npz: y holds byte strings that are not UTF-8 text"):
        read_npz(path)


def test_classes_of_one_sequence_each_are_refused_saying_so() -> None:
    X = np.zeros((40, 3, 1))
    with pytest.raises(UsageError, match="ids: every class has a single sequence, so none can be held out"):
        SequenceData.from_arrays(X, np.arange(40), name="ids")


@pytest.mark.parametrize("seed", range(5))
def test_a_class_with_one_sequence_trains_and_the_others_stay_stratified(seed: int) -> None:
    y = np.array(["a"] * 600 + ["b"] * 60 + ["c"])
    X = np.random.default_rng(0).standard_normal((len(y), 4, 2))
    data = SequenceData.from_arrays(X, y, name="rare", seed=seed)
    counts = {
        name: np.bincount(getattr(data, name).y.numpy(), minlength=3) for name in ("train", "valid", "test")
    }
    assert counts["train"][2] == 1  # the lone "c" is learnt from, never only judged on
    assert counts["valid"][1] == 9 and counts["test"][1] == 9  # 15% of "b" each, as stratified


def test_integer_labels_keep_numeric_order_and_test_arrays_are_the_test_split(tmp_path: Path) -> None:
    train, test = sequences(60, seed=1), sequences(30, length=15, seed=2)
    codes = {"low": 2, "mid": 10, "high": 1}
    path = tmp_path / "ints.npz"
    np.savez(
        path,
        X=train["X"],
        y=np.array([codes[v] for v in train["y"]]),
        lengths=train["lengths"],
        X_test=test["X"],
        y_test=np.array([codes[v] for v in test["y"]]),
        lengths_test=test["lengths"],
    )
    data = read_npz(path)
    assert data.classes == ("1", "2", "10")  # numeric, not string, order
    assert len(data.test) == 30 and data.test.X.shape[1] == 15 == data.train.X.shape[1]
    expected = np.array([{"high": 0, "low": 1, "mid": 2}[v] for v in test["y"]])
    assert np.array_equal(data.test.y.numpy(), expected)
    assert torch.equal(data.test.lengths, torch.from_numpy(test["lengths"]))


def test_labels_from_pandas_strings_categoricals_and_python_ints_are_taken() -> None:
    X = np.random.default_rng(0).normal(size=(40, 5, 2))
    names = ["cat", "dog"] * 20
    for y in (
        pd.Series(names).to_numpy(),  # object dtype
        np.asarray(pd.Categorical(names)),
        pd.Series(names, dtype="string").to_numpy(),
    ):
        assert SequenceData.from_arrays(X, y, name="pets").classes == ("cat", "dog")
    assert SequenceData.from_arrays(X, np.array([3, 7] * 20, dtype=object), name="ids").classes == ("3", "7")
    with pytest.raises(UsageError, match="y must hold integer or string labels, got dtype object"):
        SequenceData.from_arrays(X, np.array(["a", 1] * 20, dtype=object), name="mixed")


def test_npz_arrays_of_python_objects_get_advice_for_what_they_hold(tmp_path: Path) -> None:
    ragged = np.empty(2, dtype=object)
    ragged[:] = [np.zeros((3, 2)), np.zeros((5, 2))]
    np.savez(tmp_path / "ragged.npz", X=ragged, y=np.array([0, 1]))
    with pytest.raises(UsageError, match=r"array 'X' holds Python objects; save it as numbers .* pad ragged"):
        read_npz(tmp_path / "ragged.npz")
    np.savez(tmp_path / "labels.npz", X=np.zeros((2, 3, 2)), y=np.array(["a", None], dtype=object))
    with pytest.raises(UsageError, match=r"array 'y' holds Python objects; save labels as strings"):
        read_npz(tmp_path / "labels.npz")


def test_npz_given_to_csv_options_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "seqs.npz"
    np.savez(path, **sequences(30))
    with pytest.raises(UsageError, match="--target and --horizon apply to forecasting CSV files only"):
        read_file(path, horizon=3)


# --- padding and bucketing ----------------------------------------------------------


@pytest.fixture(scope="module")
def ragged() -> SequenceData:
    arrays = sequences(120, length=20, seed=3)
    return SequenceData.from_arrays(arrays["X"], arrays["y"], lengths=arrays["lengths"], name="ragged")


@pytest.mark.parametrize(("cell", "bidirectional"), [("lstm", True), ("gru", False), ("rnn", True)])
def test_trainer_predictions_are_the_same_alone_and_in_padded_batches(
    ragged: SequenceData, cell: str, bidirectional: bool
) -> None:
    torch.manual_seed(0)
    hp = Hyperparams(cell=cell, hidden_size=6, num_layers=2, bidirectional=bidirectional)
    model = build_model(hp, input_size=ragged.input_size, output_size=ragged.output_size)
    split = ragged.valid
    loud = split.X.clone()
    padding = torch.arange(loud.shape[1])[None, :] >= split.lengths[:, None]
    loud[padding] = 1e6  # padding that would swamp the output if it ever leaked
    for batch_size in (4096, 5):  # one padded batch; several length buckets
        batched = Trainer(device="cpu", eval_batch_size=batch_size).predict(
            model, Split(loud, split.y, split.lengths)
        )
        for i in range(len(split)):
            steps = int(split.lengths[i])
            alone = Trainer(device="cpu").predict(
                model, Split(split.X[i : i + 1, :steps], split.y[i : i + 1])
            )
            assert torch.allclose(batched[i], alone[0], atol=1e-5), (i, batch_size)


def test_training_batches_are_bucketed_by_length(ragged: SequenceData) -> None:
    n = len(ragged.train)
    split = Split(ragged.train.X, torch.arange(n), ragged.train.lengths)  # y: each sequence's index
    assert split.lengths is not None
    served: list[int] = []
    bucketed_padding = 0
    for xb, index, lb in iterate_batches(split, 8, generator=torch.Generator().manual_seed(0)):
        lengths = split.lengths[index]
        assert xb.shape[1] == int(lengths.max())  # trimmed to the batch's own longest sequence
        assert torch.equal(xb, split.X[index, : xb.shape[1]])
        assert lb is None if bool((lengths == lengths.max()).all()) else torch.equal(lb, lengths)
        served.extend(index.tolist())
        bucketed_padding += int((xb.shape[1] - lengths).sum())
    assert sorted(served) == list(range(n))  # every sequence exactly once per epoch
    plain_padding = sum(
        int((chunk.max() - chunk).sum()) for chunk in split.lengths.split(8)
    )  # what batches in file order would pad
    assert bucketed_padding < plain_padding / 4


# --- whole studies on the user's files ----------------------------------------------


def _study(tmp_path: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'optuna-rnn.db'}")


@pytest.mark.parametrize("forecast", ["level", "change"])
def test_csv_forecasting_study_with_a_covariate(
    cli_in_process, tmp_path: Path, tiny_space: Path, forecast: str
) -> None:
    write_csv(tmp_path / "series.csv", series_rows(150))
    tiny_space.write_text(tiny_space.read_text() + f'forecast = "{forecast}"\n')
    out = cli_in_process(
        "run", "--data", "series.csv", "--target", "y", "--n-trials", "2", "--space", str(tiny_space), *FAST
    )
    assert out.returncode == 0, out.stderr
    study = _study(tmp_path, "series")
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials) == 2
    data = study.user_attrs["optuna_rnn.data"]
    assert data["columns"] == ["x", "y"] and data["target"] == "y" and data["input_size"] == 2
    assert data["splits"] == {"train": 106, "valid": 22, "test": 22}
    assert data["split_times"]["train"][0] == "2020-01-01T00:00"
    best = cli_in_process("best", "--study", "series", "--export", "best.pt")
    assert best.returncode == 0, best.stderr
    result = json.loads(best.stdout)
    assert result["metric"] == "rmse" and result["test_metric"] > 0
    assert result["validation_value"] == study.best_value
    # The exported model reads and answers in the file's units: fed the raw test windows, its
    # forecasts reproduce the reported test RMSE.
    series = read_csv(tmp_path / "series.csv", target="y")
    window, horizon = result["hyperparams"]["window"], series.horizon
    targets = series.target_times(window)["test"]
    X = np.stack([series.values[t - horizon - window + 1 : t - horizon + 1] for t in targets])
    model = load_model_file(tmp_path / "best.pt")
    assert (model.columns, model.target, model.horizon) == (("x", "y"), "y", series.horizon)
    assert result["hyperparams"]["forecast"] == forecast and model.relative_channel == (
        1 if forecast == "change" else None
    )
    with torch.inference_mode():
        forecast = model(torch.from_numpy(X).float())[:, 0].numpy()
    raw_rmse = float(np.sqrt(np.mean((forecast - series.values[targets, series.target]) ** 2)))
    assert raw_rmse == pytest.approx(result["test_metric"], rel=1e-4)


# Every parameter fixed but the window, so that a grid over it is three points.
FIXED_BUT_WINDOW = """
cell = "lstm"
hidden_size = 8
num_layers = 1
bidirectional = false
dropout = 0.0
input_init = "xavier_uniform"
recurrent_init = "orthogonal"
forget_bias = 1.0
optimizer = "adam"
lr = 0.01
weight_decay = 1e-6
beta1 = 0.9
beta2 = 0.999
batch_size = 128
grad_clip = 1.0
"""


@pytest.mark.parametrize("sampler", ["tpe", "grid"])
def test_windows_the_series_cannot_serve_are_left_out(cli_in_process, tmp_path: Path, sampler: str) -> None:
    write_csv(tmp_path / "series.csv", series_rows(150))
    longest = read_csv(tmp_path / "series.csv").max_window
    assert 8 < longest < 128
    window = "[8, 128]" if sampler == "tpe" else "{low = 8, high = 128, log = true}"
    (tmp_path / "space.toml").write_text(f"{FIXED_BUT_WINDOW}window = {window}\n")
    out = cli_in_process(
        "run", "--data", "series.csv", "--n-trials", "3", "--sampler", sampler, "--space", "space.toml",
        "--pruner", "none", *FAST,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    trials = _study(tmp_path, "series").trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3, [t.user_attrs for t in trials]
    assert all(t.params.get("window", 8) <= longest for t in trials)
    best = cli_in_process("best", "--study", "series")  # rebuilds the winner's settings from its params
    assert best.returncode == 0, best.stderr
    assert 8 <= json.loads(best.stdout)["hyperparams"]["window"] <= longest


def test_a_resume_through_a_symbolic_link_reads_the_data_file_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from optuna_rnn import readers
    from optuna_rnn.datasets import DatasetSpec
    from optuna_rnn.study import open_session

    write_csv(tmp_path / "s.csv", series_rows(150))
    storage = f"sqlite:///{tmp_path / 's.db'}"
    open_session(
        "s", storage=storage, given={"dataset": DatasetSpec(path=str(tmp_path / "s.csv"))}, create=True
    )
    (tmp_path / "link").symlink_to(tmp_path)
    reads: list[object] = []
    read_csv = readers.read_csv
    monkeypatch.setattr(readers, "read_csv", lambda *args, **kw: reads.append(args) or read_csv(*args, **kw))
    given = {"dataset": DatasetSpec(path=str(tmp_path / "link" / "s.csv"))}
    session = open_session("s", storage=storage, given=given, create=True)
    assert len(reads) == 1 and session.dataset.n_train == 106


def test_best_rebuilds_a_window_the_series_left_no_choice_for_when_the_model_is_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write_csv(tmp_path / "short.csv", series_rows(60))  # windows up to 26: the choice [4, 500] is 4
    (tmp_path / "space.toml").write_text(f"{FIXED_BUT_WINDOW}window = [4, 500]\n")
    code, _, err = call_main(
        ["run", "--data", "short.csv", "--space", "space.toml", "--n-trials", "1", *FAST]
    )
    assert code == 0, err
    shutil.rmtree(tmp_path / "optuna-rnn-artifacts")
    code, out, err = call_main(["best", "--study", "short"])
    assert code == 0, err
    assert json.loads(out)["hyperparams"]["window"] == 4 and "window" not in json.loads(out)["params"]


def test_best_and_report_need_only_the_study_and_resuming_on_other_data_is_refused(
    cli_in_process, tmp_path: Path, tiny_space: Path
) -> None:
    write_csv(tmp_path / "series.csv", series_rows(150))
    out = cli_in_process("run", "--data", "series.csv", "--n-trials", "2", "--space", str(tiny_space), *FAST)
    assert out.returncode == 0, out.stderr
    before = [(t.number, t.state, t.value) for t in _study(tmp_path, "series").trials]
    # More rows in the file: the trials' validation sets would differ.
    write_csv(tmp_path / "series.csv", series_rows(170))
    out = cli_in_process("run", "--study", "series", "--n-trials", "4", "--data", "series.csv", *FAST)
    assert out.returncode == 2
    assert out.stderr.startswith("optuna-rnn: error: study 'series' was created on other data (rows 150,")
    assert "now rows 170," in out.stderr and "give a new --study name" in out.stderr
    assert [(t.number, t.state, t.value) for t in _study(tmp_path, "series").trials] == before
    # With the data file gone (read elsewhere), best and report still answer from the study.
    (tmp_path / "series.csv").unlink()
    best = cli_in_process("best", "--study", "series")
    assert best.returncode == 0, best.stderr
    result = json.loads(best.stdout)
    assert result["metric"] == "rmse" and result["test_metric"] > 0
    out = cli_in_process("report", "--study", "series", "--out", "report")
    assert out.returncode == 0, out.stderr
    assert "test rmse" in (tmp_path / "report" / "summary.md").read_text().lower()
    # Had no run recorded the test metric, they would say why there is none, and answer.
    _study(tmp_path, "series").set_user_attr("optuna_rnn.best_test", None)
    for args in (("best", "--study", "series"), ("report", "--study", "series", "--out", "report2")):
        out = cli_in_process(*args)
        assert out.returncode == 0, out.stderr
        assert out.stderr.startswith("optuna-rnn: warning: no test metric: ") and "series.csv" in out.stderr
    assert json.loads(cli_in_process("best", "--study", "series").stdout)["test_metric"] is None
    # The file is back with other rows: its test split would not be the one the study set aside.
    write_csv(tmp_path / "series.csv", series_rows(170))
    out = cli_in_process("best", "--study", "series")
    assert out.returncode == 0, out.stderr
    assert "warning: no test metric: study 'series' was created on other data (rows 150," in out.stderr
    assert json.loads(out.stdout)["test_metric"] is None
    # Neither the data nor the models here: the parameters still come from the study alone.
    (tmp_path / "series.csv").unlink()
    shutil.rmtree(tmp_path / "optuna-rnn-artifacts")
    out = cli_in_process("best", "--study", "series")
    assert out.returncode == 0, out.stderr
    assert "has no saved model" in out.stderr or "is missing from the artifact store" in out.stderr
    best = json.loads(out.stdout)
    assert best["hyperparams"]["window"] == best["params"].get("window", 4) and best["test_metric"] is None


def test_naming_the_default_target_or_leaving_it_out_resumes_the_same_study(
    cli_in_process, tmp_path: Path, tiny_space: Path
) -> None:
    write_csv(tmp_path / "series.csv", series_rows(150))  # columns x, y: y is the default target
    base = ("run", "--data", "series.csv", "--space", str(tiny_space), *FAST)
    assert cli_in_process(*base, "--n-trials", "1").returncode == 0
    out = cli_in_process(*base, "--target", "y", "--n-trials", "2")
    assert out.returncode == 0, out.stderr
    out = cli_in_process(*base, "--target", "x", "--n-trials", "3")
    assert out.returncode == 2 and "this run asks for dataset.target='x'" in out.stderr
    assert len(_study(tmp_path, "series").trials) == 2
    # and the other way round: a study that named its target, resumed without naming it
    assert cli_in_process(*base, "--study", "named", "--target", "y", "--n-trials", "1").returncode == 0
    out = cli_in_process(*base, "--study", "named", "--n-trials", "2")
    assert out.returncode == 0, out.stderr
    assert len(_study(tmp_path, "named").trials) == 2


def test_npz_classification_study_with_variable_lengths_and_string_labels(
    cli_in_process, tmp_path: Path, tiny_space: Path
) -> None:
    np.savez(tmp_path / "seqs.npz", **sequences(90))
    out = cli_in_process("run", "--data", "seqs.npz", "--n-trials", "2", "--space", str(tiny_space), *FAST)
    assert out.returncode == 0, out.stderr
    study = _study(tmp_path, "seqs")
    data = study.user_attrs["optuna_rnn.data"]
    assert data["classes"] == ["high", "low", "mid"] and data["variable_length"] is True
    assert data["splits"] == {"train": 63, "valid": 13, "test": 14}
    best = cli_in_process("best", "--study", "seqs", "--export", "best.pt")
    assert best.returncode == 0, best.stderr
    result = json.loads(best.stdout)
    assert result["metric"] == "accuracy" and 0.0 <= result["test_metric"] <= 1.0
    assert result["test_metric"] == study.user_attrs["optuna_rnn.best_test"]["test_value"]
    payload = torch.load(tmp_path / "best.pt", weights_only=True)
    assert payload["classes"] == ["high", "low", "mid"]  # the model file carries the label mapping
    # the reported test metric is the exported model's accuracy on the file's test split
    model = model_from_payload(payload)  # the bare network, on the standardised splits
    accuracy = Trainer(device="cpu").evaluate(model, read_npz(tmp_path / "seqs.npz"), "test")
    assert result["test_metric"] == pytest.approx(accuracy)


# --- bad input: exit 2, one line naming file and column/array, study untouched -----------


@pytest.fixture(scope="module")
def kept(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path | str]:
    """A database holding one finished study that every bad-input case must leave alone."""
    folder = tmp_path_factory.mktemp("kept")
    (folder / "space.toml").write_text(TINY_SPACE)
    csv = write_csv(folder / "kept.csv", series_rows(120))
    url = f"sqlite:///{folder / 'optuna-rnn.db'}"
    code, _, err = call_main(
        ["run", "--data", str(csv), "--study", "kept", "--storage", url, "--n-trials", "2"]
        + ["--space", str(folder / "space.toml"), "--max-epochs", "1", "--seed", "0", "-q"]
    )
    assert code == 0, err
    return {"folder": folder, "url": url, "csv": csv, "space": folder / "space.toml"}


def _snapshot(url: str) -> tuple:
    names = sorted(s.study_name for s in optuna.get_all_study_summaries(storage=url))
    study = optuna.load_study(study_name="kept", storage=url)
    trials = [(t.number, t.state, t.value, t.params, t.user_attrs) for t in study.trials]
    return names, trials, study.user_attrs


def _expect_refused(kept: dict, args: list[str], message: str) -> str:
    before = _snapshot(str(kept["url"]))
    code, _, err = call_main(
        ["run", *args, "--storage", str(kept["url"]), "--space", str(kept["space"]), "-q"]
    )
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("optuna-rnn: error: ") and message in err, (message, err)
    assert _snapshot(str(kept["url"])) == before  # no new study, no new trial, nothing changed
    return err


ROWS = series_rows(150)
NPZ = sequences(90)


def _npz(**changes: object) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        arrays = {**NPZ, **changes}
        np.savez(path, **{k: v for k, v in arrays.items() if v is not None})

    return write


def _text(content: str | bytes) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)

    return write


def _csv(rows: list[str]) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        write_csv(path, rows, shuffle=False)

    return write


def _lengths_with(index: int, value: int) -> np.ndarray:
    lengths = NPZ["lengths"].copy()
    lengths[index] = value
    return lengths


def _nan_inside() -> np.ndarray:
    X = NPZ["X"].copy()
    X[3, 1, 0] = np.nan
    return X


BAD_INPUT = [
    # (id, file name, writer or None for no file, extra options, message after "<file>: ")
    ("missing file", "nowhere.csv", None, [], "file not found"),
    ("ragged csv", "ragged.csv", _text("a,b\n1,2\n3,4,5\n"), [], "line 3 has more fields than the header"),
    ("binary csv", "binary.csv", _text(bytes(range(256)) * 4), [], "not a readable CSV ('utf-8' codec"),
    ("empty csv", "empty.csv", _text(""), [], "not a readable CSV (No columns to parse from file)"),
    (
        "missing target column",
        "series.csv",
        _csv(ROWS),
        ["--target", "z"],
        "target column 'z' not found; columns: date, x, y",
    ),
    (
        "non-numeric column",
        "text.csv",
        _csv(replace_cell(ROWS, 5, 1, "abc")),
        [],
        "column 'x' is not numeric (line 7: 'abc')",
    ),
    (
        "missing value",
        "gap.csv",
        _csv(replace_cell(ROWS, 6, 2, "")),
        [],
        "column 'y' has a missing value (line 8)",
    ),
    (
        "infinite value",
        "inf.csv",
        _csv(replace_cell(ROWS, 7, 2, "inf")),
        [],
        "column 'y' has an infinite value (line 9)",
    ),
    (
        "value beyond float32",  # its square overflows float64: it would be scaled to 0, silently
        "huge.csv",
        _csv(replace_cell(ROWS, 7, 2, "-1e300")),
        [],
        "column 'y' has -1e+300 (line 9), beyond what float32 training can hold (|x| <= 3.4e+38)",
    ),
    (
        "repeated time",
        "dup.csv",
        _csv(replace_cell(ROWS, 8, 0, ROWS[9].split(",")[0])),
        [],
        "time column 'date' repeats '2020-01-01T09:00' (lines 10 and 11)",
    ),
    (
        "too few rows for window and horizon",
        "short.csv",
        _csv(ROWS[:60]),
        ["--horizon", "30"],
        "60 rows are too few for window 4 and horizon 30",
    ),
    ("too few rows", "tiny.csv", _csv(ROWS[:8]), [], "8 rows are too few for window 4 and horizon 1"),
    (
        "X/y length mismatch",
        "mismatch.npz",
        _npz(y=NPZ["y"][:-1]),
        [],
        "y has 89 labels but X has 90 sequences",
    ),
    (
        "lengths above the padded length",
        "long.npz",
        _npz(lengths=_lengths_with(4, 13)),
        [],
        "lengths must lie in [1, 12] (the padded length of X), found 13 at index 4",
    ),
    (
        "zero length",
        "zero.npz",
        _npz(lengths=_lengths_with(7, 0)),
        [],
        "lengths must lie in [1, 12] (the padded length of X), found 0 at index 7",
    ),
    (
        "single class",
        "one.npz",
        _npz(y=np.full(90, "low")),
        [],
        "y has a single class (low); need at least two",
    ),
    (
        "empty split",
        "few.npz",
        _npz(X=NPZ["X"][:3], y=NPZ["y"][:3], lengths=NPZ["lengths"][:3]),
        [],
        "3 sequences leave an empty test split",
    ),
    (
        "NaN inside a sequence",
        "nan.npz",
        _npz(X=_nan_inside()),
        [],
        "X holds a NaN or infinite value (sequence 3, step 1, channel 0)",
    ),
    (
        "NaN padding without lengths",
        "nolengths.npz",
        _npz(lengths=None),
        [],
        "X holds a NaN or infinite value (sequence {}, step {}, channel {}); "
        "give lengths if it is padding".format(*np.argwhere(np.isnan(NPZ["X"]))[0]),
    ),
    (
        "value beyond float32 in X",
        "huge.npz",
        _npz(X=NPZ["X"] * 1e200),
        [],
        "X holds {:g} (sequence 0, step 0, channel 0), beyond what float32 training can hold".format(
            NPZ["X"][0, 0, 0] * 1e200
        ),
    ),
    (
        "labels beyond int64",
        "bigint.npz",
        _npz(y=(np.arange(90) % 3 + 1) * 1e20),
        [],
        "y holds labels beyond the 64-bit integer range; use strings",
    ),
    ("unreadable npz", "junk.npz", _text("not a zip"), [], "not a readable NPZ file (not a zip archive"),
    ("missing array", "noy.npz", _npz(y=None), [], "array 'y' is missing (found: X, lengths)"),
    ("misspelt array", "typo.npz", _npz(lenghts=NPZ["lengths"]), [], "unexpected array(s) 'lenghts'"),
    (
        "test label unseen in training",
        "newlabel.npz",
        _npz(
            X_test=NPZ["X"][:9],
            y_test=np.array(["low", "odd"] * 4 + ["mid"]),
            lengths_test=NPZ["lengths"][:9],
        ),
        [],
        "y_test has label(s) odd that never occur in y",
    ),
    (
        "padded test arrays without lengths_test",
        "nolt.npz",
        _npz(X_test=NPZ["X"][:9], y_test=NPZ["y"][:9]),
        [],
        "X is padded (lengths given) but lengths_test is missing for X_test",
    ),
]


@pytest.mark.parametrize(
    ("filename", "write", "options", "message"),
    [case[1:] for case in BAD_INPUT],
    ids=[case[0] for case in BAD_INPUT],
)
def test_bad_input_exits_2_naming_the_file_and_leaves_the_database_alone(
    kept: dict,
    tmp_path: Path,
    filename: str,
    write: Callable[[Path], None] | None,
    options: list[str],
    message: str,
) -> None:
    path = tmp_path / filename
    if write is not None:
        write(path)
    _expect_refused(kept, ["--data", str(path), "--study", "other", *options], f"{path}: {message}")


def test_resuming_a_study_whose_file_went_bad_fails_before_any_trial(kept: dict) -> None:
    csv = Path(kept["csv"])
    good = csv.read_text()
    try:
        csv.write_text(good.replace("\n2020-01-01T05:00,", "\n2020-01-01T05:00,oops", 1))
        err = _expect_refused(
            kept, ["--study", "kept", "--n-trials", "4"], f"{csv}: column 'x' is not numeric"
        )
        assert "oops" in err
    finally:
        csv.write_text(good)


def test_a_built_in_dataset_without_its_package_is_refused(
    kept: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "sktime", None)
    _expect_refused(
        kept,
        ["--dataset", "japanese_vowels"],
        "japanese_vowels needs the data files shipped with sktime: pip install 'optuna-rnn[datasets]'",
    )


def test_forecast_series_errors_name_the_column() -> None:
    values = np.ones((40, 2))
    values[17, 1] = np.inf
    with pytest.raises(UsageError, match=r"s: column 'b' holds a NaN or infinite value \(row 17\)"):
        ForecastSeries(name="s", values=values, columns=("a", "b"))


def test_forecast_series_arguments_that_cannot_make_splits_are_refused() -> None:
    values = np.random.default_rng(0).normal(size=(100, 2))
    for fractions in ((0.6, 0.6), (0.5, 0.5), (0.0, 0.2)):  # no training rows, or an empty split
        with pytest.raises(ValueError, match="valid_fraction and test_fraction must lie in"):
            ForecastSeries(name="s", values=values, valid_fraction=fractions[0], test_fraction=fractions[1])
    with pytest.raises(ValueError, match="3 column names for 2 columns"):
        ForecastSeries(name="s", values=values, columns=("a", "b", "c"))
    with pytest.raises(TypeError, match="target is a column index"):
        ForecastSeries(name="s", values=values, columns=("a", "b"), target="b")  # type: ignore[arg-type]
    assert ForecastSeries(name="s", values=values, target=np.int64(0)).target == 0  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="split must be 'train', 'valid' or 'test', got 'validation'"):
        Trainer(device="cpu").evaluate(
            torch.nn.Linear(1, 1), ForecastSeries(name="s", values=values).windowed(8), "validation"
        )


def test_a_learning_curve_in_small_units_keeps_its_shape() -> None:
    # a target in metres measured at micrometre scale: rounding to 6 decimals flattened it to 1e-06
    history = [
        {"epoch": e, "train_loss": 0.5 / e, "val_loss": 0.4 / e, "val_metric": m, "seconds": 0.0123456789}
        for e, m in enumerate([7.566679e-07, 7.488304e-07, 7.428487e-07], start=1)
    ]
    curve = curve_attr(history)
    assert curve["val_metric"] == [7.56668e-07, 7.4883e-07, 7.42849e-07]
    assert curve["seconds"] == [0.0123457] * 3
    assert curve_attr([{**history[0], "val_metric": float("nan")}])["val_metric"] == [None]
