"""End to end: a 20-trial ``digits`` study, the package (SQLite, its defaults) vs hand-written.

Both run in this process, one after the other, with the same thread count; the package's
side is what ``optuna-rnn run --dataset digits --n-trials 20 --max-epochs 10`` does after
start-up (study creation on a fresh SQLite file, trials, artifacts, the best trial's test
metric). Repeated over seeds; the table gives medians.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from benchmarks.common import Section, machine, table
from benchmarks.handwritten import run_handwritten_study
from optuna_rnn import DatasetSpec, load_dataset
from optuna_rnn.study import open_session, run_trials


def package_study(seed: int, *, n_trials: int, max_epochs: int) -> tuple[float, optuna.Study]:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        session = open_session(
            "digits",
            storage=f"sqlite:///{Path(tmp) / 'optuna-rnn.db'}",
            given={"dataset": DatasetSpec(name="digits"), "seed": seed, "max_epochs": max_epochs},
            create=True,
        )
        run_trials(session, n_trials=n_trials, progress=False)
        session.best_test()
        return time.perf_counter() - t0, session.study


def run(*, quick: bool = False) -> Section:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    n_trials, max_epochs = (6, 3) if quick else (20, 10)
    seeds = range(1 if quick else 3)
    data = load_dataset("digits")
    rows, ratios = [], []
    for seed in seeds:
        pkg_s, pkg = package_study(seed, n_trials=n_trials, max_epochs=max_epochs)
        t0 = time.perf_counter()
        hand = run_handwritten_study(data, n_trials=n_trials, seed=seed)  # type: ignore[arg-type]
        hand_s = time.perf_counter() - t0
        pruned = [sum(t.state == TrialState.PRUNED for t in s.trials) for s in (pkg, hand)]
        rows.append(
            [seed, pkg_s, hand_s, pkg_s / hand_s, pkg.best_value, hand.best_value, pruned[0], pruned[1]]
        )
        ratios.append(pkg_s / hand_s)
        print(f"  seed {seed}: package {pkg_s:.1f} s, hand-written {hand_s:.1f} s")
    body = (
        f"Machine: {machine()}. {n_trials} trials, at most {max_epochs} epochs each.\n\n"
        + table(
            [
                "seed",
                "package s",
                "hand-written s",
                "package / hand-written",
                "package best val acc",
                "hand-written best val acc",
                "package pruned",
                "hand-written pruned",
            ],
            rows,
        )
        + f"\n\nMedian wall-clock ratio package / hand-written: **{statistics.median(ratios):.2f}**."
    )
    return Section("End to end: 20-trial digits study", "python -m benchmarks --only end_to_end", body)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    print(run(quick=parser.parse_args().quick).markdown())
