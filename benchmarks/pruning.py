"""Pruning savings: the same trials with no pruner, the median pruner and Hyperband.

For each (dataset, seed) we first run TPE without pruning for a fixed number of trials, then
replay exactly the same configurations, in the same order and with the same per-trial seeds,
under each pruner. Training is deterministic per trial, so the only difference is what the
pruner stops: we count epochs trained, the best validation value still found, and whether the
configuration that was best without pruning got pruned.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import optuna

from benchmarks.budget import BudgetRun, run_budget
from benchmarks.common import Section, benchmark_datasets, in_processes, machine, table
from optuna_rnn.study import make_pruner

# Built for trials of at most ``max_epochs`` epochs: Optuna's usual median (5 start-up trials,
# here judged from epoch 3), the package's default median, and the package's Hyperband.
# The other candidates for the default are compared in pruner_choice.
PRUNERS: dict[str, Callable[[int], optuna.pruners.BasePruner]] = {
    "median, 5 start-up, n_warmup_steps=3": lambda e: optuna.pruners.MedianPruner(
        n_startup_trials=5, n_warmup_steps=min(3, e - 1)
    ),
    "median, 2 start-up, n_warmup_steps=1 (default)": lambda e: make_pruner("median", max_epochs=e),
    "hyperband": lambda e: make_pruner("hyperband", max_epochs=e),
}


def _one(dataset: str, seed: int, n_trials: int, max_epochs: int) -> list[tuple[str, BudgetRun]]:
    free = run_budget(dataset, "tpe, no pruning", seed, budget=n_trials * max_epochs, max_epochs=max_epochs)
    out = [("none", free)]
    for label, make in PRUNERS.items():
        replay = run_budget(
            dataset,
            "tpe, no pruning",
            seed,
            budget=10**9,
            max_epochs=max_epochs,
            enqueue=free.all_params,
            pruner=make(max_epochs),
        )
        out.append((label, replay))
    return out


def run(*, quick: bool = False) -> Section:
    datasets = benchmark_datasets(quick=quick)
    seeds = range(1 if quick else 5)
    n_trials, max_epochs = (6, 3) if quick else (20, 10)
    jobs = {(d, s): (d, s, n_trials, max_epochs) for d in datasets for s in seeds}
    results = in_processes(_one, jobs, desc="pruning")
    rows = []
    for dataset in datasets:
        for pruner in ("none", *PRUNERS):
            epochs, best, lost, pruned = [], [], 0, []
            for seed in seeds:
                runs = dict(results[dataset, seed])
                free, run = runs["none"], runs[pruner]
                epochs.append(run.curve[-1][0] / free.curve[-1][0])
                best.append(run.curve[-1][1])
                pruned.append(run.pruned)
                assert free.best_number is not None  # the unpruned run completes every trial
                lost += run.states[free.best_number] == "PRUNED"
            rows.append(
                [
                    dataset,
                    pruner,
                    f"{100 * (1 - statistics.median(epochs)):.0f}%",
                    statistics.median(best),
                    statistics.median(pruned),
                    f"{lost}/{len(seeds)}",
                ]
            )
    body = (
        f"Machine: {machine()}. {n_trials} TPE trials of at most {max_epochs} epochs, replayed under each "
        f"pruner; {len(seeds)} seeds. 'best lost' counts seeds where the trial that is best without "
        "pruning was pruned in the replay.\n\n"
        + table(
            ["dataset", "pruner", "epochs saved", "best val (median)", "trials pruned (median)", "best lost"],
            rows,
        )
    )
    return Section("Pruning savings", "python -m benchmarks --only pruning", body)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    print(run(quick=parser.parse_args().quick).markdown())
