"""Built-in datasets: loaded offline, with the documented shapes, classes and disjoint splits."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from optuna_rnn import DatasetSpec, load_dataset
from optuna_rnn.cli import main
from optuna_rnn.data import ForecastSeries, chronological_bounds, fill_gaps, pad_sequences
from optuna_rnn.datasets import DATASETS
from optuna_rnn.errors import UsageError
from optuna_rnn.readers import read_ts
from tests.conftest import ROOT, cli_env

# Runs in a subprocess with every network route closed: proxies point at a
# dead port and any socket connection raises. Prints one JSON fact sheet per dataset.
OFFLINE_FACTS = r"""
import hashlib, json, socket, sys
import numpy as np

def refuse(*args, **kwargs):
    raise OSError("network access attempted while loading a built-in dataset")

socket.socket.connect = refuse
socket.socket.connect_ex = refuse
socket.create_connection = refuse

from optuna_rnn import DatasetSpec, load_dataset
from optuna_rnn.cli import main
from optuna_rnn.data import ForecastSeries

def digests(split):
    lengths = split.lengths.numpy() if split.lengths is not None else [split.X.shape[1]] * len(split)
    return [hashlib.sha1(x[:n].numpy().tobytes()).hexdigest() for x, n in zip(split.X, lengths)]

facts = {}
for name in sys.argv[1:]:
    data = load_dataset(name)
    fact = {"summary": data.summary()}
    if isinstance(data, ForecastSeries):
        fact["values_finite"] = bool(np.isfinite(data.values).all())
        for window in (8, 64):
            times = data.target_times(window)
            windowed = data.windowed(window)
            scaled = (data.values[:, data.target] - data._mean[data.target]) / data._std[data.target]
            fact[f"window{window}"] = {
                k: {
                    "n": len(t),
                    "first": int(t[0]),
                    "last": int(t[-1]),
                    "increasing": bool(np.all(np.diff(t) > 0)),
                    "y_matches": bool(np.allclose(getattr(windowed, k).y[:, 0], scaled[t], atol=1e-5)),
                    "X_shape": list(getattr(windowed, k).X.shape),
                }
                for k, t in times.items()
            }
    else:
        fact["splits"] = {}
        for part in ("train", "valid", "test"):
            split = getattr(data, part)
            lengths = split.lengths.numpy() if split.lengths is not None else None
            fact["splits"][part] = {
                "X_shape": list(split.X.shape),
                "class_counts": np.bincount(split.y.numpy(), minlength=data.output_size).tolist(),
                "min_length": int(lengths.min()) if lengths is not None else None,
                "max_length": int(lengths.max()) if lengths is not None else None,
                "padding_zero": bool(
                    lengths is None
                    or (split.X[np.arange(split.X.shape[1])[None, :] >= lengths[:, None]] == 0).all()
                ),
                "digests": digests(split),
            }
    facts[name] = fact
print(json.dumps(facts))
"""


@pytest.fixture(scope="module")
def offline_facts() -> dict:
    env = cli_env(HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9", NO_PROXY="")
    env.update(http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9")
    out = subprocess.run(
        [sys.executable, "-c", OFFLINE_FACTS, *DATASETS],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_every_builtin_dataset_loads_offline(offline_facts: dict) -> None:
    assert set(offline_facts) == {"digits", "sunspots", "japanese_vowels", "co2"}


@pytest.mark.parametrize(
    ("name", "channels", "max_length", "splits", "class_totals"),
    [
        ("digits", 8, 8, (1258, 269, 270), [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]),
        # the files' own split: 270 training utterances (30 per speaker), 370 test ones
        ("japanese_vowels", 12, 29, (222, 48, 370), [61, 65, 118, 74, 59, 54, 70, 80, 59]),
    ],
)
def test_classification_shapes_classes_and_disjoint_splits(
    offline_facts: dict,
    name: str,
    channels: int,
    max_length: int,
    splits: tuple[int, int, int],
    class_totals: list[int],
) -> None:
    fact = offline_facts[name]
    parts = fact["splits"]
    assert tuple(len(parts[p]["digests"]) for p in ("train", "valid", "test")) == splits
    assert tuple(fact["summary"]["splits"].values()) == splits
    for part in parts.values():
        assert part["X_shape"][1:] == [max_length, channels]
        assert part["padding_zero"]
    totals = np.sum([parts[p]["class_counts"] for p in parts], axis=0)
    assert totals.tolist() == class_totals
    assert all(min(parts[p]["class_counts"]) > 0 for p in parts)  # every class in every split
    seen: set[str] = set()
    for part in parts.values():
        digests = set(part["digests"])
        assert len(digests) == len(part["digests"]), "a sequence occurs twice in one split"
        assert not digests & seen, "a sequence occurs in two splits"
        seen |= digests


def test_japanese_vowels_is_raw_variable_length(offline_facts: dict) -> None:
    fact = offline_facts["japanese_vowels"]
    assert fact["summary"]["variable_length"] is True
    assert fact["summary"]["classes"] == [str(i) for i in range(1, 10)]
    lengths = [(s["min_length"], s["max_length"]) for s in fact["splits"].values()]
    assert min(lo for lo, _ in lengths) == 7 and max(hi for _, hi in lengths) == 29
    train_counts = np.add(fact["splits"]["train"]["class_counts"], fact["splits"]["valid"]["class_counts"])
    assert train_counts.tolist() == [30] * 9  # the training file, stratified into train + valid


@pytest.mark.parametrize(("name", "rows"), [("sunspots", 309), ("co2", 2284)])
def test_forecasting_target_times_are_disjoint_and_ordered(offline_facts: dict, name: str, rows: int) -> None:
    fact = offline_facts[name]
    assert fact["summary"]["rows"] == rows and fact["values_finite"]
    n_train, valid_start = chronological_bounds(rows)
    assert fact["summary"]["splits"] == {
        "train": n_train,
        "valid": valid_start - n_train,
        "test": rows - valid_start,
    }
    for window in (8, 64):
        parts = fact[f"window{window}"]
        assert parts["train"]["first"] == window  # the first target follows a full window
        assert parts["train"]["last"] == n_train - 1
        assert parts["valid"]["first"] == n_train and parts["valid"]["last"] == valid_start - 1
        assert parts["test"]["first"] == valid_start and parts["test"]["last"] == rows - 1
        for part in parts.values():
            assert part["increasing"] and part["y_matches"]
            assert part["X_shape"] == [part["n"], window, 1]


def test_co2_and_sunspots_split_times_are_recorded(offline_facts: dict) -> None:
    times = offline_facts["co2"]["summary"]["split_times"]
    assert times == {
        "train": ["1958-03-29", "1988-11-05"],
        "valid": ["1988-11-12", "1995-06-03"],
        "test": ["1995-06-10", "2001-12-29"],
    }
    years = offline_facts["sunspots"]["summary"]["split_times"]  # 217 / 46 / 46 of 1700-2008
    assert years == {"train": ["1700", "1916"], "valid": ["1917", "1962"], "test": ["1963", "2008"]}


def test_co2_missing_weeks_are_interpolated_inside_the_training_span() -> None:
    from statsmodels.datasets import co2

    raw = co2.load_pandas().data["co2"].to_numpy()
    missing = np.flatnonzero(np.isnan(raw))
    n_train, _ = chronological_bounds(len(raw))
    assert len(missing) == 59 and missing.max() < n_train  # as the description says
    assert "59 weeks" in DATASETS["co2"].description and "interpolation" in DATASETS["co2"].description
    data = load_dataset("co2")
    assert isinstance(data, ForecastSeries)
    filled = data.values[:, 0]
    observed = ~np.isnan(raw)
    assert np.array_equal(filled[observed], raw[observed])  # measured weeks untouched
    for i in missing:  # each filled week lies on the line between its measured neighbours
        lo = np.flatnonzero(observed[:i])[-1]
        hi = i + np.flatnonzero(observed[i:])[0]
        expected = raw[lo] + (raw[hi] - raw[lo]) * (i - lo) / (hi - lo)
        assert filled[i] == pytest.approx(expected)


def test_fill_gaps_never_reads_across_a_split_boundary() -> None:
    values = np.array([1.0, np.nan, 3.0, np.nan, 10.0, np.nan, 12.0, np.nan, np.nan, 20.0, 30.0])
    bounds = (4, 8)  # train 0..3, valid 4..7, test 8..10
    filled, missing = fill_gaps(values, bounds)
    assert missing == 5
    # 3 is a train-span edge gap: it takes the span's last value, not a blend with 10
    # 7 is a valid-span edge gap: it repeats 12, never looking at the test value 20
    # 8 is a test-span edge gap: it takes the test span's first value
    assert filled[:, 0].tolist() == [1.0, 2.0, 3.0, 3.0, 10.0, 11.0, 12.0, 12.0, 20.0, 20.0, 30.0]
    changed = values.copy()
    changed[4:] += 100.0  # later spans change: the training span's filling does not
    assert fill_gaps(changed, bounds)[0][:4, 0].tolist() == filled[:4, 0].tolist()
    with pytest.raises(UsageError, match="rows 4..7 of column 0 are all missing"):
        fill_gaps(np.array([1.0, 2, 3, 4, np.nan, np.nan, np.nan, np.nan, 5, 6]), (4, 8))


def test_japanese_vowels_without_sktime_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sktime", None)  # what an absent package looks like to find_spec
    with pytest.raises(UsageError, match=r"pip install 'optuna-rnn\[datasets\]'"):
        load_dataset("japanese_vowels")


def test_read_ts_reads_unequal_lengths_and_refuses_missing_values(tmp_path: Path) -> None:
    good = tmp_path / "tiny.ts"
    good.write_text(
        "# a comment\n@problemName tiny\n@timeStamps false\n@univariate false\n@dimensions 2\n"
        "@equalLength false\n@classLabel true a b\n@data\n"
        "1,2,3:4,5,6:a\n7,8:9,10:b\n"
    )
    sequences, labels = read_ts(good)
    assert [s.tolist() for s in sequences] == [[[1, 4], [2, 5], [3, 6]], [[7, 9], [8, 10]]]
    assert labels.tolist() == ["a", "b"]
    bad = tmp_path / "missing.ts"
    bad.write_text("@classLabel true a\n@data\n1,?,3:4,5,6:a\n")
    with pytest.raises(UsageError, match=r"missing.ts: line 3: a value is missing or not a number"):
        read_ts(bad)
    ragged = tmp_path / "ragged.ts"
    ragged.write_text("@classLabel true a\n@data\n1,2,3:4,5:a\n")
    with pytest.raises(UsageError, match="line 3: channels of unequal length"):
        read_ts(ragged)


def test_datasets_command_lists_task_shape_source_and_how_data_is_cleaned(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["datasets"]) == 0
    stdout = capsys.readouterr().out
    for dataset in DATASETS.values():
        row = next(line for line in stdout.splitlines() if line.startswith(dataset.name + " "))
        assert dataset.task in row and dataset.shape in row and dataset.source in row
    text = " ".join(stdout.split())
    assert "co2: Weekly atmospheric CO2" in text and "linear interpolation" in text


def test_a_builtin_dataset_refuses_a_target_or_horizon_of_its_own() -> None:
    # recorded on the study, they would claim a forecast the data never made
    with pytest.raises(UsageError, match="target and horizon apply to data files only; built-in 'sunspots'"):
        DatasetSpec(name="sunspots", horizon=5)
    with pytest.raises(UsageError, match="apply to data files only"):
        DatasetSpec(name="co2", target="bogus")


def test_pad_sequences_refuses_a_length_shorter_than_the_data_and_an_empty_list() -> None:
    X, lengths = pad_sequences([np.ones((5, 2)), np.ones((3, 2))], length=6)
    assert X.shape == (2, 6, 2) and lengths.tolist() == [5, 3] and X[1, 3:].sum() == 0
    with pytest.raises(UsageError, match="cannot pad to length 4: the longest sequence has 5 steps"):
        pad_sequences([np.ones((5, 2)), np.ones((3, 2))], length=4)
    with pytest.raises(UsageError, match="no sequences to pad"):
        pad_sequences([])
