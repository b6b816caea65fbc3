"""Helpers shared by the benchmark sections: timing, machine facts, markdown tables."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

K = TypeVar("K")
T = TypeVar("T")

HERE = Path(__file__).resolve().parent
OUTPUT_DIR = HERE


def set_output_dir(*, quick: bool) -> Path:
    """Where RESULTS.md and plots go: ``benchmarks/`` or, for quick runs, ``benchmarks/quick/``."""
    global OUTPUT_DIR
    OUTPUT_DIR = HERE / "quick" if quick else HERE
    OUTPUT_DIR.mkdir(exist_ok=True)
    return OUTPUT_DIR


@dataclass
class Section:
    """One part of RESULTS.md: a title, the command that made it, markdown, images."""

    title: str
    command: str
    body: str
    images: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        parts = [f"## {self.title}", "", f"Command: `{self.command}`", "", self.body.strip(), ""]
        parts += [f"![{Path(i).stem}]({i})\n" for i in self.images]
        return "\n".join(parts)


def machine() -> str:
    """A one-line description of where the numbers were measured."""
    import optuna
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), optuna {optuna.__version__}"
    )


def median_time(fn: Callable[[], object], *, repeats: int, warmup: int = 1) -> float:
    """Median wall-clock seconds of ``fn`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A markdown table; floats get 3 significant digits."""

    def fmt(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.3g}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def bootstrap_ci(diffs: Sequence[float], *, n: int = 10000, seed: int = 0) -> tuple[float, float]:
    """95% bootstrap confidence interval of the median of paired differences."""
    rng = np.random.default_rng(seed)
    data = np.asarray(diffs, dtype=float)
    medians = np.median(rng.choice(data, size=(n, len(data)), replace=True), axis=1)
    return float(np.percentile(medians, 2.5)), float(np.percentile(medians, 97.5))


def benchmark_datasets(*, quick: bool) -> list[str]:
    """The datasets the search sections compare on: digits alone in a quick run."""
    from optuna_rnn import DATASETS

    if quick:
        return ["digits"]
    return [d for d in ("digits", "japanese_vowels", "sunspots", "co2") if d in DATASETS]


def in_processes(
    fn: Callable[..., T], jobs: Mapping[K, tuple[Any, ...]], *, desc: str, **kwargs: object
) -> dict[K, T]:
    """``{key: fn(*args, **kwargs)}`` for each job, two at a time in fresh processes, with a progress bar.

    Two spawned processes keep both cores of the reference machine busy; each sets its own torch
    thread count (see :func:`benchmarks.budget.run_budget`).
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from tqdm.auto import tqdm

    with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(fn, *args, **kwargs): key for key, args in jobs.items()}
        results = {}
        for done in tqdm(as_completed(futures), total=len(futures), desc=desc, unit="run"):
            results[futures[done]] = done.result()
    return {key: results[key] for key in jobs}
