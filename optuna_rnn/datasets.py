"""Built-in datasets and the description of a study's data (:class:`DatasetSpec`).

Every built-in dataset ships inside an installed package (scikit-learn,
statsmodels, ...), so nothing is ever downloaded at run time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from optuna_rnn.data import Dataset, ForecastSeries, SequenceData
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
        description=DATASETS["sunspots"].description,
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
            raise UsageError("give exactly one of --dataset NAME or --data PATH")
        if self.name is not None and self.name not in DATASETS:
            raise UsageError(f"unknown dataset {self.name!r}; built-in datasets: {', '.join(DATASETS)}")
        if self.horizon < 1:
            raise UsageError(f"--horizon must be >= 1, got {self.horizon}")

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
