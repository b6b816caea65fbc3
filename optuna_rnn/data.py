"""Sequence data ready for training: splits, scaling, forecasting windows, padding.

Two kinds of dataset feed the trainer:

* :class:`SequenceData` holds train / valid / test tensors for classification
  (and, once windowed, for forecasting). Classification splits are stratified;
  features are standardised per channel with statistics of the training split
  only (padding excluded).
* :class:`ForecastSeries` holds one multivariate series. Splits are
  chronological (by the time of the predicted value); scaling is fit on the
  training span only; :meth:`ForecastSeries.windowed` cuts it into
  ``(window, channels) -> value at t + horizon`` samples for a sampled window length.

The test split is never used for selection: it only scores the best trial.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from optuna_rnn.errors import UsageError
from optuna_rnn.space import Task


@dataclass(frozen=True)
class Split:
    """One split: ``X`` (n, time, channels) float32, ``y`` and optional ``lengths``.

    ``y`` is int64 class indices (classification) or float32 (n, outputs)
    scaled targets (forecasting). ``lengths`` (int64, CPU) is set for padded
    variable-length sequences and ``None`` when every sequence fills ``X``.
    """

    X: torch.Tensor
    y: torch.Tensor
    lengths: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.X.shape[0])


@dataclass(frozen=True)
class SequenceData:
    """Train / valid / test splits of a sequence task, ready for the trainer.

    ``target_scale`` converts an RMSE in scaled units back to the original
    units of the target (forecasting); ``classes`` names the class indices.
    """

    name: str
    task: Task
    train: Split
    valid: Split
    test: Split
    input_size: int
    output_size: int
    classes: tuple[str, ...] | None = None
    target_scale: float = 1.0
    description: str = ""

    def windowed(self, window: int | None) -> SequenceData:
        """Classification data does not depend on the window: itself."""
        del window
        return self

    def summary(self) -> dict[str, Any]:
        """What a study records about its data: task, shapes and split sizes."""
        return {
            "name": self.name,
            "task": self.task,
            "input_size": self.input_size,
            "output_size": self.output_size,
            "max_length": int(self.train.X.shape[1]),
            "variable_length": self.train.lengths is not None,
            "splits": {"train": len(self.train), "valid": len(self.valid), "test": len(self.test)},
            "classes": list(self.classes) if self.classes else None,
            "description": self.description,
        }

    @classmethod
    def from_arrays(
        cls,
        X: np.ndarray,
        y: np.ndarray,
        *,
        name: str,
        lengths: np.ndarray | None = None,
        X_test: np.ndarray | None = None,
        y_test: np.ndarray | None = None,
        lengths_test: np.ndarray | None = None,
        valid_fraction: float = 0.15,
        test_fraction: float = 0.15,
        seed: int = 0,
        description: str = "",
    ) -> SequenceData:
        """Classification data from arrays, split stratified and standardised on train.

        ``X`` is (n, length, channels) or (n, length); ``y`` holds integer or
        string labels. Without ``X_test``, a stratified ``test_fraction`` is held
        out; ``valid_fraction`` of the rest validates. The split is fixed by
        ``seed`` (not by the study's seed) so every worker sees the same split.
        """
        X, y, lengths = _check_classification(X, y, lengths, name)
        labels = y if y_test is None else np.concatenate([y, np.asarray(y_test)])
        classes, _ = np.unique(labels.astype(str), return_inverse=True)
        index = {c: i for i, c in enumerate(classes)}
        if len(classes) < 2:
            raise UsageError(f"{name}: y has a single class ({classes[0]}); need at least two")
        codes = np.array([index[str(v)] for v in y], dtype=np.int64)
        idx = np.arange(len(codes))
        if X_test is None:
            idx, test_idx = _stratified(idx, codes, test_fraction, seed, name, "test")
            Xt, yt, lt = X[test_idx], codes[test_idx], _take(lengths, test_idx)
        else:
            Xt, yt_raw, lt = _check_classification(X_test, np.asarray(y_test), lengths_test, name)
            yt = np.array([index[str(v)] for v in yt_raw], dtype=np.int64)
        train_idx, valid_idx = _stratified(
            idx, codes[idx], valid_fraction / (1 - test_fraction), seed, name, "valid"
        )
        mean, std = _channel_stats(X[train_idx], _take(lengths, train_idx))

        def split(Xs: np.ndarray, ys: np.ndarray, ls: np.ndarray | None) -> Split:
            Xn = ((Xs - mean) / std).astype(np.float32)
            if ls is not None:
                Xn[np.arange(Xs.shape[1])[None, :] >= ls[:, None]] = 0.0
            return Split(
                torch.from_numpy(Xn),
                torch.from_numpy(ys.astype(np.int64)),
                None if ls is None else torch.from_numpy(ls.astype(np.int64)),
            )

        return cls(
            name=name,
            task="classification",
            train=split(X[train_idx], codes[train_idx], _take(lengths, train_idx)),
            valid=split(X[valid_idx], codes[valid_idx], _take(lengths, valid_idx)),
            test=split(Xt, yt, lt),
            input_size=int(X.shape[2]),
            output_size=len(classes),
            classes=tuple(str(c) for c in classes),
            description=description,
        )


@dataclass(frozen=True, eq=False)
class ForecastSeries:
    """A multivariate time series to forecast ``horizon`` steps ahead.

    ``values`` is (time, channels) in original units; ``target`` indexes the
    predicted column, the others are covariates. Samples are assigned to
    train / valid / test by the time of their target, chronologically, so no
    target of a later split is ever seen in training; inputs may reach back
    into the previous span as context.
    """

    name: str
    values: np.ndarray
    target: int = -1
    horizon: int = 1
    valid_fraction: float = 0.15
    test_fraction: float = 0.15
    columns: tuple[str, ...] = ()
    description: str = ""
    min_train_windows: int = 16
    task: Task = field(default="forecasting", init=False)
    _cache: dict[int, SequenceData] = field(default_factory=dict, init=False, repr=False)
    _mean: np.ndarray = field(init=False, repr=False)
    _std: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        values = np.asarray(self.values, dtype=np.float64)
        if values.ndim == 1:
            values = values[:, None]
        if values.ndim != 2 or values.shape[0] < 4:
            raise UsageError(f"{self.name}: need a (time, channels) series with at least 4 rows")
        if not np.isfinite(values).all():
            raise UsageError(f"{self.name}: the series holds NaN or infinite values")
        if self.horizon < 1:
            raise UsageError(f"{self.name}: horizon must be >= 1, got {self.horizon}")
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "target", self.target % values.shape[1])
        if self.n_valid < 1 or self.n_test < 1:
            raise UsageError(f"{self.name}: {len(values)} rows leave an empty valid or test split")
        stats = values[: self.n_train]
        std = stats.std(axis=0)
        object.__setattr__(self, "_mean", stats.mean(axis=0))
        object.__setattr__(self, "_std", np.where(std > 0, std, 1.0))

    @property
    def n_train(self) -> int:
        return len(self.values) - self.n_valid - self.n_test

    @property
    def n_valid(self) -> int:
        return int(round(len(self.values) * self.valid_fraction))

    @property
    def n_test(self) -> int:
        return int(round(len(self.values) * self.test_fraction))

    @property
    def max_window(self) -> int:
        """The longest window that still leaves ``min_train_windows`` training samples."""
        return self.n_train - self.horizon + 1 - self.min_train_windows

    @property
    def input_size(self) -> int:
        return int(self.values.shape[1])

    def windowed(self, window: int | None) -> SequenceData:
        """Samples of ``window`` steps predicting the target ``horizon`` steps after the last."""
        if window is None:
            raise ValueError("forecasting needs a window length")
        if window < 1 or window > self.max_window:
            raise UsageError(
                f"{self.name}: window {window} is too long for {len(self.values)} rows "
                f"(horizon {self.horizon}); the longest usable is {max(self.max_window, 0)}"
            )
        if window not in self._cache:
            self._cache[window] = self._make_windows(window)
        return self._cache[window]

    def _make_windows(self, window: int) -> SequenceData:
        scaled = ((self.values - self._mean) / self._std).astype(np.float32)
        starts = np.arange(len(scaled) - window - self.horizon + 1)
        target_time = starts + window - 1 + self.horizon
        X = np.lib.stride_tricks.sliding_window_view(scaled, window, axis=0)[starts]
        X = np.ascontiguousarray(X.transpose(0, 2, 1))
        y = scaled[target_time, self.target][:, None]
        bounds = (self.n_train, self.n_train + self.n_valid)

        def split(mask: np.ndarray) -> Split:
            return Split(torch.from_numpy(X[mask]), torch.from_numpy(y[mask]))

        return SequenceData(
            name=self.name,
            task="forecasting",
            train=split(target_time < bounds[0]),
            valid=split((target_time >= bounds[0]) & (target_time < bounds[1])),
            test=split(target_time >= bounds[1]),
            input_size=self.input_size,
            output_size=1,
            target_scale=float(self._std[self.target]),
            description=self.description,
        )

    def summary(self) -> dict[str, Any]:
        """What a study records about its data: columns, horizon and split sizes (in rows)."""
        return {
            "name": self.name,
            "task": "forecasting",
            "input_size": self.input_size,
            "output_size": 1,
            "rows": len(self.values),
            "columns": list(self.columns),
            "target": self.columns[self.target] if self.columns else self.target,
            "horizon": self.horizon,
            "splits": {"train": self.n_train, "valid": self.n_valid, "test": self.n_test},
            "description": self.description,
        }


Dataset = SequenceData | ForecastSeries


def _take(a: np.ndarray | None, idx: np.ndarray) -> np.ndarray | None:
    return None if a is None else a[idx]


def _stratified(
    idx: np.ndarray, codes: np.ndarray, fraction: float, seed: int, name: str, what: str
) -> tuple[np.ndarray, np.ndarray]:
    counts = np.bincount(codes)
    counts = counts[counts > 0]
    n_out = int(round(len(idx) * fraction))
    if n_out < 1 or len(idx) - n_out < 1:
        raise UsageError(f"{name}: {len(idx)} sequences leave an empty {what} split")
    stratify = codes if counts.min() >= 2 and n_out >= len(counts) else None
    a, b = train_test_split(idx, test_size=n_out, random_state=seed, stratify=stratify)
    return np.sort(a), np.sort(b)


def _check_classification(
    X: np.ndarray, y: np.ndarray, lengths: np.ndarray | None, name: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    X = np.asarray(X)
    y = np.asarray(y)
    if X.ndim == 2:
        X = X[:, :, None]
    if X.ndim != 3:
        raise UsageError(f"{name}: X must be (n, length, channels) or (n, length), got {X.shape}")
    if not np.issubdtype(X.dtype, np.number):
        raise UsageError(f"{name}: X must be numeric, got dtype {X.dtype}")
    X = X.astype(np.float64)
    if y.ndim != 1 or len(y) != len(X):
        raise UsageError(f"{name}: y has shape {y.shape} but X has {len(X)} sequences")
    if lengths is not None:
        lengths = np.asarray(lengths)
        if lengths.shape != (len(X),) or not np.issubdtype(lengths.dtype, np.integer):
            raise UsageError(f"{name}: lengths must be {len(X)} integers, got {lengths.shape}")
        if lengths.min() < 1 or lengths.max() > X.shape[1]:
            raise UsageError(
                f"{name}: lengths must lie in [1, {X.shape[1]}], found {lengths.min()}..{lengths.max()}"
            )
        valid = np.arange(X.shape[1])[None, :] < lengths[:, None]
        if not np.isfinite(X[valid]).all():
            raise UsageError(f"{name}: X holds NaN or infinite values inside the sequences")
        X = np.where(valid[:, :, None], X, 0.0)
        lengths = lengths.astype(np.int64)
    elif not np.isfinite(X).all():
        raise UsageError(f"{name}: X holds NaN or infinite values")
    return X, y, lengths


def _channel_stats(X: np.ndarray, lengths: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    if lengths is None:
        flat = X.reshape(-1, X.shape[2])
    else:
        flat = X[np.arange(X.shape[1])[None, :] < lengths[:, None]]
    std = flat.std(axis=0)
    return flat.mean(axis=0), np.where(std > 0, std, 1.0)
