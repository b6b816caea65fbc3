"""Choosing the default pruner: TPE with each candidate pruner at an equal epoch budget.

The search-quality section compares the package's default with random and grid search; this
one holds the sampler fixed (the package's TPE) and varies the pruner, on the same datasets,
seeds and budget, against the same random-search reference. A pruner decides how many
configurations the budget buys (a pruned trial costs only its epochs) and how often a good
configuration is stopped before it shows it is good; the candidates differ in both.
"""

from __future__ import annotations

import argparse
import math
import statistics
from collections.abc import Callable

import optuna

from benchmarks.budget import BudgetRun, run_budget
from benchmarks.common import Section, benchmark_datasets, bootstrap_ci, in_processes, machine, table
from benchmarks.pruning import PRUNERS
from benchmarks.search_quality import epochs_to_reach, gain
from optuna_rnn.study import make_pruner

CANDIDATES: dict[str, Callable[[int], optuna.pruners.BasePruner]] = {
    # the previous default
    "median, 5 start-up, n_warmup_steps=3": PRUNERS["median, 5 start-up, n_warmup_steps=3"],
    "median, 2 start-up, n_warmup_steps=1": lambda e: make_pruner("median", max_epochs=e),  # the default
    "hyperband": lambda e: make_pruner("hyperband", max_epochs=e),
    "successive halving": lambda e: make_pruner("successive-halving", max_epochs=e),
}
REFERENCE = "random"


def _run(dataset: str, label: str, seed: int, budget: int, max_epochs: int) -> BudgetRun:
    if label == REFERENCE:
        return run_budget(dataset, REFERENCE, seed, budget=budget, max_epochs=max_epochs)
    pruner = CANDIDATES[label](max_epochs)
    return run_budget(dataset, "tpe, no pruning", seed, budget=budget, max_epochs=max_epochs, pruner=pruner)


def run(*, quick: bool = False) -> Section:
    datasets = benchmark_datasets(quick=quick)
    seeds = range(2 if quick else 10)
    max_epochs, budget = (3, 12) if quick else (10, 120)
    labels = [REFERENCE, *CANDIDATES]
    jobs = {
        (d, label, s): (d, label, s, budget, max_epochs) for d in datasets for s in seeds for label in labels
    }
    return render(in_processes(_run, jobs, desc="pruner_choice"), budget=budget, max_epochs=max_epochs)


def render(runs: dict[tuple[str, str, int], BudgetRun], *, budget: int, max_epochs: int) -> Section:
    """The table from ``{(dataset, pruner or "random", seed): run}``; unpaired seeds are left out."""
    rows = []
    for dataset in dict.fromkeys(d for d, _, _ in runs):
        for label in CANDIDATES:
            seeds = sorted(s for d, q, s in runs if d == dataset and q == label and (d, REFERENCE, s) in runs)
            mine = [runs[dataset, label, s] for s in seeds]
            ref = [runs[dataset, REFERENCE, s] for s in seeds]
            reach = statistics.median(
                epochs_to_reach(r, q.best_at(budget), budget) / budget for r, q in zip(mine, ref, strict=True)
            )
            gains = [gain(r, q, budget) for r, q in zip(mine, ref, strict=True)]
            lo, hi = bootstrap_ci(gains)
            tests = [r.test_value for r in mine if r.test_value is not None]
            rows.append(
                [
                    dataset,
                    label,
                    "never" if math.isinf(reach) else f"{100 * reach:.0f}%",
                    statistics.median(r.best_at(budget / 2) for r in mine),
                    statistics.median(r.best_at(budget) for r in mine),
                    f"{statistics.median(gains):+.4f} [{lo:+.4f}, {hi:+.4f}]",
                    statistics.median(tests) if tests else "",
                    statistics.median(r.trials for r in mine),
                    statistics.median(r.pruned for r in mine),
                    len(seeds),
                ]
            )
    body = (
        f"Machine: {machine()}. TPE as the package configures it, with each candidate pruner; budget "
        f"{budget} epochs per run, at most {max_epochs} epochs per trial, paired seeds shared with random "
        "search (the reference). 'reach' is the share of the budget the run needs to match "
        "random search's final best (paired, median over seeds); 'vs random' is the median paired gain "
        "at the full budget (positive = better) with its bootstrap 95% interval.\n\n"
        + table(
            [
                "dataset",
                "pruner",
                "reach random's best",
                "best val @50%",
                "best val @100%",
                "vs random @100%",
                "test of best",
                "trials",
                "pruned",
                "seeds",
            ],
            rows,
        )
    )
    return Section("Choosing the default pruner", "python -m benchmarks --only pruner_choice", body)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    print(run(quick=parser.parse_args().quick).markdown())
