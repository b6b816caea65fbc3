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
* :func:`fill_gaps` fills a built-in series' missing values span by span, so
  that no filled value borrows from a later split.

The test split is never used for selection: it only scores the best trial.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from optuna_rnn.errors import UsageError
from optuna_rnn.space import FORECASTS, Choice, IntRange, SearchSpace, Task, check_task

#: Windowed copies of a forecasting series kept for reuse (the most recent one is always kept).
WINDOW_CACHE_BYTES = 256 * 2**20
# One lock for every series' window cache: trials of one study may run in threads (n_jobs).
_WINDOW_CACHE_LOCK = threading.Lock()
#: The largest magnitude a value may have: models train in float32 and keep the data's means.
FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True, eq=False)
class Split:
    """One split: ``X`` (n, time, channels) float32, ``y`` and optional ``lengths``.

    ``y`` is int64 class indices (classification) or float32 (n, outputs)
    scaled targets (forecasting). ``lengths`` (int64, CPU) is set for padded
    variable-length sequences and ``None`` when every sequence fills ``X``.
    Shapes and dtypes are checked here (a :class:`UsageError` says what is wrong), so that a
    split built by hand fails when it is made, not inside a trial.
    """

    X: torch.Tensor
    y: torch.Tensor
    lengths: torch.Tensor | None = None

    def __post_init__(self) -> None:
        X, y, lengths = self.X, self.y, self.lengths
        if not isinstance(X, torch.Tensor) or X.ndim != 3 or X.dtype != torch.float32:
            raise UsageError(
                f"Split X must be a float32 tensor shaped (n, time, channels), got {_describe(X)}"
            )
        if not isinstance(y, torch.Tensor) or y.ndim not in (1, 2) or len(y) != len(X):
            raise UsageError(f"Split y must be a tensor of {len(X)} rows, as X has, got {_describe(y)}")
        if lengths is not None and (
            not isinstance(lengths, torch.Tensor) or lengths.shape != (len(X),) or lengths.is_floating_point()
        ):
            raise UsageError(
                f"Split lengths must be a whole-number tensor of {len(X)} values, got {_describe(lengths)}"
            )

    def __len__(self) -> int:
        return int(self.X.shape[0])


def _nbytes(data: SequenceData) -> int:
    """Bytes held by ``data``'s tensors."""
    splits = (data.train, data.valid, data.test)
    return sum(t.nbytes for s in splits for t in (s.X, s.y, s.lengths) if t is not None)


@dataclass(frozen=True, eq=False)
class SequenceData:
    """Train / valid / test splits of a sequence task, ready for the trainer.

    ``target_scale`` converts an RMSE in scaled units back to the original
    units of the target (forecasting); ``classes`` names the class indices.
    ``input_mean`` and ``input_std`` (per channel) and ``target_mean`` are the
    training-split statistics the data was standardised with, which a model
    file keeps so that the model can be used on data in its original units.
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
    input_mean: tuple[float, ...] = ()
    input_std: tuple[float, ...] = ()
    target_mean: float = 0.0
    relative_channel: int | None = None

    def __post_init__(self) -> None:
        """Refuse splits that would fail late in training, or train and score wrongly.

        A forecasting ``y`` shaped ``(n,)`` against a model's ``(n, 1)`` output would broadcast
        into an ``(n, n)`` loss and a wrong RMSE with only a warning; labels out of range, float
        labels, empty splits and a channel count other than ``input_size`` fail inside torch.
        """
        check_task(self.task)
        splits = {"train": self.train, "valid": self.valid, "test": self.test}
        for name, split in splits.items():
            if not isinstance(split, Split):
                raise UsageError(f"{self.name}: {name} must be a Split, got {type(split).__name__}")
            if split.X.shape[-1] != self.input_size:
                raise UsageError(
                    f"{self.name}: {name} X has {split.X.shape[-1]} channels; input_size is {self.input_size}"
                )
            if self.task == "classification":
                self._check_labels(name, split)
            elif split.y.ndim != 2 or split.y.shape[1] != self.output_size or not split.y.is_floating_point():
                raise UsageError(
                    f"{self.name}: {name} y must be float targets shaped (n, {self.output_size}) "
                    f"(output_size), got {_describe(split.y)}; a (n,) vector needs y.unsqueeze(1)"
                )
        for name in ("train", "valid"):
            if len(splits[name]) == 0:
                raise UsageError(f"{self.name}: the {name} split is empty")

    def _check_labels(self, name: str, split: Split) -> None:
        y = split.y
        if y.ndim != 1 or y.dtype != torch.int64:
            raise UsageError(
                f"{self.name}: {name} y must be int64 class indices shaped (n,), got {_describe(y)} "
                "(y.long() converts whole-number labels)"
            )
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= self.output_size):
            raise UsageError(
                f"{self.name}: {name} labels must lie in 0..{self.output_size - 1} (output_size "
                f"{self.output_size} classes), got {int(y.min())}..{int(y.max())}"
            )

    def windowed(self, window: int | None, *, forecast: str = "level") -> SequenceData:
        """Classification data does not depend on the window or the forecast: itself."""
        del window, forecast
        return self

    def summary(self) -> dict[str, Any]:
        """What a study records about its data: task, shapes, split sizes and class names.

        ``classes[i]`` is the label (as a string) that class index ``i`` stands
        for: the mapping from the user's labels to the model's outputs.
        """
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
            "baseline": self.baseline(),
        }

    def baseline(self) -> dict[str, Any] | None:
        """The accuracy of always answering the training split's most frequent class.

        What a model must beat to have learnt anything: on imbalanced data a plain accuracy
        can look good and be no better. ``None`` for forecasting samples (the series has its own).
        """
        if self.task != "classification" or len(self.train) == 0:
            return None
        majority = int(torch.bincount(self.train.y.long()).argmax())
        scores = {
            name: _share(split.y.long() == majority)
            for name, split in (("valid", self.valid), ("test", self.test))
        }
        label = self.classes[majority] if self.classes else str(majority)
        return {"name": f"majority class ({label})", **scores}

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
        string labels, mapped to class indices in sorted order (numeric order
        for integers) and named by ``classes``, which the study records. Without
        ``X_test``, a stratified ``test_fraction`` is held out; with it (and
        ``lengths_test`` when ``X`` is padded) that is the test split, and every
        ``y_test`` label must occur in ``y``. Validation takes a stratified
        ``valid_fraction / (1 - test_fraction)`` of the remaining sequences, so
        train : valid is 70 : 15 by default either way. The split is fixed by
        ``seed`` (not by the study's seed) so every worker sees the same split.
        Bad arrays raise :class:`UsageError` naming ``name`` and the array.
        """
        X, y, lengths = _check_classification(X, y, lengths, name)
        if X_test is None and (y_test is not None or lengths_test is not None):
            raise UsageError(f"{name}: y_test or lengths_test given without X_test")
        if X_test is not None and y_test is None:
            raise UsageError(f"{name}: X_test given without y_test")
        if X_test is not None and lengths is not None and lengths_test is None:
            raise UsageError(f"{name}: X is padded (lengths given) but lengths_test is missing for X_test")
        check_fractions(name, valid_fraction, test_fraction, unit="sequences")
        classes, codes = _encode_labels(y, name, "y")
        if len(classes) < 2:
            raise UsageError(f"{name}: y has a single class ({classes[0]}); need at least two")
        idx = np.arange(len(codes))
        if X_test is None:
            idx, test_idx = _stratified(idx, codes, test_fraction, seed, name, "test")
            Xt, yt, lt = X[test_idx], codes[test_idx], _take(lengths, test_idx)
        else:
            Xt, yt_raw, lt = _check_classification(
                X_test, np.asarray(y_test), lengths_test, name, arrays=("X_test", "y_test", "lengths_test")
            )
            if Xt.shape[2] != X.shape[2]:
                raise UsageError(f"{name}: X_test has {Xt.shape[2]} channels but X has {X.shape[2]}")
            yt = _codes_for(yt_raw, classes, name)
            Xt, lt, X, lengths = _same_length(Xt, lt, X, lengths)
        train_idx, valid_idx = _stratified(
            idx, codes[idx], valid_fraction / (1 - test_fraction), seed, name, "valid"
        )
        if len(np.unique(codes[train_idx])) < 2:
            raise UsageError(f"{name}: the training split of y holds a single class; give more sequences")
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
            classes=classes,
            description=description,
            input_mean=tuple(float(m) for m in np.ravel(mean)),
            input_std=tuple(float(d) for d in np.ravel(std)),
        )


def check_fractions(name: str, valid_fraction: float, test_fraction: float, *, unit: str) -> None:
    """Refuse split fractions outside (0, 1), or that leave nothing to train on."""
    fractions = (valid_fraction, test_fraction)
    if (
        not all(isinstance(f, int | float | np.number) and 0 < f < 1 for f in fractions)
        or sum(fractions) >= 1
    ):
        raise UsageError(
            f"{name}: valid_fraction and test_fraction must lie in (0, 1) and leave {unit} for "
            f"training, got {valid_fraction} and {test_fraction}"
        )


def chronological_bounds(
    rows: int, *, valid_fraction: float = 0.15, test_fraction: float = 0.15
) -> tuple[int, int]:
    """Where the valid and the test span start in a series of ``rows`` steps.

    Rows ``[0, a)`` are the training span, ``[a, b)`` validation and ``[b, rows)`` test.
    """
    n_valid = int(round(rows * valid_fraction))
    n_test = int(round(rows * test_fraction))
    return rows - n_valid - n_test, rows - n_test


def fill_gaps(values: np.ndarray, bounds: tuple[int, int]) -> tuple[np.ndarray, int]:
    """Fill NaNs by linear interpolation inside each chronological span on its own.

    ``bounds`` are the starts of the valid and test spans
    (:func:`chronological_bounds`). A gap is bridged between the observed
    values either side of it *within its span*; a gap at a span's edge takes the
    span's nearest observed value. So a filled training value never depends on
    validation or test data, nor a filled validation value on test data.
    Returns the filled copy and how many values were missing.
    """
    values = np.array(values, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    missing = int(np.isnan(values).sum())
    edges = (0, *bounds, len(values))
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        for c in range(values.shape[1]):
            span = values[lo:hi, c]
            observed = np.flatnonzero(~np.isnan(span))
            if len(observed) == len(span):
                continue
            if len(observed) == 0:
                raise UsageError(f"rows {lo}..{hi - 1} of column {c} are all missing; nothing to fill from")
            gaps = np.flatnonzero(np.isnan(span))
            span[gaps] = np.interp(gaps, observed, span[observed])
    return values, missing


@dataclass(frozen=True, eq=False)
class ForecastSeries:
    """A multivariate time series to forecast ``horizon`` steps ahead.

    ``values`` is (time, channels) in original units; ``target`` indexes the
    predicted column, the others are covariates; ``times`` optionally labels
    each row (recorded as the first and last time of each split). Samples are
    assigned to train / valid / test by the time of their target,
    chronologically, so no target of a later split is ever seen in training;
    inputs may reach back into the previous span as context.
    """

    name: str
    values: np.ndarray
    target: int = -1
    horizon: int = 1
    valid_fraction: float = 0.15
    test_fraction: float = 0.15
    columns: tuple[str, ...] = ()
    description: str = ""
    times: tuple[str, ...] = ()
    min_train_windows: int = 16
    task: Task = field(default="forecasting", init=False)
    _cache: dict[tuple[int, str], SequenceData] = field(default_factory=dict, init=False, repr=False)
    _mean: np.ndarray = field(init=False, repr=False)
    _std: np.ndarray = field(init=False, repr=False)
    _change: tuple[float, float] = field(init=False, repr=False)  # mean and sd of the target's changes

    def __post_init__(self) -> None:
        values = np.asarray(self.values, dtype=np.float64)
        if values.ndim == 1:
            values = values[:, None]
        if values.ndim != 2 or values.shape[0] < 4 or values.shape[1] < 1:
            raise UsageError(f"{self.name}: need a (time, channels) series with at least 4 rows")
        bad = ~(np.abs(values) <= FLOAT32_MAX)  # NaN too
        if bad.any():
            row, col = (int(i[0]) for i in np.nonzero(bad))
            column = self.columns[col] if self.columns else str(col)
            problem = _unusable(values[row, col], f"row {row}")
            raise UsageError(f"{self.name}: column {column!r} holds {problem}")
        for name in ("horizon", "min_train_windows"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise UsageError(f"{self.name}: {name} must be a whole number >= 1, got {value!r}")
        if self.times and len(self.times) != len(values):
            raise ValueError(f"{self.name}: {len(self.times)} times for {len(values)} rows")
        if self.columns and len(self.columns) != values.shape[1]:
            raise ValueError(f"{self.name}: {len(self.columns)} column names for {values.shape[1]} columns")
        if isinstance(self.target, bool) or not isinstance(self.target, int | np.integer):
            raise TypeError(f"{self.name}: target is a column index (an int), got {self.target!r}")
        if not -values.shape[1] <= self.target < values.shape[1]:
            raise ValueError(f"{self.name}: target column {self.target} out of range")
        check_fractions(self.name, self.valid_fraction, self.test_fraction, unit="rows")
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "target", int(self.target) % values.shape[1])
        if self.n_train < 2 or self.n_valid < 1 or self.n_test < 1:
            raise UsageError(
                f"{self.name}: {len(values)} rows leave too few training rows, or an empty validation "
                "or test split "
                f"({self.valid_fraction:.0%} and {self.test_fraction:.0%} of the rows)"
            )
        stats = values[: self.n_train]
        std = stats.std(axis=0)
        object.__setattr__(self, "_mean", stats.mean(axis=0))
        object.__setattr__(self, "_std", np.where(std > 0, std, 1.0))
        target = values[: self.n_train, self.target]
        changes = target[self.horizon :] - target[: -self.horizon]  # over `horizon` rows, in training
        spread = float(changes.std()) if len(changes) > 1 else 0.0
        object.__setattr__(self, "_change", (float(changes.mean()) if len(changes) else 0.0, spread or 1.0))

    @property
    def bounds(self) -> tuple[int, int]:
        """Start rows of the valid and test spans."""
        return chronological_bounds(
            len(self.values), valid_fraction=self.valid_fraction, test_fraction=self.test_fraction
        )

    @property
    def n_train(self) -> int:
        return self.bounds[0]

    @property
    def n_valid(self) -> int:
        return self.bounds[1] - self.bounds[0]

    @property
    def n_test(self) -> int:
        return len(self.values) - self.bounds[1]

    @property
    def max_window(self) -> int:
        """The longest window that still leaves ``min_train_windows`` training samples."""
        return self.n_train - self.horizon + 1 - self.min_train_windows

    @property
    def input_size(self) -> int:
        return int(self.values.shape[1])

    def require_window(self, window: int) -> None:
        """Raise :class:`UsageError` unless a ``window``-step input fits this series and horizon."""
        if window < 1:
            raise UsageError(f"{self.name}: window must be >= 1, got {window}")
        if window > self.max_window:
            needed = window + self.horizon - 1 + self.min_train_windows
            raise UsageError(
                f"{self.name}: {len(self.values)} rows are too few for window {window} and "
                f"horizon {self.horizon}: the training span needs {needed} rows for "
                f"{self.min_train_windows} samples but has {self.n_train}; the longest usable "
                f"window is {max(self.max_window, 0)}"
            )

    def windowed(self, window: int | None, *, forecast: str = "level") -> SequenceData:
        """Samples of ``window`` steps predicting the target ``horizon`` steps after the last.

        ``forecast="level"`` standardises every channel with the training split's mean and
        standard deviation, and the target likewise. ``forecast="change"`` predicts the target's
        change from the window's last value instead, and gives the target's channel relative to
        that value; both are scaled by the spread of the target's changes in training. A trending
        series (co2) then stays in the range training saw, where its level would not.
        """
        if window is None:
            raise ValueError("forecasting needs a window length")
        if forecast not in FORECASTS:
            raise ValueError(f"forecast must be one of {', '.join(FORECASTS)}, got {forecast!r}")
        self.require_window(window)
        with _WINDOW_CACHE_LOCK:
            key = (window, forecast)
            data = self._cache.pop(key, None) or self._make_windows(window, forecast)
            self._cache[key] = data  # the most recently used last
            # Each window length copies the series about `window` times over: keep the recent ones
            # only, so a long study's memory does not grow with the lengths its trials drew.
            while len(self._cache) > 1 and sum(map(_nbytes, self._cache.values())) > WINDOW_CACHE_BYTES:
                del self._cache[next(iter(self._cache))]
        return data

    def target_times(self, window: int) -> dict[str, np.ndarray]:
        """Row of each sample's target, per split, in the order :meth:`windowed` holds them.

        Sample ``i`` reads rows ``t - horizon - window + 1 .. t - horizon`` and
        predicts row ``t``; it belongs to the split whose span holds ``t``.
        """
        target_time = np.arange(window - 1 + self.horizon, len(self.values))
        a, b = self.bounds
        return {
            "train": target_time[target_time < a],
            "valid": target_time[(target_time >= a) & (target_time < b)],
            "test": target_time[target_time >= b],
        }

    def _make_windows(self, window: int, forecast: str) -> SequenceData:
        scaled = ((self.values - self._mean) / self._std).astype(np.float32)
        views = np.lib.stride_tricks.sliding_window_view(scaled, window, axis=0)  # (start, ch, window)
        change = forecast == "change"
        target = self.values[:, self.target]  # float64, as __post_init__ keeps the values
        change_mean, change_sd = self._change

        def split(times: np.ndarray) -> Split:
            starts = times - self.horizon - window + 1
            X = np.ascontiguousarray(views[starts].transpose(0, 2, 1))
            if not change:
                return Split(
                    torch.from_numpy(X),
                    torch.from_numpy(np.ascontiguousarray(scaled[times, self.target][:, None])),
                )
            last = target[times - self.horizon]  # the window's last row
            rows = target[starts[:, None] + np.arange(window)]
            X[:, :, self.target] = (rows - last[:, None]) / change_sd
            y = ((target[times] - last - change_mean) / change_sd)[:, None].astype(np.float32)
            return Split(torch.from_numpy(X), torch.from_numpy(y))

        times = self.target_times(window)
        return SequenceData(
            name=self.name,
            task="forecasting",
            train=split(times["train"]),
            valid=split(times["valid"]),
            test=split(times["test"]),
            input_size=self.input_size,
            output_size=1,
            target_scale=change_sd if change else float(self._std[self.target]),
            description=self.description,
            # the target's channel, relative to the window's last value, is centred already
            input_mean=tuple(
                0.0 if change and c == self.target else float(m) for c, m in enumerate(self._mean)
            ),
            input_std=tuple(
                change_sd if change and c == self.target else float(d) for c, d in enumerate(self._std)
            ),
            target_mean=change_mean if change else float(self._mean[self.target]),
            relative_channel=self.target if change else None,
        )

    def baseline(self) -> dict[str, Any]:
        """The RMSE of persistence: forecasting each target as its value ``horizon`` rows earlier.

        The naive forecast a trained model must beat; on a trending series (co2) it often is
        hard to. Window-free, as the validation and test targets are their spans' rows.
        """
        target = self.values[:, self.target]
        a, b = self.bounds
        scores = {}
        for name, (lo, hi) in (("valid", (a, b)), ("test", (b, len(target)))):
            lo = max(lo, self.horizon)  # a horizon beyond the training span has no earlier value for all
            errors = target[lo:hi] - target[lo - self.horizon : hi - self.horizon]
            scores[name] = float(np.sqrt(np.mean(errors**2))) if len(errors) else None
        return {"name": "persistence (the last known value)", **scores}

    def model_meta(self) -> dict[str, Any]:
        """What a model file keeps to be used on new rows: input columns, target and horizon."""
        return {
            "columns": list(self.columns) or None,
            "target": self.columns[self.target] if self.columns else None,
            "horizon": self.horizon,
        }

    def summary(self) -> dict[str, Any]:
        """What a study records about its data: columns, horizon, split sizes (rows) and spans."""
        out: dict[str, Any] = {
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
            "baseline": self.baseline(),
        }
        if self.times:
            a, b = self.bounds
            spans = {"train": (0, a), "valid": (a, b), "test": (b, len(self.values))}
            out["split_times"] = {k: [self.times[lo], self.times[hi - 1]] for k, (lo, hi) in spans.items()}
        return out


Dataset = SequenceData | ForecastSeries


def _take(a: np.ndarray | None, idx: np.ndarray) -> np.ndarray | None:
    return None if a is None else a[idx]


def _stratified(
    idx: np.ndarray, codes: np.ndarray, fraction: float, seed: int, name: str, what: str
) -> tuple[np.ndarray, np.ndarray]:
    n_out = int(round(len(idx) * fraction))
    # A class with a single sequence cannot be stratified: it stays on the training side, and
    # the other classes are still split in proportion.
    pooled = np.bincount(codes)[codes] >= 2
    kept = idx[~pooled]
    if n_out >= 1 and not pooled.any():
        raise UsageError(
            f"{name}: every class has a single sequence, so none can be held out for the {what} "
            "split; give each class at least two"
        )
    if n_out < 1 or pooled.sum() - n_out < 1:
        raise UsageError(f"{name}: {len(idx)} sequences leave an empty {what} split")
    idx, codes = idx[pooled], codes[pooled]
    stratify = codes if min(n_out, len(idx) - n_out) >= len(np.unique(codes)) else None
    # Imported here: scikit-learn's model selection takes about a second to import, which every
    # command that does not split data (--help, best, report, dashboard) would otherwise pay.
    from sklearn.model_selection import train_test_split

    a, b = train_test_split(np.arange(len(idx)), test_size=n_out, random_state=seed, stratify=stratify)
    # Unstratified (fewer held-out sequences than classes), a class could leave the training
    # side altogether: one member of each such class goes back to it.
    back = [b[codes[b] == c][0] for c in np.setdiff1d(codes[b], codes[a])]
    if back:
        a, b = np.concatenate([a, back]), np.setdiff1d(b, back)
        if len(b) == 0:
            raise UsageError(f"{name}: {len(idx) + len(kept)} sequences leave an empty {what} split")
    return np.sort(np.concatenate([idx[a], kept])), np.sort(idx[b])


def _check_classification(
    X: np.ndarray,
    y: np.ndarray,
    lengths: np.ndarray | None,
    name: str,
    *,
    arrays: tuple[str, str, str] = ("X", "y", "lengths"),
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Validate one set of arrays; ``arrays`` names them in messages (``X_test``...)."""
    xn, yn, ln = arrays
    X = np.asarray(X)
    y = np.asarray(y)
    if X.ndim == 2:
        X = X[:, :, None]
    if X.ndim != 3:
        raise UsageError(f"{name}: {xn} must be (n, length, channels) or (n, length), got shape {X.shape}")
    if not (np.issubdtype(X.dtype, np.integer) or np.issubdtype(X.dtype, np.floating)):
        raise UsageError(f"{name}: {xn} must be numeric, got dtype {X.dtype}")
    if X.shape[0] == 0 or X.shape[1] == 0 or X.shape[2] == 0:
        raise UsageError(f"{name}: {xn} is empty (shape {X.shape})")
    X = X.astype(np.float64)
    if y.ndim != 1:
        raise UsageError(f"{name}: {yn} must be 1-D, one label per sequence; got shape {y.shape}")
    if len(y) != len(X):
        raise UsageError(f"{name}: {yn} has {len(y)} labels but {xn} has {len(X)} sequences")
    if lengths is not None:
        lengths = np.asarray(lengths)
        if lengths.shape != (len(X),) or not np.issubdtype(lengths.dtype, np.integer):
            raise UsageError(
                f"{name}: {ln} must be {len(X)} integers (one per sequence of {xn}), "
                f"got shape {lengths.shape} dtype {lengths.dtype}"
            )
        if lengths.min() < 1 or lengths.max() > X.shape[1]:
            bad = int(np.flatnonzero((lengths < 1) | (lengths > X.shape[1]))[0])
            raise UsageError(
                f"{name}: {ln} must lie in [1, {X.shape[1]}] (the padded length of {xn}), "
                f"found {lengths[bad]} at index {bad}"
            )
        valid = np.arange(X.shape[1])[None, :] < lengths[:, None]
        X = np.where(valid[:, :, None], X, 0.0)  # padding may hold anything, NaN included
        lengths = lengths.astype(np.int64)
    bad = ~(np.abs(X) <= FLOAT32_MAX)  # NaN too
    if bad.any():
        seq, step, channel = (int(i[0]) for i in np.nonzero(bad))
        value = X[seq, step, channel]
        hint = "" if lengths is not None or np.isfinite(value) else f"; give {ln} if it is padding"
        raise UsageError(
            f"{name}: {xn} holds {_unusable(value, f'sequence {seq}, step {step}, channel {channel}')}{hint}"
        )
    return X, y, lengths


def _unusable(value: float, where: str) -> str:
    """What is wrong with a value that is NaN, infinite or beyond float32's range, found ``where``."""
    if not np.isfinite(value):
        return f"a NaN or infinite value ({where})"
    limit = f"|x| <= {FLOAT32_MAX:.3g}"
    return f"{value:g} ({where}), beyond what float32 training can hold ({limit}); rescale it"


def _encode_labels(y: np.ndarray, name: str, array: str) -> tuple[tuple[str, ...], np.ndarray]:
    """Class names (sorted; numeric order for integer labels) and each label's class index."""
    if y.dtype == object:  # pandas strings and categoricals arrive as Python objects
        if all(isinstance(v, str) for v in y):
            y = y.astype(str)
        elif all(isinstance(v, bytes) for v in y):
            y = np.array(y.tolist(), dtype=bytes)
        elif all(isinstance(v, int | np.integer) and not isinstance(v, bool | np.bool_) for v in y):
            y = y.astype(np.int64)
    if y.dtype.kind == "S":  # byte strings, as h5py and older NumPy files hold text
        try:
            y = np.char.decode(y, "utf-8")
        except UnicodeDecodeError:
            raise UsageError(f"{name}: {array} holds byte strings that are not UTF-8 text") from None
    if np.issubdtype(y.dtype, np.floating):
        if not np.isfinite(y).all() or not np.all(y == np.round(y)):
            raise UsageError(f"{name}: {array} holds non-integer numbers; labels must be integers or strings")
        if np.abs(y).max(initial=0) >= 2.0**63:
            raise UsageError(f"{name}: {array} holds labels beyond the 64-bit integer range; use strings")
        y = y.astype(np.int64)
    if not any(np.issubdtype(y.dtype, kind) for kind in (np.integer, np.bool_, np.str_)):
        raise UsageError(f"{name}: {array} must hold integer or string labels, got dtype {y.dtype}")
    values, codes = np.unique(y, return_inverse=True)
    return tuple(str(v) for v in values), codes.astype(np.int64)


def _codes_for(y: np.ndarray, classes: tuple[str, ...], name: str) -> np.ndarray:
    """Class indices of ``y_test`` labels, which must all occur among the training labels."""
    test_classes, test_codes = _encode_labels(y, name, "y_test")
    index = {c: i for i, c in enumerate(classes)}
    unknown = [c for c in test_classes if c not in index]
    if unknown:
        raise UsageError(f"{name}: y_test has label(s) {', '.join(unknown[:5])} that never occur in y")
    return np.array([index[c] for c in test_classes], dtype=np.int64)[test_codes]


def _same_length(
    A: np.ndarray, la: np.ndarray | None, B: np.ndarray, lb: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray | None]:
    """Zero-pad two sets of sequences along time to the same length (lengths unchanged)."""
    T = max(A.shape[1], B.shape[1])

    def pad(X: np.ndarray) -> np.ndarray:
        return X if X.shape[1] == T else np.pad(X, ((0, 0), (0, T - X.shape[1]), (0, 0)))

    if A.shape[1] != B.shape[1]:
        # a shorter equal-length set gains padding, so it needs its lengths
        la = la if la is not None or A.shape[1] == T else np.full(len(A), A.shape[1], np.int64)
        lb = lb if lb is not None or B.shape[1] == T else np.full(len(B), B.shape[1], np.int64)
    return pad(A), la, pad(B), lb


def pad_sequences(sequences: list[np.ndarray], *, length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Stack (length_i, channels) arrays into zero-padded (n, length, channels) and their lengths."""
    if not sequences:
        raise UsageError("no sequences to pad")
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    longest = int(lengths.max())
    if length is not None and length < longest:
        raise UsageError(f"cannot pad to length {length}: the longest sequence has {longest} steps")
    T = longest if length is None else length
    X = np.zeros((len(sequences), T, sequences[0].shape[1]), dtype=np.float64)
    for i, seq in enumerate(sequences):
        X[i, : len(seq)] = seq
    return X, lengths


def _channel_stats(X: np.ndarray, lengths: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    if lengths is None:
        flat = X.reshape(-1, X.shape[2])
    else:
        flat = X[np.arange(X.shape[1])[None, :] < lengths[:, None]]
    std = flat.std(axis=0)
    return flat.mean(axis=0), np.where(std > 0, std, 1.0)


def fit_space(space: SearchSpace, dataset: Dataset) -> SearchSpace:
    """Narrow the window range (or choice) to what a forecasting series can serve.

    Derived from the data, not recorded: every worker derives the same space. A range the
    data cannot serve at all (its shortest window is too long) is a :class:`UsageError`.
    """
    if not isinstance(dataset, ForecastSeries):
        return space
    longest = dataset.max_window
    window = space.window
    if isinstance(window, IntRange):
        dataset.require_window(window.low)  # too few rows for the shortest window: UsageError
        if window.high > longest:  # the longest window on the range's step grid
            high = window.low + (longest - window.low) // window.step * window.step
            return space.replace(window=IntRange(window.low, high, window.log, window.step))
    elif isinstance(window, Choice):
        options = [int(w) for w in window.options]  # type: ignore[arg-type]
        dataset.require_window(min(options))
        if max(options) > longest:
            return space.replace(window=Choice([w for w in options if w <= longest]))
    elif isinstance(window, int):
        dataset.require_window(window)
    return space


def _share(hits: torch.Tensor) -> float | None:
    """The fraction of ``True`` in ``hits``; ``None`` when it is empty."""
    return float(hits.double().mean()) if hits.numel() else None


def _describe(value: object) -> str:
    """``dtype`` and shape of a tensor, else the type: what a refused split was given."""
    if isinstance(value, torch.Tensor):
        return f"{str(value.dtype).removeprefix('torch.')} {tuple(value.shape)}"
    return type(value).__name__
