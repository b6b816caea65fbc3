"""Writers of small user data files for the tests, and the CLI called in-process.

Calling ``main`` in-process (rather than in a subprocess, ~4 s of imports
each) keeps the many bad-input cases fast; the subprocess tests elsewhere
cover the real console entry point.
"""

from __future__ import annotations

import contextlib
import io
import signal
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from optuna_rnn.cli import main

CLASS_MEANS = {"low": -1.0, "mid": 0.0, "high": 1.0}


def series_rows(n: int = 150) -> list[str]:
    """CSV rows ``date,x,y``: ``y`` follows the covariate ``x`` two steps later."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        x = np.sin(i / 5)
        y = np.sin((i - 2) / 5) + 0.05 * rng.standard_normal()
        rows.append(f"2020-01-{1 + i // 24:02d}T{i % 24:02d}:00,{x:.5f},{y:.5f}")
    return rows


def write_csv(path: Path, rows: Sequence[str], header: str = "date,x,y", *, shuffle: bool = True) -> Path:
    """Write ``rows`` under ``header``, shuffled so that only the time column orders them."""
    order = np.random.default_rng(1).permutation(len(rows)) if shuffle else np.arange(len(rows))
    path.write_text(header + "\n" + "\n".join(rows[i] for i in order) + "\n")
    return path


def replace_cell(rows: Sequence[str], row: int, column: int, value: str) -> list[str]:
    """``rows`` with one cell replaced (row 0 is file line 2 when written unshuffled)."""
    out = list(rows)
    cells = out[row].split(",")
    cells[column] = value
    out[row] = ",".join(cells)
    return out


def sequences(n: int = 90, *, length: int = 12, seed: int = 0) -> dict[str, np.ndarray]:
    """Variable-length 2-channel sequences labelled ``low``/``mid``/``high`` by their mean.

    Padding holds NaN: it must never be read.
    """
    rng = np.random.default_rng(seed)
    labels = np.array(list(CLASS_MEANS))[np.arange(n) % 3]
    lengths = rng.integers(3, length + 1, n)
    X = np.full((n, length, 2), np.nan)
    for i, (label, steps) in enumerate(zip(labels, lengths, strict=True)):
        X[i, :steps] = CLASS_MEANS[label] + 0.5 * rng.standard_normal((steps, 2))
    return {"X": X, "y": labels, "lengths": lengths}


def call_main(argv: Sequence[str]) -> tuple[int, str, str]:
    """``optuna-rnn ARGV`` in this process: exit code, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    handler = signal.getsignal(signal.SIGTERM)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(argv))
    finally:
        signal.signal(signal.SIGTERM, handler)
    return code, out.getvalue(), err.getvalue()
