"""Workers: trials per hour of one study run by 1 and by 2 local worker processes.

Both sides are ``optuna-rnn run --workers W`` on a fresh study with the same
configuration and the same ``--n-trials``, measured one after the other in
this run. Every trial costs the same: the parameters that set the amount of
computation (cell, size, layers, batch, epochs) are fixed and pruning and
early stopping are off, so the samplers' choices cannot favour either side.
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
    url = storage or f"sqlite:///{tmp / f'workers-{workers}.db'}"
    space = tmp / "space.toml"
    space.write_text(space_toml(hidden_size=hidden_size))
    epochs = str(max_epochs)
    command = [
        sys.executable, "-m", "optuna_rnn.cli", "run", "--dataset", "digits", "--study", name,
        "--n-trials", str(n_trials), "--workers", str(workers), "--space", str(space),
        "--max-epochs", epochs, "--patience", epochs, "--pruner", "none", "--seed", "0",
        "--device", "cpu", "--artifacts", str(tmp / f"artifacts-{workers}"), "-q",
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


def compare(*, quick: bool = False, storage: str | None = None) -> tuple[list[Measurement], Section]:
    """Measure 1 then 2 workers for each model size; the measurements and the RESULTS.md section.

    The speed-up depends on the model: a small recurrent net is bound by per-operation
    overhead, so one process cannot keep two cores busy and two 1-thread workers nearly
    double the throughput; a larger one already uses both cores through torch's intra-op
    threads, and two workers gain less.
    """
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    n_trials, max_epochs, hiddens = (4, 2, (16,)) if quick else (40, 10, (32, 64))
    results, rows, ratios = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for hidden in hiddens:
            pair = []
            for workers in (1, 2):
                m = measure(
                    workers,
                    n_trials=n_trials,
                    max_epochs=max_epochs,
                    hidden_size=hidden,
                    storage=storage,
                    tmp=Path(tmp),
                )
                print(
                    f"  hidden {hidden}, {workers} worker(s): {m.trials} trials in {m.span_s:.1f} s "
                    f"({m.trials_per_hour:.0f}/h)"
                )
                pair.append(m)
                rows.append(
                    [hidden, m.workers, m.threads, m.trials, m.span_s, m.wall_s, round(m.trials_per_hour)]
                )
            ratios.append((hidden, speedup(pair), pair[0].wall_s / pair[1].wall_s))
            results.extend(pair)
    where = "a fresh SQLite file per study" if storage is None else mask_url(storage)
    summary = "; ".join(
        f"hidden {h}: **{r:.3f}x**, {'meets' if r >= ACCEPTANCE else 'below'} {ACCEPTANCE}x "
        f"(wall clock with start-up {w:.2f}x)"
        for h, r, w in ratios
    )
    body = (
        f"Machine: {machine()}; {available_cores()} cores available. Storage: {where}. "
        f"digits, LSTM, {max_epochs} epochs per trial, {n_trials} trials per study, no pruning; "
        "trials per hour over the span from the first trial's start to the last one's end.\n\n"
        + table(
            [
                "hidden",
                "workers",
                "torch threads each",
                "finished trials",
                "trial span s",
                "wall s",
                "trials / hour",
            ],
            rows,
        )
        + f"\n\nSpeed-up of 2 workers over 1 in trials per hour (one run each): {summary}.\n"
    )
    return results, Section(
        "Workers: trials per hour, 1 vs 2 local workers", "python -m benchmarks --only workers", body
    )


def speedup(results: list[Measurement]) -> float:
    """Trials per hour of the 2-worker study over the 1-worker one."""
    one, two = results
    return two.trials_per_hour / one.trials_per_hour


def run(*, quick: bool = False) -> Section:
    """The section of ``python -m benchmarks``."""
    return compare(quick=quick)[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks --only workers", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny settings: proves it runs")
    parser.add_argument("--storage", metavar="URL", help="a database to use instead of fresh SQLite files")
    parser.add_argument("--require", type=float, metavar="X", help="exit 1 if the speed-up is below X")
    args = parser.parse_args(argv)
    results, section = compare(quick=args.quick, storage=args.storage)
    print(section.markdown())
    best = max(speedup(results[i : i + 2]) for i in range(0, len(results), 2))
    return 1 if args.require is not None and best < args.require else 0


if __name__ == "__main__":
    sys.exit(main())
