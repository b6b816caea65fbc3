"""Built-in datasets and the description of a study's data (:class:`DatasetSpec`).

Every built-in dataset ships inside an installed package, so nothing is ever
downloaded at run time: ``digits`` (scikit-learn), ``sunspots`` and ``co2``
(statsmodels), ``japanese_vowels`` (the raw ``.ts`` files that sktime ships,
read without importing sktime; ``pip install optuna-rnn[datasets]``).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from optuna_rnn.data import (
    Dataset,
    ForecastSeries,
    SequenceData,
    chronological_bounds,
    fill_gaps,
    pad_sequences,
)
from optuna_rnn.errors import UsageError


@dataclass(frozen=True)
class BuiltinDataset:
    """A dataset that ships with an installed package."""

    name: str
    task: str
    shape: str
    source: str
    description: str
    load: Callable[[], Dataset]


def _digits() -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return SequenceData.from_arrays(
        bunch.images,
        bunch.target,
        name="digits",
        description=DATASETS["digits"].description,
    )


def _sunspots() -> Dataset:
    from statsmodels.datasets import sunspots

    frame = sunspots.load_pandas().data
    return ForecastSeries(
        name="sunspots",
        values=frame[["SUNACTIVITY"]].to_numpy(),
        columns=("SUNACTIVITY",),
        times=tuple(str(int(year)) for year in frame["YEAR"]),  # the years each split covers, as co2's dates
        description=DATASETS["sunspots"].description,
    )


def _co2() -> Dataset:
    from statsmodels.datasets import co2

    frame = co2.load_pandas().data
    bounds = chronological_bounds(len(frame))
    values, _ = fill_gaps(frame[["co2"]].to_numpy(), bounds)
    return ForecastSeries(
        name="co2",
        values=values,
        columns=("co2",),
        times=tuple(str(t.date()) for t in frame.index),
        description=DATASETS["co2"].description,
    )


def _pinned(package: str) -> str:
    """``==<installed version>`` of ``package``, so that a reinstall does not upgrade it; else ``""``."""
    try:
        return f"=={version(package)}"
    except PackageNotFoundError:
        return ""


def japanese_vowels_files() -> tuple[Path, Path]:
    """The JapaneseVowels train and test ``.ts`` files that sktime ships (sktime is not imported)."""
    spec = importlib.util.find_spec("sktime")
    if spec is None or spec.origin is None:
        raise UsageError(
            "japanese_vowels needs the data files shipped with sktime: pip install 'optuna-rnn[datasets]'"
        )
    folder = Path(spec.origin).parent / "datasets" / "data" / "JapaneseVowels"
    files = (folder / "JapaneseVowels_TRAIN.ts", folder / "JapaneseVowels_TEST.ts")
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise UsageError(
            f"the sktime found at {folder.parent.parent.parent} lacks {', '.join(missing)}; reinstall it "
            f"with {sys.executable} -m pip install --force-reinstall --no-deps sktime{_pinned('sktime')}"
        )
    return files


def _japanese_vowels() -> Dataset:
    from optuna_rnn.readers import read_ts

    train_file, test_file = japanese_vowels_files()
    train, y = read_ts(train_file)
    test, y_test = read_ts(test_file)
    longest = max(len(s) for s in (*train, *test))
    X, lengths = pad_sequences(train, length=longest)
    X_test, lengths_test = pad_sequences(test, length=longest)
    return SequenceData.from_arrays(
        X,
        y.astype(np.int64),
        lengths=lengths,
        X_test=X_test,
        y_test=y_test.astype(np.int64),
        lengths_test=lengths_test,
        name="japanese_vowels",
        description=DATASETS["japanese_vowels"].description,
    )


DATASETS: dict[str, BuiltinDataset] = {
    d.name: d
    for d in (
        BuiltinDataset(
            name="digits",
            task="classification",
            shape="1797 sequences x 8 steps x 8 channels, 10 classes",
            source="scikit-learn load_digits",
            description=(
                "8x8 images of handwritten digits read row by row: 8 steps of 8 pixels. "
                "Stratified 70/15/15 split; pixels standardised on the training split."
            ),
            load=_digits,
        ),
        BuiltinDataset(
            name="sunspots",
            task="forecasting",
            shape="309 yearly values (1700-2008), 1 channel",
            source="statsmodels sunspots",
            description=(
                "Yearly mean sunspot activity, forecast one year ahead. Chronological "
                "70/15/15 split; scaling fit on the training span only."
            ),
            load=_sunspots,
        ),
        BuiltinDataset(
            name="japanese_vowels",
            task="classification",
            shape="640 sequences x 7-29 steps x 12 channels, 9 classes",
            source="UCI Japanese Vowels as sktime ships it ([datasets] extra)",
            description=(
                "Nine speakers uttering /ae/, one sequence of 12 LPC cepstrum coefficients per "
                "frame, classified by speaker. Raw variable length (7-29 frames): sequences are "
                "padded and batched by length; padding never reaches the model's output. "
                "The files' own split: 270 training utterances (30 per speaker; a stratified "
                "48 of them validate) and 370 test utterances. Coefficients standardised on the "
                "training split."
            ),
            load=_japanese_vowels,
        ),
        BuiltinDataset(
            name="co2",
            task="forecasting",
            shape="2284 weekly values (1958-2001), 1 channel",
            source="statsmodels co2 (Mauna Loa)",
            description=(
                "Weekly atmospheric CO2 at Mauna Loa (ppm), forecast one week ahead. Chronological "
                "70/15/15 split; scaling fit on the training span only. 59 weeks have no "
                "measurement (all before 1986, in the training span): each gap is filled by "
                "linear interpolation between the measured weeks either side of it within the "
                "same split span, so no validation or test value informs a filled one."
            ),
            load=_co2,
        ),
    )
}


@dataclass(frozen=True)
class DatasetSpec:
    """Which data a study tunes on: a built-in ``name`` or a user's file ``path``.

    ``target`` and ``horizon`` apply to forecasting CSV files. A spec is part of
    the configuration a study records, so workers load exactly the same data.
    """

    name: str | None = None
    path: str | None = None
    target: str | None = None
    horizon: int = 1

    def __post_init__(self) -> None:
        if (self.name is None) == (self.path is None):
            raise UsageError("give exactly one of --dataset NAME or --data PATH (name= or path=)")
        if self.name is not None and self.name not in DATASETS:
            raise UsageError(f"unknown dataset {self.name!r}; built-in datasets: {', '.join(DATASETS)}")
        if self.horizon < 1:
            raise UsageError(f"--horizon (horizon) must be >= 1, got {self.horizon}")
        if self.name is not None and (self.target is not None or self.horizon != 1):
            raise UsageError(
                f"target and horizon apply to data files only; built-in {self.name!r} has its own"
            )

    @property
    def label(self) -> str:
        """A short name: the built-in name or the file's stem."""
        return self.name if self.name is not None else Path(str(self.path)).stem

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load(self) -> Dataset:
        """Load and validate the data; bad data raises :class:`UsageError`."""
        if self.name is not None:
            return DATASETS[self.name].load()
        from optuna_rnn.readers import read_file

        return read_file(Path(str(self.path)), target=self.target, horizon=self.horizon)


def load_dataset(name: str) -> Dataset:
    """Load a built-in dataset by name."""
    return DatasetSpec(name=name).load()


def dataset_table() -> list[dict[str, str]]:
    """One row per built-in dataset: name, task, shape, source."""
    return [{"name": d.name, "task": d.task, "shape": d.shape, "source": d.source} for d in DATASETS.values()]
