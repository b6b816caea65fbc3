"""Workers: trials per hour of one study run by 1 and by 2 local worker processes.

Both sides are ``optuna-rnn run --workers W`` on a fresh study with the same
configuration and the same ``--n-trials``, measured in this run, repeated with
the side that runs first alternating. Every trial costs the same: the
parameters that set the amount of computation (cell, size, layers, batch,
epochs) are fixed and pruning and early stopping are off, so the samplers' choices cannot favour either side.
Throughput is finished trials per hour over the trials' own span (first
start to last finish, from the study's timestamps); the wall time including
process start-up is shown too. Each worker gets ``cores // W`` torch threads,
as ``run --workers`` gives them, so the single worker uses every core.

Run alone with ``python -m benchmarks.workers [--quick] [--storage URL]``
(``--require 1.7`` exits 1 below that speed-up), or as a section of
``python -m benchmarks``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import TrialState

from benchmarks.common import Section, machine, table
from optuna_rnn.study import mask_url, open_storage
from optuna_rnn.workers import available_cores, threads_per_worker

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
ACCEPTANCE = 1.7


def space_toml(*, hidden_size: int) -> str:
    """A space whose trials all cost the same; only cost-neutral parameters are searched."""
    return (
        f'cell = "lstm"\nhidden_size = {hidden_size}\nnum_layers = 1\nbidirectional = false\n'
        'dropout = 0.1\noptimizer = "adam"\nbatch_size = 64\ngrad_clip = 1.0\n'
    )


@dataclass(frozen=True)
class Measurement:
    workers: int
    threads: int
    trials: int
    span_s: float
    wall_s: float

    @property
    def trials_per_hour(self) -> float:
        return self.trials / self.span_s * 3600.0


def measure(
    workers: int, *, n_trials: int, max_epochs: int, hidden_size: int, storage: str | None, tmp: Path
) -> Measurement:
    """Run one fresh study with ``workers`` local workers and time it."""
    name = f"bench-workers-{workers}-{uuid.uuid4().hex[:8]}"
    url = storage or f"sqlite:///{tmp / f'{name}.db'}"
    space = tmp / "space.toml"
    space.write_text(space_toml(hidden_size=hidden_size))
    epochs = str(max_epochs)
    command = [
        sys.executable, "-m", "optuna_rnn.cli", "run", "--dataset", "digits", "--study", name,
        "--n-trials", str(n_trials), "--workers", str(workers), "--space", str(space),
        "--max-epochs", epochs, "--patience", epochs, "--pruner", "none", "--seed", "0",
        "--device", "cpu", "--artifacts", str(tmp / f"artifacts-{name}"), "-q",
    ]  # fmt: skip
    env = {**os.environ, "OPTUNA_RNN_STORAGE": url}  # not on the command line: no password in `ps`
    t0 = time.perf_counter()
    done = subprocess.run(command, cwd=tmp, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{workers} worker(s) failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    backend = open_storage(url)
    try:
        trials = optuna.load_study(study_name=name, storage=backend).get_trials(states=FINISHED)
        start = min(t.datetime_start for t in trials if t.datetime_start)
        end = max(t.datetime_complete for t in trials if t.datetime_complete)
        span = (end - start).total_seconds()
    finally:
        if storage is not None:
            with contextlib.suppress(Exception):
                optuna.delete_study(study_name=name, storage=backend)
    return Measurement(workers, threads_per_worker(workers), len(trials), span, wall)


REPEATS = 5


def compare(*, quick: bool = False, storage: str | None = None) -> tuple[dict[int, list[float]], Section]:
    """Measure 1 and 2 workers for each model size, ``REPEATS`` times; the per-repeat speed-ups
    by model size and the RESULTS.md section.

    The repeats are interleaved (every size and side once per round) and the side that runs
    first alternates, so a slow spell of the machine does not land on one side. The speed-up
    depends on the model: a small recurrent net is bound by per-operation overhead, so one
    process cannot keep two cores busy and two 1-thread workers nearly double the throughput;
    a larger one already uses both cores through torch's intra-op threads, and two workers
    gain less.
    """
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    n_trials, max_epochs, hiddens = (4, 2, (16,)) if quick else (40, 10, (32, 64))
    repeats = 1 if quick else REPEATS
    runs: dict[tuple[int, int], list[Measurement]] = {(h, w): [] for h in hiddens for w in (1, 2)}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(repeats):
            for hidden in hiddens:
                for workers in (1, 2) if repeat % 2 == 0 else (2, 1):
                    m = measure(
                        workers,
                        n_trials=n_trials,
                        max_epochs=max_epochs,
                        hidden_size=hidden,
                        storage=storage,
                        tmp=Path(tmp),
                    )
                    print(
                        f"  repeat {repeat + 1}, hidden {hidden}, {workers} worker(s): {m.trials} trials "
                        f"in {m.span_s:.1f} s ({m.trials_per_hour:.0f}/h)"
                    )
                    runs[hidden, workers].append(m)
    speedups = {
        h: [
            two.trials_per_hour / one.trials_per_hour for one, two in zip(runs[h, 1], runs[h, 2], strict=True)
        ]
        for h in hiddens
    }
    rows = []
    for (hidden, workers), ms in runs.items():
        rows.append(
            [
                hidden,
                workers,
                ms[0].threads,
                statistics.median(m.trials for m in ms),
                statistics.median(m.span_s for m in ms),
                statistics.median(m.wall_s for m in ms),
                round(statistics.median(m.trials_per_hour for m in ms)),
                " / ".join(f"{m.trials_per_hour:.0f}" for m in ms),
            ]
        )
    where = "a fresh SQLite file per study" if storage is None else mask_url(storage)
    summary = "; ".join(
        f"hidden {h}: **{statistics.median(r):.2f}x** ({min(r):.2f}-{max(r):.2f}x), "
        f"{'meets' if statistics.median(r) >= ACCEPTANCE else 'below'} {ACCEPTANCE}x"
        for h, r in speedups.items()
    )
    body = (
        f"Machine: {machine()}; {available_cores()} cores available. Storage: {where}. "
        f"digits, LSTM, {max_epochs} epochs per trial, {n_trials} trials per study, no pruning; "
        "trials per hour over the span from the first trial's start to the last one's end. "
        f"{repeats} repeats, interleaved, the side that runs first alternating; each figure is the "
        "median over the repeats.\n\n"
        + table(
            [
                "hidden",
                "workers",
                "torch threads each",
                "finished trials",
                "trial span s",
                "wall s",
                "trials / hour",
                "trials / hour in each repeat",
            ],
            rows,
        )
        + "\n\nSpeed-up of 2 workers over 1 in trials per hour, median of the per-repeat ratios "
        f"(range): {summary}.\n"
    )
    return speedups, Section(
        "Workers: trials per hour, 1 vs 2 local workers", "python -m benchmarks --only workers", body
    )


def run(*, quick: bool = False) -> Section:
    """The section of ``python -m benchmarks``."""
    return compare(quick=quick)[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.workers", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny settings: proves it runs")
    parser.add_argument("--storage", metavar="URL", help="a database to use instead of fresh SQLite files")
    parser.add_argument("--require", type=float, metavar="X", help="exit 1 if the speed-up is below X")
    args = parser.parse_args(argv)
    speedups, section = compare(quick=args.quick, storage=args.storage)
    print(section.markdown())
    best = max(statistics.median(r) for r in speedups.values())
    return 1 if args.require is not None and best < args.require else 0


if __name__ == "__main__":
    sys.exit(main())
