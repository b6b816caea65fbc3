from __future__ import annotations

import gc
import weakref
from pathlib import Path

import optuna
import pytest
import torch

from optuna_rnn import Callback, Objective, SearchSpace, TrainState, load_dataset
from optuna_rnn.memory import _malloc_trim, release_memory


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(_malloc_trim() is None, reason="glibc's malloc_trim is not available here")
def test_release_memory_returns_freed_heap_pages() -> None:
    # 160 MB of 4 KB blocks with every 64th kept alive: the freed ones fragment the heap,
    # so the allocator cannot give them back by shrinking it from the top
    blocks = [bytearray(4000) for _ in range(40_000)]
    kept = blocks[::64]
    del blocks
    before = _rss_mb()
    release_memory()
    after = _rss_mb()
    assert before - after > 50, (before, after)
    assert len(kept) == 625


def test_a_pruned_trial_frees_its_model_without_waiting_for_the_garbage_collector() -> None:
    # On CUDA, release_memory() can only return what is already freed: a pruned trial's model must
    # not wait for a collection because the exception's traceback still holds the trial's frames.
    models: list[weakref.ref[torch.nn.Module]] = []

    class PruneAtFirstEpoch(Callback):
        def on_train_begin(self, state: TrainState) -> None:
            models.append(weakref.ref(state.model))

        def on_epoch_end(self, state: TrainState) -> None:
            raise optuna.TrialPruned("test")

    space = SearchSpace(cell="gru", hidden_size=8, num_layers=1, batch_size=256)
    data = load_dataset("digits")
    prune = [PruneAtFirstEpoch()]
    objective = Objective(data, space=space, max_epochs=2, device="cpu", seed=0, callbacks=prune)
    study = optuna.create_study(direction=objective.direction)
    # the first optimiser in a process imports part of torch lazily, and the import keeps its caller's
    # frames (so that first model) for good: judge the second trial
    study.optimize(objective, n_trials=1)
    gc.collect()
    gc.disable()
    try:
        study.optimize(objective, n_trials=1)
        assert study.trials[1].state == optuna.trial.TrialState.PRUNED
        assert len(models) == 2 and models[1]() is None
    finally:
        gc.enable()
