"""Readers for data files: the user's forecasting CSV or classification NPZ, and ``.ts`` files.

Formats (see the README, "Your own data"):

* CSV, one row per time step with a header. ``target`` (default: the last
  column) is forecast ``horizon`` steps ahead; the other columns are
  covariates. Every column must be numeric, except a time column named
  ``time``, ``date``, ``datetime``, ``timestamp`` or ``ds`` (any case): it
  orders the rows (numbers or dates; no repeats), is recorded, and is not an
  input. Missing or infinite values are errors: fill them in the file first,
  so that how they were filled is the user's explicit choice.
* NPZ with ``X`` (n, length, channels) or (n, length), ``y`` (n,) integer or
  string labels, optional ``lengths`` (n,) for padded variable-length
  sequences, optional ``X_test``/``y_test`` (and ``lengths_test`` when ``X``
  is padded). Any other array name is refused, so that a misspelt
  ``lengths`` cannot silently turn padding into data.
* ``.ts`` (the sktime / UEA archive format) for the built-in datasets that
  ship in it: header lines (``#`` comments, ``@`` tags) then one case per
  line, channels separated by ``:``, values by ``,``, the class label last.

Every problem raises :class:`~optuna_rnn.errors.UsageError` with one line
naming the file and the column or array at fault.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from optuna_rnn.data import FLOAT32_MAX, Dataset, ForecastSeries, SequenceData
from optuna_rnn.errors import UsageError, first_line

TIME_COLUMNS = ("time", "date", "datetime", "timestamp", "ds")
NPZ_ARRAYS = ("X", "y", "lengths", "X_test", "y_test", "lengths_test")


def read_file(path: Path, *, target: str | None = None, horizon: int = 1) -> Dataset:
    """Read ``path`` by its suffix: ``.csv`` for forecasting, ``.npz`` for classification."""
    if not path.exists():
        raise UsageError(f"{path}: file not found")
    if not path.is_file():
        raise UsageError(f"{path}: not a file")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return read_csv(path, target=target, horizon=horizon)
    if suffix == ".npz":
        if target is not None or horizon != 1:
            raise UsageError(f"{path}: --target and --horizon apply to forecasting CSV files only")
        return read_npz(path)
    raise UsageError(f"{path}: unsupported file type {suffix or '(none)'!r}; use .csv or .npz")


def read_csv(path: Path, *, target: str | None = None, horizon: int = 1) -> ForecastSeries:
    """A forecasting series from a CSV file (see the module docstring)."""
    try:
        with warnings.catch_warnings():
            # Rows with one field more than the header: pandas would take the first field as an
            # index and shift every name onto the wrong values; index_col=False warns instead.
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(path, skipinitialspace=True, index_col=False)
    except pd.errors.ParserWarning:
        raise UsageError(
            f"{path}: the data rows have more fields than the header names; name every column "
            "(or remove trailing commas)"
        ) from None
    except pd.errors.ParserError as exc:
        if "fields in line" not in str(exc):  # anything but rows longer than the first row
            raise UsageError(f"{path}: not a readable CSV ({first_line(exc)})") from None
        frame = _read_uneven(path)
    except (pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
        raise UsageError(f"{path}: not a readable CSV ({first_line(exc)})") from None
    frame = _named_columns(path, frame)
    if frame.shape[1] == 1 and (separator := next((s for s in ";\t|" if s in frame.columns[0]), None)):
        raise UsageError(
            f"{path}: the header is one column, {frame.columns[0]!r}: the file looks separated by "
            f"{separator!r}; write it comma-separated"
        )
    if frame.empty:
        raise UsageError(f"{path}: no data rows below the header")
    time_cols = [c for c in frame.columns if c.lower() in TIME_COLUMNS]
    if len(time_cols) > 1:
        raise UsageError(f"{path}: several time columns ({', '.join(time_cols)}); keep one")
    time_col = time_cols[0] if time_cols else None
    if target is not None and target not in frame.columns:
        raise UsageError(f"{path}: target column {target!r} not found; columns: {', '.join(frame.columns)}")
    if target is not None and target == time_col:
        raise UsageError(f"{path}: target column {target!r} is the time column; choose a value column")
    order = None if time_col is None else _time_order(path, frame[time_col], time_col)
    value_cols = [c for c in frame.columns if c != time_col]
    if not value_cols:
        raise UsageError(f"{path}: no value columns besides the time column {time_col!r}")
    values = np.column_stack([_numeric_column(path, frame[c], c, time_col) for c in value_cols])
    times: tuple[str, ...] = ()
    if order is not None:
        values = values[order]
        times = tuple(frame[str(time_col)].astype(str).to_numpy()[order])
    target = target if target is not None else value_cols[-1]
    covariates = [c for c in value_cols if c != target]
    return ForecastSeries(
        name=str(path),
        values=values,
        target=value_cols.index(target),
        horizon=horizon,
        columns=tuple(value_cols),
        times=times,
        description=(
            f"{path.name}: forecast {target!r} {horizon} step(s) ahead"
            + (f" with covariates {', '.join(map(repr, covariates))}" if covariates else "")
            + (f"; rows ordered by {time_col!r}" if time_col else "; rows in file order")
            + ". Chronological 70/15/15 split; scaling fit on the training span only."
        ),
    )


def _read_uneven(path: Path) -> pd.DataFrame:
    """``path`` read row by row, for files whose later rows have more fields than the first one.

    pandas sizes the table by the header and first row and stops at a longer row. A longer row
    whose surplus fields are empty (a trailing comma on some rows only) loses them; one with a
    value there is refused, naming its line. The rows that are left go through pandas as any
    other file does, so that ``NA`` or ``True`` read the same with or without the commas.
    """
    width: int | None = None
    trimmed = io.StringIO()
    writer = csv.writer(trimmed)
    with path.open(newline="", encoding="utf-8-sig") as file:
        reader = csv.reader(file, skipinitialspace=True)
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue  # blank lines hold no row, as pandas reads them
            if width is None:
                width = len(row)
            elif len(row) > width and any(cell.strip() for cell in row[width:]):
                raise UsageError(
                    f"{path}: line {reader.line_num} has more fields than the header names; name "
                    "every column (or remove trailing commas)"
                )
            writer.writerow(row[:width])
    trimmed.seek(0)
    return pd.read_csv(trimmed, skipinitialspace=True, index_col=False)


def _named_columns(path: Path, frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with the header's own names: pandas renames a repeated name (``x.1``) and
    invents ``Unnamed: k`` for a blank one, so a typo in the header would pass unnoticed.

    A blank last name over an empty column (the trailing comma of a spreadsheet export) is
    dropped; any other blank or repeated name is refused.
    """
    header = _header_row(path)
    if len(header) != frame.shape[1]:  # pandas read the header differently: keep its names
        frame.columns = [str(c).strip() for c in frame.columns]
        return frame
    if header and not header[-1] and frame.iloc[:, -1].isna().all():
        header, frame = header[:-1], frame.iloc[:, :-1]
    for number, name in enumerate(header, start=1):
        if not name:
            raise UsageError(f"{path}: column {number} of the header has no name; name every column")
        if header.index(name) != number - 1:
            raise UsageError(f"{path}: column {name!r} appears twice in the header; names must differ")
    frame.columns = header
    return frame


def _header_row(path: Path) -> list[str]:
    """The first non-blank row of a CSV file, each name stripped (as pandas reads the header)."""
    with path.open(newline="", encoding="utf-8-sig") as file:
        for row in csv.reader(file, skipinitialspace=True):
            if any(cell.strip() for cell in row):
                return [cell.strip() for cell in row]
    return []


def _time_order(path: Path, column: pd.Series, name: str) -> np.ndarray:
    """The row order that sorts ``column`` (numbers or dates); missing or repeated times are errors."""
    missing = column.isna().to_numpy()
    if missing.any():
        raise UsageError(f"{path}: time column {name!r} has a missing value (line {_line(path, missing)})")
    keys = pd.to_numeric(column, errors="coerce")
    if keys.isna().any():
        numbers = keys.notna().to_numpy()
        keys = _parse_dates(path, column, name)
        dates = keys.notna().to_numpy()
        neither = ~numbers & ~dates
        if neither.any():
            raise UsageError(
                f"{path}: time column {name!r} has a value that is neither a number nor a date "
                f"(line {_line(path, neither)}: {column.to_numpy()[neither][0]!r})"
            )
        if not dates.all():  # each value is one or the other, and the odd ones out are wrong
            numbers_only, dates_only = numbers & ~dates, dates & ~numbers
            odd = numbers_only if numbers_only.sum() <= dates_only.sum() else dates_only
            raise UsageError(
                f"{path}: time column {name!r} mixes numbers and dates (line {_line(path, odd)}: "
                f"{column.to_numpy()[odd][0]!r}); write every time the same way"
            )
    repeat = keys.duplicated().to_numpy()
    if repeat.any():
        second = int(np.flatnonzero(repeat)[0])
        first_seen = int(np.flatnonzero((keys == keys.iloc[second]).to_numpy())[0])
        raise UsageError(
            f"{path}: time column {name!r} repeats {str(column.iloc[second])!r} "
            f"(lines {_file_line(path, first_seen)} and {_file_line(path, second)})"
        )
    return np.argsort(keys.to_numpy(), kind="stable")


def _parse_dates(path: Path, column: pd.Series, name: str) -> pd.Series:
    """``column``'s dates as UTC times, NaT where a value is not a date.

    ISO 8601 is read first: dates and date-times may mix, and so may UTC offsets (local
    times across a clock change). Other formats are read the way pandas infers from the
    first value, month first and day first: when both read every value but order the rows
    differently (``01/06/2024``), the column is ambiguous and refused rather than scrambled.
    """
    tries: list[pd.Series] = []
    impossible = _impossible_dayfirst(column)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "could not infer format"
        for options in ({"format": "ISO8601"}, {"dayfirst": False}, {"dayfirst": True}):
            try:
                keys = pd.to_datetime(column, utc=True, errors="coerce", **options)
            except (ValueError, TypeError, OverflowError):
                continue
            if "format" in options and not keys.isna().any():
                return keys
            if "dayfirst" not in options or options["dayfirst"] != impossible:
                tries.append(keys)
    complete = [keys for keys in tries if not keys.isna().any()]
    if len(complete) == 2 and not np.array_equal(
        np.argsort(complete[0].to_numpy(), kind="stable"), np.argsort(complete[1].to_numpy(), kind="stable")
    ):
        raise UsageError(
            f"{path}: time column {name!r} reads both as month/day and as day/month "
            f"(line {_file_line(path, 0)}: {column.iloc[0]!r}), which order the rows differently; "
            "write dates as YYYY-MM-DD"
        )
    if complete:
        return complete[0]
    return min(tries, key=lambda keys: int(keys.isna().sum()), default=pd.Series(pd.NaT, index=column.index))


def _impossible_dayfirst(column: pd.Series) -> bool | None:
    """The ``dayfirst`` that cannot read ``column``: ``True`` when a value's second field is
    above 12, ``False`` when a first field is, ``None`` when both orders may (or it is no such date).

    pandas reads a format it cannot infer value by value, and dateutil then quietly swaps day
    and month where the asked-for order is impossible: ``13.01.24`` read month first becomes
    13 January, so both orders would seem to read every value.
    """
    fields = column.astype(str).str.extract(r"^\s*(\d{1,2})[./\-\s](\d{1,2})(?:[./\-\s]|$)")  # not 13:00
    if fields.isna().to_numpy().any():
        return None
    if (fields[0].astype(int) > 12).any():
        return False
    if (fields[1].astype(int) > 12).any():
        return True
    return None


def _numeric_column(path: Path, column: pd.Series, name: str, time_col: str | None) -> np.ndarray:
    """``column`` as float64; non-numeric, missing, infinite and huge values are errors naming the line."""
    numeric = pd.to_numeric(column, errors="coerce")
    text = (numeric.isna() & column.notna()).to_numpy()
    if text.any():
        hint = "" if time_col else f"; a time column must be named one of {', '.join(TIME_COLUMNS)}"
        raise UsageError(
            f"{path}: column {name!r} is not numeric (line {_line(path, text)}: "
            f"{column.to_numpy()[text][0]!r}){hint}"
        )
    values = numeric.to_numpy(dtype=np.float64)
    missing = np.isnan(values)
    if missing.any():
        raise UsageError(
            f"{path}: column {name!r} has a missing value (line {_line(path, missing)}); "
            "fill or drop it first"
        )
    infinite = np.isinf(values)
    if infinite.any():
        raise UsageError(f"{path}: column {name!r} has an infinite value (line {_line(path, infinite)})")
    huge = np.abs(values) > FLOAT32_MAX
    if huge.any():
        raise UsageError(
            f"{path}: column {name!r} has {values[huge][0]:g} (line {_line(path, huge)}), beyond what "
            f"float32 training can hold (|x| <= {FLOAT32_MAX:.3g}); rescale the column"
        )
    return values


def _line(path: Path, mask: np.ndarray) -> int:
    """The file line of the first data row that ``mask`` flags."""
    return _file_line(path, int(np.flatnonzero(mask)[0]))


def _file_line(path: Path, row: int) -> int:
    """The file line where data row ``row`` (0-based) starts, for error messages.

    Counted as pandas reads: blank and whitespace-only lines hold no row, and a quoted value
    may span lines. Only called on the way to an error, so a clean file is read once.
    """
    try:
        with path.open(encoding="utf-8-sig", newline="") as file:
            reader = csv.reader(file, skipinitialspace=True)
            records = -1  # the header is record -1
            start = 1
            for record in reader:
                if record and not (len(record) == 1 and not record[0].strip()):
                    if records == row:
                        return start
                    records += 1
                start = reader.line_num + 1
    except (OSError, UnicodeDecodeError, csv.Error):
        pass
    return row + 2  # as if the file had no blank lines


def read_npz(path: Path) -> SequenceData:
    """Classification sequences from an NPZ file (see the module docstring)."""
    if not zipfile.is_zipfile(path):
        raise UsageError(f"{path}: not a readable NPZ file (not a zip archive; save it with np.savez)")
    arrays: dict[str, np.ndarray] = {}
    try:
        with np.load(path, allow_pickle=False) as npz:
            for key in npz.files:
                try:
                    arrays[key] = npz[key]
                except ValueError as exc:
                    if "allow_pickle" not in str(exc):  # a damaged member, not an object array
                        raise UsageError(f"{path}: array {key!r} cannot be read ({exc})") from None
                    advice = (
                        "save labels as strings (np.asarray(y, dtype=str)) or integers"
                        if key.startswith("y")
                        else f"save it as numbers (np.asarray({key}, dtype=np.float32)); pad ragged "
                        "sequences and give their lengths"
                    )
                    raise UsageError(f"{path}: array {key!r} holds Python objects; {advice}") from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise UsageError(f"{path}: not a readable NPZ file ({first_line(exc)})") from None
    unknown = [k for k in arrays if k not in NPZ_ARRAYS]
    if unknown:
        raise UsageError(
            f"{path}: unexpected array(s) {', '.join(map(repr, unknown))}; expected {', '.join(NPZ_ARRAYS)}"
        )
    for required in ("X", "y"):
        if required not in arrays:
            found = ", ".join(arrays) or "none"
            raise UsageError(f"{path}: array {required!r} is missing (found: {found})")
    data = SequenceData.from_arrays(
        arrays["X"],
        arrays["y"],
        name=str(path),
        lengths=arrays.get("lengths"),
        X_test=arrays.get("X_test"),
        y_test=arrays.get("y_test"),
        lengths_test=arrays.get("lengths_test"),
    )
    description = (
        f"{path.name}: {data.output_size}-class classification of {len(arrays['X'])} sequences"
        + (" of variable length" if "lengths" in arrays else "")
        + ("; test split from X_test/y_test" if "X_test" in arrays else "; stratified 70/15/15 split")
        + "; standardised per channel on the training split."
    )
    return dataclasses.replace(data, description=description)


def read_ts(path: Path) -> tuple[list[np.ndarray], np.ndarray]:
    """Sequences ((length, channels) float64 arrays) and string labels from a ``.ts`` file.

    Supports what classification archives use: no timestamps, equal or unequal
    lengths, one or more channels, a class label last. A missing value (``?``)
    is an error, not a silent NaN.
    """
    sequences: list[np.ndarray] = []
    labels: list[str] = []
    in_data = False
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: not a readable .ts file ({exc})") from None
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not in_data:
            tag = line.lower().split()
            if tag[0] == "@data":
                in_data = True
            elif tag[0] == "@timestamps" and tag[1:] != ["false"]:
                raise UsageError(f"{path}: line {number}: timestamped .ts files are not supported")
            elif tag[0] == "@classlabel" and tag[1:2] != ["true"]:
                raise UsageError(f"{path}: line {number}: the file has no class labels")
            continue
        *channels, label = line.split(":")
        try:
            columns = [np.array([float(v) for v in channel.split(",")]) for channel in channels]
        except ValueError:
            raise UsageError(f"{path}: line {number}: a value is missing or not a number") from None
        if not channels or len({len(c) for c in columns}) != 1:
            raise UsageError(f"{path}: line {number}: channels of unequal length")
        if not all(np.isfinite(c).all() for c in columns):
            raise UsageError(f"{path}: line {number}: NaN or infinite values")
        sequences.append(np.column_stack(columns))
        labels.append(label.strip())
    if not sequences:
        raise UsageError(f"{path}: no cases after @data")
    if len({s.shape[1] for s in sequences}) != 1:
        raise UsageError(f"{path}: cases have different numbers of channels")
    return sequences, np.array(labels)
