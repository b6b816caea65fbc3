"""Trainer callbacks: pruning, early stopping, divergence detection and checkpoints.

Each is a few lines on top of the :class:`~optuna_rnn.training.Callback`
protocol. Order matters: put :class:`DivergenceGuard` before
:class:`PruningCallback` so that a NaN is never reported to Optuna, and
:class:`Checkpoint` last so that it saves what the others decided.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Collection, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch

from optuna_rnn.snapshot import PruningSnapshot
from optuna_rnn.training import Callback, TrainState

CHECKPOINT_FORMAT = "optuna-rnn-checkpoint/1"


class Diverged(optuna.TrialPruned):
    """Training diverged (non-finite loss or exploding gradients).

    A subclass of :class:`optuna.TrialPruned`, so Optuna records the trial as
    PRUNED and the study goes on; the message says why.
    """


class PruningCallback(Callback):
    """Report the validation metric to ``trial`` every epoch; prune when the pruner says so.

    With ``background=True`` the report and the pruner's check (a storage
    write and a read) run in a worker thread while the next epoch trains. When
    the pruner says prune, that epoch is abandoned at its next batch and the
    trial ends PRUNED at the epoch it was judged on, as with in-line checks
    (or at the next epoch, when that one finished before the check did);
    the last epoch is always judged before training returns. This pays off
    when the check waits on a remote database; with a local SQLite file the
    check is Python work that competes with the training loop for the
    interpreter, and in our overhead benchmark it saved nothing, so in-line
    checks are the default.

    With a ``snapshot`` the pruner judges against the worker's local copy of the completed
    trials instead of re-reading the storage at every epoch (see :class:`PruningSnapshot`);
    the study objective passes one.

    Example::

        import optuna
        from optuna_rnn import Hyperparams, PruningCallback, Trainer, build_model, load_dataset

        data = load_dataset("digits")

        def objective(trial: optuna.Trial) -> float:
            hp = Hyperparams(hidden_size=trial.suggest_int("hidden_size", 8, 32))
            model = build_model(hp, input_size=data.input_size, output_size=data.output_size)
            trainer = Trainer(max_epochs=2, callbacks=[PruningCallback(trial)])
            return trainer.fit(model, data, hp).best_value

        optuna.create_study(direction="maximize").optimize(objective, n_trials=2)
    """

    def __init__(
        self,
        trial: optuna.Trial,
        *,
        background: bool = False,
        snapshot: PruningSnapshot | None = None,
        inherited: Collection[int] = (),
    ) -> None:
        self.trial = trial
        self.background = background
        self.snapshot = snapshot
        # Epochs a retry inherited from the trial it continues: Optuna keeps the first value
        # reported for a step (and warns at each repeat), so a resumed trial does not report them.
        self.inherited = frozenset(inherited)
        self._reported: dict[int, float] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._pending: Future[bool] | None = None
        self._pending_epoch = 0

    def on_train_begin(self, state: TrainState) -> None:
        if self.background:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="optuna-rnn-pruning")

    def on_epoch_end(self, state: TrainState) -> None:
        if self._verdict():
            # The check took longer than the epoch that followed it: prune at this epoch instead.
            if state.epoch not in self.inherited:
                self.trial.report(state.val_metric, state.epoch)
            raise optuna.TrialPruned(f"pruned at epoch {state.epoch}")
        if self._executor is None or state.epoch >= state.max_epochs:
            if self._check(state.epoch, state.val_metric):
                raise optuna.TrialPruned(f"pruned at epoch {state.epoch}")
            return
        epoch = self._pending_epoch = state.epoch
        self._pending = self._executor.submit(self._check, epoch, state.val_metric)
        self._pending.add_done_callback(lambda done: self._stop_if_pruned(done, state, epoch))

    def on_train_end(self, state: TrainState) -> None:
        try:
            pruned = self._verdict()
        finally:
            if self._executor is not None:
                self._executor.shutdown()
                self._executor = None
            if self.snapshot is not None:
                self.snapshot.forget(self.trial)
        if pruned:
            raise optuna.TrialPruned(f"pruned at epoch {self._pending_epoch}")

    def _check(self, epoch: int, value: float) -> bool:
        if epoch not in self.inherited:
            self.trial.report(value, epoch)
            self._reported[epoch] = value
        if self.snapshot is None:
            return self.trial.should_prune()
        return self.snapshot.should_prune(self.trial, self._reported)

    def _verdict(self) -> bool:
        """Wait for the check in flight, if any; re-raises what it raised."""
        pending, self._pending = self._pending, None
        return pending is not None and pending.result()

    @staticmethod
    def _stop_if_pruned(done: Future[bool], state: TrainState, epoch: int) -> None:
        error = done.exception()
        if error is not None:
            state.stop_now(error)
        elif done.result():
            state.stop_now(optuna.TrialPruned(f"pruned at epoch {epoch}"))


class EarlyStopping(Callback):
    """Stop when the validation metric has not improved by ``min_delta`` for ``patience`` epochs."""

    def __init__(self, *, patience: int = 10, min_delta: float = 0.0) -> None:
        if isinstance(patience, bool) or not isinstance(patience, int | np.integer) or patience < 1:
            raise ValueError(f"patience must be a whole number >= 1, got {patience!r}")
        self.patience = int(patience)
        self.min_delta = min_delta
        self._best = math.nan
        self._best_epoch = 0

    def on_train_begin(self, state: TrainState) -> None:
        # Replaying the history makes a resumed run stop where an uninterrupted one would.
        self._best, self._best_epoch = math.nan, state.epoch - len(state.history)
        for past in state.history:
            self._improved(state, past["val_metric"], int(past["epoch"]))

    def on_epoch_end(self, state: TrainState) -> None:
        if not self._improved(state, state.val_metric, state.epoch) and (
            state.epoch - self._best_epoch >= self.patience
        ):
            state.stop_reason = f"early stopping: no improvement for {self.patience} epochs"

    def _improved(self, state: TrainState, value: float, epoch: int) -> bool:
        if math.isnan(value):  # a NaN epoch never counts as progress
            return False
        sign = 1.0 if state.metric.direction == "maximize" else -1.0
        if math.isnan(self._best) or sign * (value - self._best) > self.min_delta:
            self._best, self._best_epoch = value, epoch
            return True
        return False


class DivergenceGuard(Callback):
    """Stop a trial whose loss is NaN/inf or whose gradient norm exceeds ``max_grad_norm``.

    Raises :class:`Diverged`, which Optuna records as PRUNED; the
    :class:`~optuna_rnn.objective.Objective` stores the message as the trial's
    ``stop_reason``. The gradient norm is the largest pre-clipping norm of the
    epoch, known when gradient clipping is on.
    """

    def __init__(self, *, max_grad_norm: float = 1e6) -> None:
        if (
            isinstance(max_grad_norm, bool)
            or not isinstance(max_grad_norm, int | float)
            or not max_grad_norm > 0
        ):
            raise ValueError(f"max_grad_norm must be a number > 0, got {max_grad_norm!r}")
        self.max_grad_norm = max_grad_norm

    def on_epoch_end(self, state: TrainState) -> None:
        if not math.isfinite(state.train_loss):
            raise Diverged(f"diverged at epoch {state.epoch}: training loss is {state.train_loss}")
        if not math.isfinite(state.val_metric):
            raise Diverged(f"diverged at epoch {state.epoch}: validation metric is not finite")
        if not math.isfinite(state.val_loss):  # weights gone non-finite in the epoch's last step
            raise Diverged(f"diverged at epoch {state.epoch}: validation loss is {state.val_loss}")
        if not math.isfinite(state.grad_norm) and state.hp.grad_clip is not None:
            raise Diverged(f"diverged at epoch {state.epoch}: gradient norm is {state.grad_norm}")
        if state.grad_norm > self.max_grad_norm:
            raise Diverged(
                f"diverged at epoch {state.epoch}: gradient norm {state.grad_norm:.3g} "
                f"exceeds {self.max_grad_norm:.3g}"
            )


class Checkpoint(Callback):
    """Save the whole training state to ``path`` every ``every`` epochs, atomically.

    ``min_seconds`` skips an epoch's save when the last one is more recent than
    that: short epochs then cost no disk writes, and a killed run loses at most
    ``min_seconds`` of training.

    The file holds :meth:`TrainState.state_dict` (weights, optimiser, RNG
    states, epoch, history, best weights) plus ``meta``, a dict that
    :func:`load_checkpoint` compares so that a checkpoint is only resumed by
    the run it belongs to (the objective puts the hyperparameters and seed
    there). Writing goes to a temporary file that is then renamed over
    ``path``, so a process killed mid-write leaves the previous checkpoint
    intact. Resume with ``Trainer.fit(..., resume_from=load_checkpoint(path))``.

    Example::

        from optuna_rnn import Checkpoint, Hyperparams, Trainer, build_model, load_checkpoint, load_dataset

        data = load_dataset("digits")
        hp = Hyperparams(hidden_size=8, batch_size=256)
        model = build_model(hp, input_size=data.input_size, output_size=data.output_size)
        trainer = Trainer(max_epochs=2, seed=0, device="cpu")
        trainer.fit(model, data, hp, callbacks=[Checkpoint("run.ckpt")])
        assert load_checkpoint("run.ckpt")["epoch"] == 2
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        every: int = 1,
        min_seconds: float = 0.0,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.path = Path(path)
        self.every = every
        self.min_seconds = min_seconds
        self.meta = dict(meta or {})
        self._last = -math.inf

    def on_epoch_end(self, state: TrainState) -> None:
        due = state.epoch % self.every == 0 and time.monotonic() - self._last >= self.min_seconds
        if due or state.stop_reason is not None:
            save_checkpoint(self.path, state.state_dict(), meta=self.meta)
            self._last = time.monotonic()


def save_checkpoint(
    path: str | os.PathLike[str], state: Mapping[str, Any], *, meta: Mapping[str, Any] | None = None
) -> None:
    """Write a checkpoint: to a temporary file beside ``path``, flushed, then renamed over it."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    payload = {"format": CHECKPOINT_FORMAT, "meta": dict(meta or {}), "state": dict(state)}
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        try:
            file = open(tmp, "wb")  # noqa: SIM115 (a with-block follows)
        except FileNotFoundError:  # a worker removed the empty folder just now: make it again
            path.parent.mkdir(parents=True, exist_ok=True)
            file = open(tmp, "wb")  # noqa: SIM115
        with file:
            torch.save(payload, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(
    path: str | os.PathLike[str], *, meta: Mapping[str, Any] | None = None
) -> dict[str, Any] | None:
    """The training state saved at ``path``, or ``None`` when there is none to resume.

    ``None`` also when the file is unreadable or its ``meta`` differs from the
    given one (a warning says why): training then starts from epoch 1, which
    is always correct, just slower.
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged file must never stop a trial
        warnings.warn(f"ignoring unreadable checkpoint {path}: {exc}", stacklevel=2)
        return None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        warnings.warn(f"ignoring {path}: not an optuna-rnn checkpoint", stacklevel=2)
        return None
    if meta is not None and payload.get("meta") != dict(meta):
        warnings.warn(f"ignoring checkpoint {path}: it belongs to another run", stacklevel=2)
        return None
    state: dict[str, Any] = payload["state"]
    return state


def remove_checkpoint(path: str | os.PathLike[str]) -> None:
    """Delete a checkpoint and any temporary file a killed writer left beside it."""
    path = Path(path)
    for leftover in [path, *path.parent.glob(f"{path.name}.tmp-*")]:
        leftover.unlink(missing_ok=True)
