"""Trainer callbacks: pruning, early stopping and divergence detection.

Each is a few lines on top of the :class:`~optuna_rnn.training.Callback`
protocol. Order matters: put :class:`DivergenceGuard` before
:class:`PruningCallback` so that a NaN is never reported to Optuna.
"""

from __future__ import annotations

import math

import optuna

from optuna_rnn.training import Callback, TrainState


class Diverged(optuna.TrialPruned):
    """Training diverged (non-finite loss or exploding gradients).

    A subclass of :class:`optuna.TrialPruned`, so Optuna records the trial as
    PRUNED and the study goes on; the message says why.
    """


class PruningCallback(Callback):
    """Report the validation metric to ``trial`` every epoch; prune when the pruner says so.

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

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial

    def on_epoch_end(self, state: TrainState) -> None:
        self.trial.report(state.val_metric, state.epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {state.epoch}")


class EarlyStopping(Callback):
    """Stop when the validation metric has not improved by ``min_delta`` for ``patience`` epochs."""

    def __init__(self, *, patience: int = 10, min_delta: float = 0.0) -> None:
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        self.patience = patience
        self.min_delta = min_delta
        self._best = math.nan
        self._best_epoch = 0

    def on_train_begin(self, state: TrainState) -> None:
        self._best, self._best_epoch = math.nan, state.epoch

    def on_epoch_end(self, state: TrainState) -> None:
        sign = 1.0 if state.metric.direction == "maximize" else -1.0
        if math.isnan(self._best) or sign * (state.val_metric - self._best) > self.min_delta:
            self._best, self._best_epoch = state.val_metric, state.epoch
        elif state.epoch - self._best_epoch >= self.patience:
            state.stop_reason = f"early stopping: no improvement for {self.patience} epochs"


class DivergenceGuard(Callback):
    """Stop a trial whose loss is NaN/inf or whose gradient norm exceeds ``max_grad_norm``.

    Raises :class:`Diverged`, which Optuna records as PRUNED; the
    :class:`~optuna_rnn.objective.Objective` stores the message as the trial's
    ``stop_reason``. The gradient norm is the largest pre-clipping norm of the
    epoch, known when gradient clipping is on.
    """

    def __init__(self, *, max_grad_norm: float = 1e6) -> None:
        self.max_grad_norm = max_grad_norm

    def on_epoch_end(self, state: TrainState) -> None:
        if not math.isfinite(state.train_loss):
            raise Diverged(f"diverged at epoch {state.epoch}: training loss is {state.train_loss}")
        if not math.isfinite(state.val_metric):
            raise Diverged(f"diverged at epoch {state.epoch}: validation metric is not finite")
        if not math.isfinite(state.grad_norm) and state.hp.grad_clip is not None:
            raise Diverged(f"diverged at epoch {state.epoch}: gradient norm is {state.grad_norm}")
        if state.grad_norm > self.max_grad_norm:
            raise Diverged(
                f"diverged at epoch {state.epoch}: gradient norm {state.grad_norm:.3g} "
                f"exceeds {self.max_grad_norm:.3g}"
            )
