"""On a CUDA GPU: per-epoch speed, mixed precision against full, and the end-to-end study.

The other sections run on the CPU machine the project is built on; this one needs a GPU and is
skipped without one (``RESULTS.md`` then keeps the section as last measured). It repeats two
comparisons there, where the balance shifts: a GPU finishes a small recurrent step in tens of
microseconds, so the per-batch Python work of a ``DataLoader`` loop (collating, the host-to-device
copy of each batch, a ``.item()`` per validation batch) weighs far more than on a CPU.

* **Per epoch**: the trainer as users get it (full precision), the trainer with mixed precision,
  the hand-written loop in the official example's style (each batch moved with ``.to(DEVICE)``)
  and the floor (full precision, batches built on the GPU beforehand), as in ``epoch_speed``.
* **End to end**: the 20-trial ``digits`` study, the package's defaults against the hand-written
  study, both training on the GPU, as in ``end_to_end``.
"""

from __future__ import annotations

import argparse
import functools
import statistics

import optuna
import torch

from benchmarks import epoch_speed
from benchmarks.common import Section, machine, table
from benchmarks.end_to_end import best_epoch_value, hand_study, package_study
from benchmarks.handwritten import run_handwritten_study
from optuna_rnn import load_dataset
from optuna_rnn.data import SequenceData

LOOPS: dict[str, epoch_speed.Loop] = {
    "trainer": epoch_speed.trainer_epoch_ms,
    "trainer_mixed": functools.partial(epoch_speed.trainer_epoch_ms, mixed_precision=True),
    "handwritten": epoch_speed.handwritten_epoch_ms,
    "floor": epoch_speed.floor_epoch_ms,
}


def per_epoch(*, quick: bool, device: torch.device) -> str:
    epochs = 3 if quick else 8
    repeats = 1 if quick else epoch_speed.REPEATS
    results = epoch_speed.measure(
        epoch_speed.cases(quick), LOOPS, epochs=epochs, repeats=repeats, device=device
    )
    rows = [
        [
            *case,
            ms["trainer"],
            ms["trainer_mixed"],
            ms["handwritten"],
            ms["floor"],
            epoch_speed.ratio(runs, "handwritten", "trainer"),
            epoch_speed.ratio(runs, "trainer", "floor"),
            epoch_speed.ratio(runs, "trainer_mixed", "trainer"),
        ]
        for *case, ms, runs in results
    ]
    speedups = [epoch_speed.ratio(runs, "handwritten", "trainer") for *_, runs in results]
    return (
        f"Median per-epoch milliseconds over {epochs} epochs after one warm-up, median of per-repeat "
        f"ratios over {repeats} repeats, loops in a rotated order; batch {epoch_speed.BATCH}, Adam, no "
        "clipping, 32-step forecasting windows. 'trainer' is the default (full precision), 'mixed' the "
        "trainer with `mixed_precision=True` (bfloat16 autocast); the floor trains in full precision.\n\n"
        + table(
            [
                *epoch_speed.CASE_COLUMNS,
                "trainer ms",
                "trainer mixed ms",
                "hand-written ms",
                "floor ms",
                "speed-up (hand-written / trainer)",
                "trainer / floor",
                "mixed / trainer",
            ],
            rows,
        )
        + f"\n\nSpeed-up over the hand-written loop: median **{statistics.median(speedups):.2f}x** "
        f"({min(speedups):.2f}-{max(speedups):.2f}x).\n"
    )


def end_to_end(*, quick: bool, device: torch.device) -> str:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    n_trials, max_epochs = (6, 3) if quick else (20, 10)
    seeds = range(1 if quick else 5)
    data = load_dataset("digits")
    assert isinstance(data, SequenceData)  # digits: classification sequences
    package_study(0, n_trials=1, max_epochs=1, device=device.type)  # untimed warm-up of both sides
    run_handwritten_study(data, n_trials=1, seed=0, device=device.type, max_epochs=1)
    rows, ratios = [], []
    for seed in seeds:
        sides = {
            "package": functools.partial(
                package_study, seed, n_trials=n_trials, max_epochs=max_epochs, device=device.type
            ),
            "hand": functools.partial(
                hand_study, data, seed, n_trials=n_trials, max_epochs=max_epochs, device=device.type
            ),
        }
        order = list(sides) if seed % 2 == 0 else list(sides)[::-1]  # neither side always first
        done = {side: sides[side]() for side in order}
        (pkg_s, pkg), (hand_s, hand) = done["package"], done["hand"]
        rows.append(
            [seed, pkg_s, hand_s, pkg_s / hand_s, pkg.best_value, hand.best_value, best_epoch_value(hand)]
        )
        ratios.append(pkg_s / hand_s)
        print(f"  seed {seed}: package {pkg_s:.1f} s, hand-written {hand_s:.1f} s")
    return (
        f"{n_trials} trials of at most {max_epochs} epochs, package defaults (SQLite) against the "
        "hand-written study (in-memory storage, DataLoader, median pruner), both on the GPU, one after "
        "the other (alternating which goes first) after an untimed warm-up of each.\n\n"
        + table(
            [
                "seed",
                "package s",
                "hand-written s",
                "package / hand-written",
                "package best val acc",
                "hand-written best val acc",
                "hand-written best epoch acc",
            ],
            rows,
        )
        + f"\n\nMedian wall-clock ratio package / hand-written: **{statistics.median(ratios):.2f}**.\n"
    )


def run(*, quick: bool = False) -> Section | None:
    """The section, or ``None`` where no CUDA GPU is available."""
    if not torch.cuda.is_available():
        return None
    device = torch.device("cuda")
    gpu = torch.cuda.get_device_name(device)
    body = (
        f"Machine: {gpu}, {machine()}.\n\n### Per epoch\n\n"
        + per_epoch(quick=quick, device=device)
        + "\n### End to end: the digits study\n\n"
        + end_to_end(quick=quick, device=device)
    )
    return Section("On a GPU", "python -m benchmarks --only gpu", body)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    section = run(quick=parser.parse_args().quick)
    print(section.markdown() if section is not None else "no CUDA device here")
