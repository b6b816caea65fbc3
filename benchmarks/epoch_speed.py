"""Per-epoch training speed: the package's trainer vs a hand-written loop vs the raw floor.

* **trainer**: ``optuna_rnn.Trainer`` (training + validation, shuffling, bucketing and
  packing of variable-length data, loss accumulated on the device).
* **hand-written**: the official Optuna PyTorch example's style: a ``DataLoader`` over a
  ``TensorDataset`` (variable-length data padded to the longest sequence), a plain
  ``torch.optim.Adam``, validation in batches of the same size with ``.item()`` per batch.
* **floor**: the same model's forward + backward + step over batches built once before
  timing, with nothing else (no validation, no shuffling).

All three train the same model (same initial weights, Adam, batch 64, no clipping) and are
timed in the same process, from outside each loop (the trainer between its ``on_epoch_end``
calls, so its bookkeeping counts). Each case runs ``REPEATS`` times with the three loops in a
rotated order; the table reports the median per-epoch milliseconds and the median of the
per-repeat ratios.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from benchmarks.common import Section, machine, table
from optuna_rnn import DATASETS, Hyperparams, Trainer, build_model, load_dataset
from optuna_rnn.data import SequenceData
from optuna_rnn.training import Callback, TrainState, iterate_batches, make_optimizer

BATCH = 64
REPEATS = 5
CPU = torch.device("cpu")
CASE_COLUMNS = ["dataset", "length", "cell", "hidden"]  # what measure() gives for each case


class _EpochClock(Callback):
    """Wall-clock of each epoch as the caller sees it: from one ``on_epoch_end`` to the next."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._last = 0.0

    def on_train_begin(self, state: TrainState) -> None:
        self._last = time.perf_counter()

    def on_epoch_end(self, state: TrainState) -> None:
        now = time.perf_counter()
        self.seconds.append(now - self._last)
        self._last = now


def _loss_fn(data: SequenceData) -> nn.Module:
    return nn.CrossEntropyLoss() if data.task == "classification" else nn.MSELoss()


def trainer_epoch_ms(
    model: nn.Module,
    data: SequenceData,
    hp: Hyperparams,
    epochs: int,
    device: torch.device = CPU,
    *,
    mixed_precision: bool = False,
) -> float:
    """The package's trainer, by default as users get it (full precision; autocast only on a GPU)."""
    clock = _EpochClock()
    trainer = Trainer(max_epochs=epochs + 1, seed=0, device=device.type, mixed_precision=mixed_precision)
    trainer.fit(model, data, hp, callbacks=[clock])
    return 1000 * statistics.median(clock.seconds[1:])


def handwritten_epoch_ms(
    model: nn.Module, data: SequenceData, hp: Hyperparams, epochs: int, device: torch.device = CPU
) -> float:
    """The official example's loop: DataLoader, each batch moved to the device, per-batch .item()."""
    model.to(device)
    loss_fn = _loss_fn(data)
    optimizer = torch.optim.Adam(model.parameters(), lr=hp.lr)
    train = DataLoader(TensorDataset(data.train.X, data.train.y), batch_size=hp.batch_size, shuffle=True)
    valid = DataLoader(TensorDataset(data.valid.X, data.valid.y), batch_size=hp.batch_size)
    times = []
    for _ in range(epochs + 1):
        t0 = time.perf_counter()
        model.train()
        for x, y in train:
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
        model.eval()
        correct = 0.0
        with torch.no_grad():
            for x, y in valid:
                x, y = x.to(device), y.to(device)
                out = model(x)
                if data.task == "classification":
                    correct += out.argmax(dim=1).eq(y).sum().item()
                else:
                    correct += ((out - y) ** 2).sum().item()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times[1:])


def floor_epoch_ms(
    model: nn.Module, data: SequenceData, hp: Hyperparams, epochs: int, device: torch.device = CPU
) -> float:
    """Forward + backward + step over batches pre-built on the device, in full precision, nothing else."""
    model.to(device)
    loss_fn = _loss_fn(data)
    optimizer = make_optimizer(model, hp)
    g = torch.Generator().manual_seed(0)
    batches = [
        (x.to(device), y.to(device), lb)
        for x, y, lb in iterate_batches(data.train, hp.batch_size, generator=g)
    ]
    times = []
    for _ in range(epochs + 1):
        t0 = time.perf_counter()
        for x, y, lb in batches:
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(x, lb), y).backward()
            optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times[1:])


def cases(quick: bool) -> list[tuple[str, str, int]]:
    names = [n for n in ("digits", "japanese_vowels", "sunspots", "co2") if n in DATASETS]
    hiddens = (32, 128) if quick else (32, 128, 256)
    cells = ("lstm",) if quick else ("lstm", "gru")
    return [(n, c, h) for n in names for c in cells for h in hiddens]


Loop = Callable[[nn.Module, SequenceData, Hyperparams, int, torch.device], float]

LOOPS: dict[str, Loop] = {
    "trainer": trainer_epoch_ms,
    "handwritten": handwritten_epoch_ms,
    "floor": floor_epoch_ms,
}


def measure(
    cases: list[tuple[str, str, int]],
    loops: dict[str, Loop],
    *,
    epochs: int,
    repeats: int,
    device: torch.device = CPU,
) -> list[tuple[str, str, str, int, dict[str, float], list[dict[str, float]]]]:
    """Per case: dataset, length, cell, hidden, median ms per loop, and each repeat's ms per loop.

    Every loop trains a copy of the same initial model; the loops run in a rotated order from
    one repeat to the next, so that none always runs first or last.
    """
    results = []
    for name, cell, hidden in cases:
        dataset = load_dataset(name)
        data = dataset.windowed(32)
        hp = Hyperparams(cell=cell, hidden_size=hidden, batch_size=BATCH, grad_clip=None, lr=1e-3)
        torch.manual_seed(0)
        base = build_model(hp, input_size=data.input_size, output_size=data.output_size)
        runs: list[dict[str, float]] = []
        order = list(loops)
        for _ in range(repeats):
            runs.append(
                {label: loops[label](copy.deepcopy(base), data, hp, epochs, device) for label in order}
            )
            order = order[1:] + order[:1]
        ms = {label: statistics.median(r[label] for r in runs) for label in loops}
        shape = "variable" if data.train.lengths is not None else f"{data.train.X.shape[1]} steps"
        results.append((name, shape, cell, hidden, ms, runs))
        print(f"  {name:16} {cell} {hidden:4}: " + ", ".join(f"{k} {v:.1f} ms" for k, v in ms.items()))
    return results


def ratio(runs: list[dict[str, float]], top: str, bottom: str) -> float:
    """The median over repeats of ``top`` / ``bottom``."""
    return statistics.median(r[top] / r[bottom] for r in runs)


def run(*, quick: bool = False) -> Section:
    epochs = 3 if quick else 8
    repeats = 1 if quick else REPEATS
    rows = [
        [
            *case,
            ms["trainer"],
            ms["handwritten"],
            ms["floor"],
            ratio(runs, "trainer", "handwritten"),
            ratio(runs, "handwritten", "trainer"),
            ratio(runs, "trainer", "floor"),
        ]
        for *case, ms, runs in measure(cases(quick), LOOPS, epochs=epochs, repeats=repeats)
    ]
    body = (
        f"Machine: {machine()}. Median per-epoch milliseconds over {epochs} epochs after one warm-up, "
        f"and median of the per-repeat ratios, over {repeats} repeats with the three loops in a rotated "
        f"order; batch {BATCH}, Adam, no clipping; forecasting uses 32-step windows. Training batches are "
        f"{BATCH} on all three sides; the trainer validates in one batch of up to 4096 sequences, the "
        f"hand-written loop in batches of {BATCH} as the official example does, and the floor does not "
        "validate. A trainer/floor below 1 is noise (the trainer also validates).\n\n"
        + table(
            [
                *CASE_COLUMNS,
                "trainer ms",
                "hand-written ms",
                "floor ms",
                "trainer / hand-written",
                "speed-up (hand-written / trainer)",
                "trainer / floor",
            ],
            rows,
        )
    )
    return Section("Per-epoch training speed", "python -m benchmarks --only epoch_speed", body)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    print(run(quick=parser.parse_args().quick).markdown())
