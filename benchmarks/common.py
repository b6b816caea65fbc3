"""Helpers shared by the benchmark sections: timing, machine facts, markdown tables."""

from __future__ import annotations

import os
import pickle
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
RESUME = False  # set by ``--resume``: reuse the runs an interrupted run of a section finished


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
    """A markdown table; floats get 3 significant digits, and whole units from 1000 up (not 1e+03)."""

    def fmt(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.0f}" if 999.5 <= abs(v) < 1e15 else f"{v:.3g}"
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


class RunCache:
    """Finished runs of one section, saved after each one so that ``--resume`` can skip them.

    The search sections take hours on 2 cores; an interrupted run should not lose what it did.
    A run is identified by the function, its arguments and keyword arguments, so a changed
    setting runs again. The file lives under ``<output dir>/.runs/`` (ignored by git).
    """

    def __init__(self, name: str, *, resume: bool) -> None:
        self.path = OUTPUT_DIR / ".runs" / f"{name}.pkl"
        self.runs: dict[str, Any] = {}
        if resume and self.path.exists():
            self.runs = pickle.loads(self.path.read_bytes())

    @staticmethod
    def key(fn: Callable[..., object], args: tuple[Any, ...], kwargs: Mapping[str, object]) -> str:
        return repr((fn.__module__, fn.__qualname__, args, sorted(kwargs.items())))

    def add(self, key: str, result: object) -> None:
        self.runs[key] = result
        self.path.parent.mkdir(exist_ok=True)
        partial = self.path.with_suffix(".tmp")
        partial.write_bytes(pickle.dumps(self.runs))
        partial.replace(self.path)


def in_processes(
    fn: Callable[..., T], jobs: Mapping[K, tuple[Any, ...]], *, desc: str, **kwargs: object
) -> dict[K, T]:
    """``{key: fn(*args, **kwargs)}`` for each job, two at a time in fresh processes, with a progress bar.

    Two spawned processes keep both cores of the reference machine busy; each sets its own torch
    thread count (see :func:`benchmarks.budget.run_budget`). Each finished run is saved in a
    :class:`RunCache` named ``desc``; with ``--resume`` the runs found there are not run again.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from tqdm.auto import tqdm

    cache = RunCache(desc, resume=RESUME)
    keys = {job: RunCache.key(fn, args, kwargs) for job, args in jobs.items()}
    results = {job: cache.runs[keys[job]] for job in jobs if keys[job] in cache.runs}
    todo = {job: args for job, args in jobs.items() if job not in results}
    with (
        ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as pool,
        tqdm(total=len(jobs), initial=len(results), desc=desc, unit="run") as bar,
    ):
        futures = {pool.submit(fn, *args, **kwargs): job for job, args in todo.items()}
        try:
            for done in as_completed(futures):
                job = futures[done]
                results[job] = done.result()
                cache.add(keys[job], results[job])
                bar.update()
        except BaseException:  # a failed run: say so now, not after every queued run has run
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return {job: results[job] for job in jobs}
