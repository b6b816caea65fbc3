"""Readers for the user's own data: a forecasting CSV or a classification NPZ.

Formats (see the README):

* CSV, one row per time step with a header. ``target`` (default: the last
  numeric column) is forecast ``horizon`` steps ahead; other numeric columns
  are covariates. A column named ``time``, ``date``, ``timestamp`` or ``ds``
  orders the rows and is not used as an input.
* NPZ with ``X`` (n, length, channels) or (n, length), ``y`` (n,) integer or
  string labels, optional ``lengths`` (n,) for padded variable-length
  sequences, optional ``X_test``/``y_test`` (and ``lengths_test``).

Every problem raises :class:`~optuna_rnn.errors.UsageError` naming the file
and the column or array at fault.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from optuna_rnn.data import Dataset, ForecastSeries, SequenceData
from optuna_rnn.errors import UsageError

TIME_COLUMNS = ("time", "date", "timestamp", "ds", "datetime")


def read_file(path: Path, *, target: str | None = None, horizon: int = 1) -> Dataset:
    """Read ``path`` by its suffix: ``.csv`` for forecasting, ``.npz`` for classification."""
    if not path.exists():
        raise UsageError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return read_csv(path, target=target, horizon=horizon)
    if suffix == ".npz":
        if target is not None:
            raise UsageError(f"{path}: --target applies to CSV files only")
        return read_npz(path)
    raise UsageError(f"{path}: unsupported file type {suffix!r}; use .csv or .npz")


def read_csv(path: Path, *, target: str | None = None, horizon: int = 1) -> ForecastSeries:
    """A forecasting series from a CSV file (see the module docstring)."""
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    if frame.empty:
        raise UsageError(f"{path}: no data rows")
    time_cols = [c for c in frame.columns if str(c).strip().lower() in TIME_COLUMNS]
    if time_cols:
        order = pd.to_datetime(frame[time_cols[0]], errors="coerce")
        if order.isna().any():
            order = pd.to_numeric(frame[time_cols[0]], errors="coerce")
        if order.isna().any():
            raise UsageError(f"{path}: column {time_cols[0]!r} has values that are not times")
        frame = frame.iloc[np.argsort(order.to_numpy(), kind="stable")].drop(columns=time_cols)
    if target is not None and target not in frame.columns:
        raise UsageError(
            f"{path}: target column {target!r} not found; columns: {', '.join(map(str, frame.columns))}"
        )
    for column in frame.columns:
        numeric = pd.to_numeric(frame[column], errors="coerce")
        bad = numeric.isna() & frame[column].notna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0]) + 2  # header is line 1
            raise UsageError(
                f"{path}: column {column!r} is not numeric (line {row}: {frame[column].iloc[row - 2]!r})"
            )
        frame[column] = numeric
    if frame.shape[1] == 0:
        raise UsageError(f"{path}: no numeric columns")
    target = target if target is not None else str(frame.columns[-1])
    for column in frame.columns:
        values = frame[column].to_numpy(dtype=np.float64)
        if not np.isfinite(values).all():
            row = int(np.flatnonzero(~np.isfinite(values))[0]) + 2
            raise UsageError(f"{path}: column {column!r} has a missing or infinite value (line {row})")
    columns = tuple(str(c) for c in frame.columns)
    series = ForecastSeries(
        name=path.stem,
        values=frame.to_numpy(dtype=np.float64),
        target=columns.index(target),
        horizon=horizon,
        columns=columns,
        description=f"{path.name}: forecast {target!r} {horizon} step(s) ahead "
        f"from {len(columns)} column(s); chronological split, scaling fit on train.",
    )
    if series.max_window < 1:
        raise UsageError(
            f"{path}: {len(frame)} rows are too few for horizon {horizon} "
            f"(need at least {series.min_train_windows + horizon} training rows)"
        )
    return series


def read_npz(path: Path) -> SequenceData:
    """Classification sequences from an NPZ file (see the module docstring)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise UsageError(f"{path}: not a readable NPZ file ({exc})") from None
    for required in ("X", "y"):
        if required not in arrays:
            raise UsageError(f"{path}: array {required!r} is missing; found {', '.join(arrays)}")
    if ("X_test" in arrays) != ("y_test" in arrays):
        raise UsageError(f"{path}: give both X_test and y_test, or neither")
    return SequenceData.from_arrays(
        arrays["X"],
        arrays["y"],
        name=str(path),
        lengths=arrays.get("lengths"),
        X_test=arrays.get("X_test"),
        y_test=arrays.get("y_test"),
        lengths_test=arrays.get("lengths_test"),
        description=f"{path.name}: classification of {len(arrays['X'])} sequences",
    )
