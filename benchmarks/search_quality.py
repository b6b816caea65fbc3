"""Search quality at an equal compute budget: the package's default vs TPE, random and grid.

Each (dataset, seed) pair runs every method with the same budget of training epochs. We
report the best validation metric at 25%, 50% and 100% of the budget (median over seeds),
the paired difference to random search with a bootstrap 95% interval (positive = better than
random, whatever the metric's direction), the best trial's test metric, and how much of the
budget the default needs to reach random search's final best (paired, per seed).
"""

from __future__ import annotations

import argparse
import math
import statistics
from pathlib import Path

from benchmarks import common
from benchmarks.budget import METHODS, BudgetRun, run_budget
from benchmarks.common import Section, benchmark_datasets, bootstrap_ci, in_processes, machine, table

FRACTIONS = (0.25, 0.5, 1.0)
DEFAULT = "default (tpe + median)"


def gain(run: BudgetRun, reference: BudgetRun, epochs: float) -> float:
    a, b = run.best_at(epochs), reference.best_at(epochs)
    return a - b if run.direction == "maximize" else b - a


def epochs_to_reach(run: BudgetRun, target: float, budget: int) -> float:
    """Epochs ``run`` spent until its best reached ``target``; inf if not within ``budget``.

    The trial that crossed the budget does not count, as in every other column.
    """
    for spent, best in run.curve:
        if spent > budget:
            break
        if (best >= target) if run.direction == "maximize" else (best <= target):
            return spent
    return math.inf


def plot(runs: list[BudgetRun], dataset: str, budget: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    xs = np.linspace(0, budget, 101)
    fig, ax = plt.subplots(figsize=(6, 4))
    for method in METHODS:
        mine = [r for r in runs if r.method == method]
        curves = np.array([[r.best_at(x) for x in xs] for r in mine])
        ax.plot(xs, np.nanmedian(curves, axis=0), label=method)
    metric = "accuracy" if runs[0].direction == "maximize" else "RMSE"
    ax.set(
        xlabel="training epochs spent",
        ylabel=f"best validation {metric} (median over seeds)",
        title=f"{dataset}: best so far vs epochs",
    )
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def run(*, quick: bool = False) -> Section:
    datasets = benchmark_datasets(quick=quick)
    seeds = range(2 if quick else 10)
    max_epochs, budget = (3, 12) if quick else (10, 120)
    jobs = {(d, m, s): (d, m, s) for d in datasets for s in seeds for m in METHODS}
    runs = list(
        in_processes(run_budget, jobs, desc="search_quality", budget=budget, max_epochs=max_epochs).values()
    )
    parts = [
        f"Machine: {machine()}. Budget {budget} epochs per run, at most {max_epochs} epochs per trial, "
        f"{len(seeds)} paired seeds, two runs at a time (one thread each). Values are medians over seeds; "
        "'vs random' is the median paired gain over random search with its bootstrap 95% interval.\n"
    ]
    images = []
    for dataset in datasets:
        mine = [r for r in runs if r.dataset == dataset]
        by = {(r.method, r.seed): r for r in mine}
        rows = []
        for method in METHODS:
            row: list[object] = [method]
            for f in FRACTIONS:
                vals = [by[method, s].best_at(f * budget) for s in seeds]
                row.append(statistics.median(vals))
                if method != "random":
                    gains = [gain(by[method, s], by["random", s], f * budget) for s in seeds]
                    lo, hi = bootstrap_ci(gains)
                    row.append(f"{statistics.median(gains):+.4f} [{lo:+.4f}, {hi:+.4f}]")
                else:
                    row.append("")
            tests = [v for s in seeds if (v := by[method, s].test_value) is not None]
            row.append(statistics.median(tests) if tests else "")
            row.append(statistics.median(by[method, s].trials for s in seeds))
            rows.append(row)
        targets = {s: by["random", s].best_at(budget) for s in seeds}
        reach = [epochs_to_reach(by[DEFAULT, s], targets[s], budget) / budget for s in seeds]
        median_reach = statistics.median(reach)
        metric = "accuracy" if mine[0].direction == "maximize" else "RMSE"
        header = ["method"]
        for f in FRACTIONS:
            header += [f"best val {metric} @{int(f * 100)}%", f"vs random @{int(f * 100)}%"]
        header += [f"test {metric} of best", "trials"]
        reach_text = "never (within the budget)" if math.isinf(median_reach) else f"{100 * median_reach:.0f}%"
        parts.append(f"### {dataset}\n\n" + table(header, rows))
        parts.append(
            f"\nDefault reaches random search's final best (paired, median over seeds) after "
            f"**{reach_text}** of the budget.\n"
        )
        image = f"search_quality_{dataset}.png"
        plot(mine, dataset, budget, common.OUTPUT_DIR / image)
        images.append(image)
    return Section(
        "Search quality at an equal epoch budget",
        "python -m benchmarks --only search_quality",
        "\n".join(parts),
        images,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    print(run(quick=parser.parse_args().quick).markdown())
