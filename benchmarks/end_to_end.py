"""End to end: a 20-trial ``digits`` study, the package (SQLite, its defaults) vs hand-written.

Both run in this process, one after the other, with the same thread count; the package's
side is what ``optuna-rnn run --dataset digits --n-trials 20 --max-epochs 10`` does after
start-up (study creation on a fresh SQLite file, trials, artifacts, the best trial's test
metric). A third study runs the package with the hand-written study's search space and pruner
(``HANDWRITTEN_SPACE``, median pruner without warm-up), which separates what the package's
machinery costs or saves from what its broader default space costs. A fourth runs the package's
defaults as ``run --workers 2`` does (two worker processes, one torch thread each), what a user
with two cores can ask for. Repeated over seeds, with the four studies in a rotated order.

The package returns each trial's best epoch (and keeps that epoch's weights); the official
example returns the last epoch's accuracy. The table gives the hand-written study both ways:
its own best value, and the best epoch of any of its complete trials.
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
from benchmarks.handwritten import HANDWRITTEN_SPACE, handwritten_pruner, run_handwritten_study
from optuna_rnn import DatasetSpec, load_dataset
from optuna_rnn.data import SequenceData
from optuna_rnn.study import open_session, run_trials
from optuna_rnn.workers import run_workers


def package_study(
    seed: int,
    *,
    n_trials: int,
    max_epochs: int,
    like_handwritten: bool = False,
    workers: int = 1,
    device: str = "cpu",
) -> tuple[float, optuna.Study]:
    given: dict[str, object] = {"dataset": DatasetSpec(name="digits"), "seed": seed, "max_epochs": max_epochs}
    if like_handwritten:
        given["space"] = HANDWRITTEN_SPACE
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        session = open_session(
            "digits", storage=f"sqlite:///{Path(tmp) / 'optuna-rnn.db'}", given=given, create=True
        )
        if like_handwritten:
            session.study.pruner = handwritten_pruner()
        if workers > 1:  # what `optuna-rnn run --workers N` does: N processes, cores // N threads each
            run_workers(session, workers=workers, n_trials=n_trials, device=device, progress=False)
        else:
            run_trials(session, n_trials=n_trials, progress=False, device=device)  # as the hand-written side
        session.best_test()
        return time.perf_counter() - t0, session.study


def hand_study(
    data: SequenceData, seed: int, *, n_trials: int, max_epochs: int, device: str = "cpu"
) -> tuple[float, optuna.Study]:
    """The hand-written study's wall-clock seconds, and the study."""
    t0 = time.perf_counter()
    study = run_handwritten_study(data, n_trials=n_trials, seed=seed, device=device, max_epochs=max_epochs)
    return time.perf_counter() - t0, study


def best_epoch_value(study: optuna.Study) -> float:
    """The best epoch of any complete trial: the official example returns its last epoch's value."""
    return max(max(t.intermediate_values.values()) for t in study.trials if t.state == TrialState.COMPLETE)


def run(*, quick: bool = False) -> Section:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    n_trials, max_epochs = (6, 3) if quick else (20, 10)
    seeds = range(1 if quick else 5)
    data = load_dataset("digits")
    assert isinstance(data, SequenceData)  # digits: classification sequences
    rows, ratios, same_ratios, parallel_ratios = [], [], [], []
    # untimed warm-up of both sides: the first study in a process would pay torch's one-off set-up
    package_study(0, n_trials=1, max_epochs=1)
    run_handwritten_study(data, n_trials=1, seed=0, max_epochs=1)
    at_least_as_good = parallel_good = 0

    sides = {
        "package": lambda seed: package_study(seed, n_trials=n_trials, max_epochs=max_epochs),
        "same": lambda seed: package_study(
            seed, n_trials=n_trials, max_epochs=max_epochs, like_handwritten=True
        ),
        "hand": lambda seed: hand_study(data, seed, n_trials=n_trials, max_epochs=max_epochs),
        "workers": lambda seed: package_study(seed, n_trials=n_trials, max_epochs=max_epochs, workers=2),
    }
    for seed in seeds:
        order = list(sides)[seed % len(sides) :] + list(sides)[: seed % len(sides)]  # none always first
        done = {side: sides[side](seed) for side in order}
        (pkg_s, pkg), (same_s, same), (hand_s, hand) = done["package"], done["same"], done["hand"]
        par_s, par = done["workers"]
        studies = (pkg, same, hand)
        hand_best_epoch = best_epoch_value(hand)
        rows.append(
            [seed, pkg_s, same_s, par_s, hand_s, pkg_s / hand_s, same_s / hand_s, par_s / hand_s]
            + [s.best_value for s in studies]
            + [par.best_value, hand_best_epoch]
            + [" / ".join(str(sum(t.state == TrialState.PRUNED for t in s.trials)) for s in studies)]
        )
        at_least_as_good += pkg.best_value >= hand_best_epoch
        parallel_good += par.best_value >= hand_best_epoch
        ratios.append(pkg_s / hand_s)
        same_ratios.append(same_s / hand_s)
        parallel_ratios.append(par_s / hand_s)
        print(
            f"  seed {seed}: package {pkg_s:.1f} s, same space {same_s:.1f} s, 2 workers {par_s:.1f} s, "
            f"hand-written {hand_s:.1f} s"
        )
    body = (
        f"Machine: {machine()}. {n_trials} trials, at most {max_epochs} epochs each. 'package' uses its "
        "defaults; 'same space' is the package given the hand-written study's search space and pruner; "
        "'2 workers' is the package with its defaults run as `optuna-rnn run --workers 2` (two processes, "
        "one torch thread each).\n\n"
        + table(
            [
                "seed",
                "package s",
                "same space s",
                "package, 2 workers s",
                "hand-written s",
                "package / hand-written",
                "same space / hand-written",
                "2 workers / hand-written",
                "package best val acc",
                "same space best val acc",
                "hand-written best val acc",
                "2 workers best val acc",
                "hand-written best epoch acc",
                "pruned (package / same / hand)",
            ],
            rows,
        )
        + f"\n\nMedian wall-clock ratio to the hand-written study: package with its defaults "
        f"**{statistics.median(ratios):.2f}**, package with the same space and pruner "
        f"**{statistics.median(same_ratios):.2f}**, package with its defaults and `--workers 2` "
        f"**{statistics.median(parallel_ratios):.2f}**. The package's best validation accuracy is at least "
        f"the best epoch of any complete hand-written trial on {at_least_as_good} of {len(seeds)} seeds "
        f"({parallel_good} with 2 workers). The in-process sides ran one untimed warm-up study first; "
        "the 2-worker side's time includes starting its processes (importing torch in each), as a user "
        "pays it. All of them train on the CPU."
    )
    return Section("End to end: 20-trial digits study", "python -m benchmarks --only end_to_end", body)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    print(run(quick=parser.parse_args().quick).markdown())
