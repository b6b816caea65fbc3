"""The objective: trial -> hyperparameters -> model -> trainer -> validation metric.

Each trial records user attrs that make the dashboard's trials table useful:
``n_params``, ``epochs``, ``seconds``, ``stop_reason``, ``seed`` and the
learning curve (``curve``: per-epoch ``train_loss``, ``val_loss``, ``val_metric`` and
``seconds`` of training and validation compute).
A COMPLETE trial uploads its best-epoch weights as an artifact when an
artifact store is given. With a ``checkpoints`` directory, each epoch is
checkpointed and a retried trial resumes from the trial it continues (see
:mod:`optuna_rnn.recovery`); a trial stopped by Ctrl-C or SIGTERM records
``stop_reason = "interrupted"`` so that the next run retries it.

Example::

    import optuna
    from optuna_rnn import IntRange, Objective, SearchSpace, load_dataset

    objective = Objective(
        load_dataset("digits"),
        space=SearchSpace(cell="gru", hidden_size=IntRange(8, 16), num_layers=1),
        max_epochs=2,
    )
    study = optuna.create_study(direction=objective.direction)
    study.optimize(objective, n_trials=2)
"""

from __future__ import annotations

import copy
import math
import os
import random
import traceback
from collections.abc import Sequence
from typing import Any, Literal

import optuna
import torch

from optuna_rnn.artifacts import artifact_store, model_payload, upload_model
from optuna_rnn.callbacks import DivergenceGuard, EarlyStopping, PruningCallback
from optuna_rnn.data import Dataset, ForecastSeries, SequenceData, fit_space
from optuna_rnn.errors import UsageError, first_line, storage_failure
from optuna_rnn.memory import release_memory
from optuna_rnn.models import build_model, count_parameters
from optuna_rnn.recovery import TrialCheckpoint, closed_elsewhere, mark_interrupted
from optuna_rnn.snapshot import PruningSnapshot
from optuna_rnn.space import SearchSpace
from optuna_rnn.training import Callback, FitResult, Trainer, TrainState, metric_for

CURVE_KEYS = ("train_loss", "val_loss", "val_metric", "seconds")
MAX_CURVE_POINTS = 1000


class Objective:
    """An Optuna objective that tunes a recurrent network on ``dataset``.

    ``seed`` makes trials repeatable: trial ``n`` trains with seed ``seed + n``
    (without it, each trial draws a seed and records it), in one process running one
    trial at a time: threads of ``n_jobs`` share PyTorch's global random generator, so
    their trials do not repeat; run processes instead. ``patience`` enables
    early stopping; ``artifacts`` (a folder, or an Optuna artifact store) keeps the weights
    of every COMPLETE trial; ``checkpoints`` (a directory) makes trials
    resumable; ``callbacks`` are added to the built-in ones, each trial getting a shallow copy
    of each (attributes a callback sets are its trial's own, even under ``n_jobs``; a list it
    appends to is shared).
    """

    def __init__(
        self,
        dataset: Dataset,
        *,
        space: SearchSpace | None = None,
        max_epochs: int = 30,
        patience: int | None = 10,
        device: str = "auto",
        seed: int | None = None,
        artifacts: optuna.artifacts.FileSystemArtifactStore | str | os.PathLike[str] | None = None,
        callbacks: Sequence[Callback] = (),
        checkpoints: str | os.PathLike[str] | None = None,
    ) -> None:
        if not isinstance(dataset, SequenceData | ForecastSeries):
            raise UsageError(
                f"dataset must be a SequenceData or ForecastSeries (load_dataset returns one), "
                f"got {type(dataset).__name__}"
            )
        if space is not None and not isinstance(space, SearchSpace):
            raise UsageError(
                f"space must be a SearchSpace (SearchSpace.from_dict reads a dict), "
                f"got {type(space).__name__}"
            )
        # checked now, as the trials would use them: else the first trial fails on them, trained
        Trainer(max_epochs=max_epochs, device=device, seed=seed)
        if patience is not None:
            EarlyStopping(patience=patience)
        self.dataset = dataset
        self.space = fit_space(space or SearchSpace(), dataset)  # windows the series can serve
        self.max_epochs = max_epochs
        self.patience = patience
        self.device = device
        self.seed = seed
        # a folder, as load_best_model(artifacts=...) takes it: a string would fail at upload, trained
        self.artifacts = (
            artifacts if not isinstance(artifacts, (str, os.PathLike)) else artifact_store(artifacts)
        )
        self.callbacks = list(callbacks)
        self.checkpoints = checkpoints
        self.metric = metric_for(dataset.task)
        self._snapshot: PruningSnapshot | None = None

    @property
    def direction(self) -> Literal["maximize", "minimize"]:
        """``maximize`` for accuracy, ``minimize`` for RMSE."""
        return self.metric.direction

    def __call__(self, trial: optuna.Trial | optuna.trial.FixedTrial) -> float:
        """Train one configuration sampled from ``trial`` and return its best validation metric.

        A ``FixedTrial`` (``optuna.trial.FixedTrial(study.best_params)``) trains the
        configuration it holds, outside any study: nothing is pruned, saved or checkpointed.
        """
        if isinstance(trial, optuna.trial.FixedTrial):
            return self._guarded(trial)
        directions = [d.name.lower() for d in trial.study.directions]
        if directions != [self.direction]:  # else the study would keep the worst model as its best
            raise UsageError(
                f"this objective's {self.metric.name} is to {self.direction}: create the study with "
                f"direction={self.direction!r} (Objective.direction), not {', '.join(directions)}"
            )
        return self._guarded(trial)

    def _guarded(self, trial: optuna.Trial | optuna.trial.FixedTrial) -> float:
        """``_run`` with the caller's random state kept, and the trial's memory freed however it ends."""
        try:
            cuda = self.device != "cpu" and torch.cuda.is_available()  # the trial seeds the GPU too
            with torch.random.fork_rng(devices=[torch.cuda.current_device()] if cuda else []):
                return self._run(trial)  # seeds the trial, not the caller's random state
        except BaseException as exc:
            # Optuna keeps a pruned or failed trial's exception, whose traceback holds this trial's
            # frames and so its model, optimiser and data: drop their locals so they are freed now,
            # not at some later garbage collection (which release_memory could not hand back).
            traceback.clear_frames(exc.__traceback__)
            raise
        finally:
            release_memory()  # the trial's model and optimiser are out of scope by now

    def _run(self, trial: optuna.Trial | optuna.trial.FixedTrial) -> float:
        hp = self.space.suggest(trial, task=self.dataset.task)
        data = self.dataset.windowed(hp.window, forecast=hp.forecast)
        seed = self._trial_seed(trial)
        torch.manual_seed(seed)
        model = build_model(hp, input_size=data.input_size, output_size=data.output_size, task=data.task)
        callbacks: list[Callback] = [DivergenceGuard()]
        if isinstance(trial, optuna.Trial):
            inherited = _inherited_steps(trial)  # before the seed is recorded: a new trial has none to read
            callbacks.append(PruningCallback(trial, snapshot=self._pruning(trial), inherited=inherited))
        trial.set_user_attr("n_params", count_parameters(model))
        trial.set_user_attr("seed", seed)
        if self.patience is not None:
            callbacks.append(EarlyStopping(patience=self.patience))
        recorder = _CurveRecorder(trial)
        trainer = Trainer(max_epochs=self.max_epochs, device=self.device, seed=seed)
        # a shallow copy each: concurrent trials (n_jobs) must not share what a callback keeps per
        # trial (EarlyStopping's best epoch), while a list it appends to stays the caller's own
        all_callbacks = [*callbacks, *(copy.copy(c) for c in self.callbacks), recorder]
        checkpoint, resume = None, None
        if self.checkpoints is not None and isinstance(trial, optuna.Trial):
            checkpoint = TrialCheckpoint(self.checkpoints, trial)
            # what the checkpoint must match to be resumed: a same-named study on other data
            # (another storage, one artifacts folder) must not load it
            meta = {
                # a level forecaster's as before `forecast` existed: its checkpoints still resume
                "hyperparams": {k: v for k, v in hp.to_dict().items() if (k, v) != ("forecast", "level")},
                "seed": seed,
                "data": [data.name, data.input_size, data.output_size, len(data.train)],
            }
            resume = checkpoint.resume(meta)
            all_callbacks.append(checkpoint.callback(meta))  # last: saves what the others decided
        try:
            result = trainer.fit(model, data, hp, callbacks=all_callbacks, resume_from=resume)
        except optuna.TrialPruned as exc:
            trial.set_user_attr("stop_reason", str(exc) or "pruned")
            if checkpoint is not None:
                checkpoint.remove()
            raise
        except KeyboardInterrupt:
            if isinstance(trial, optuna.Trial):
                mark_interrupted(trial)  # keep the checkpoint: the next run resumes from it
            raise
        except optuna.exceptions.UpdateFinishedTrialError:
            raise  # another worker failed this trial (missed heartbeats); its retry owns the checkpoint
        except Exception as exc:
            # A storage that went away left the trial RUNNING: the next run resumes it from here.
            # A trial another worker failed while this one stalled is its retry's, checkpoint too.
            if storage_failure(exc) is None and not (
                isinstance(trial, optuna.Trial) and closed_elsewhere(trial.study, trial.number)
            ):
                said = f": {first_line(exc)}" if str(exc).strip() else ""
                trial.set_user_attr("stop_reason", f"failed: {type(exc).__name__}{said}")
                if checkpoint is not None:
                    checkpoint.remove()
            raise
        _record(trial, result)
        if self.artifacts is not None and isinstance(trial, optuna.Trial):
            payload = model_payload(
                model,
                hp,
                input_size=data.input_size,
                output_size=data.output_size,
                task=data.task,
                classes=list(data.classes) if data.classes else None,
                target_scale=data.target_scale,
                target_mean=data.target_mean,
                input_mean=list(data.input_mean),
                input_std=list(data.input_std),
                relative_channel=data.relative_channel,
                **(self.dataset.model_meta() if isinstance(self.dataset, ForecastSeries) else {}),
            )
            upload_model(self.artifacts, trial, payload)
        if checkpoint is not None:
            checkpoint.remove()
        return result.best_value

    def _pruning(self, trial: optuna.Trial) -> PruningSnapshot:
        """One snapshot of the completed trials per study, shared by the trials this worker runs."""
        if self._snapshot is None or self._snapshot.study is not trial.study:
            self._snapshot = PruningSnapshot(trial.study)
        return self._snapshot

    def _trial_seed(self, trial: optuna.Trial | optuna.trial.FixedTrial) -> int:
        inherited = trial.user_attrs.get("seed")
        if isinstance(inherited, int):
            return inherited
        if self.seed is not None:
            return self.seed + trial.number
        return random.SystemRandom().randrange(2**31)


def _inherited_steps(trial: optuna.Trial) -> set[int]:
    """The epochs a retry holds from the trial it continues (none for a new trial).

    A retry inherits its predecessor's user attrs, its ``seed`` among them; a new trial
    records its seed later, in :meth:`Objective._run`.
    """
    if not isinstance(trial.user_attrs.get("seed"), int):
        return set()
    for frozen in trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if frozen.number == trial.number:
            return set(frozen.intermediate_values)
    return set()


class _CurveRecorder(Callback):
    """Writes epochs, seconds and the learning curve to the trial's user attrs."""

    def __init__(self, trial: optuna.Trial | optuna.trial.FixedTrial) -> None:
        self.trial = trial

    def on_train_end(self, state: TrainState) -> None:
        self.trial.set_user_attr("epochs", state.epoch)
        self.trial.set_user_attr("seconds", round(state.seconds, 3))
        self.trial.set_user_attr("curve", curve_attr(state.history))


def curve_attr(history: list[dict[str, float]]) -> dict[str, list[Any]]:
    """The ``curve`` user attr: each of ``CURVE_KEYS`` per epoch, at most ``MAX_CURVE_POINTS`` epochs.

    A longer history keeps evenly spaced epochs, the last included, and says which in an
    ``epoch`` list: a user attr must fit a MySQL TEXT column (64 KB), about 50 bytes an epoch.
    """
    thinned = len(history) > MAX_CURVE_POINTS
    if thinned:  # evenly spaced, first and last included
        kept = [
            history[round(i * (len(history) - 1) / (MAX_CURVE_POINTS - 1))] for i in range(MAX_CURVE_POINTS)
        ]
    else:
        kept = history
    curve: dict[str, list[Any]] = {key: [_finite(h[key]) for h in kept] for key in CURVE_KEYS}
    if thinned:
        curve["epoch"] = [int(h["epoch"]) for h in kept]
    return curve


def _finite(value: float) -> float | None:
    """To 6 significant digits (a metric in small units keeps its shape), NaN/inf as ``None`` for JSON."""
    return float(f"{value:.6g}") if math.isfinite(value) else None


def _record(trial: optuna.Trial | optuna.trial.FixedTrial, result: FitResult) -> None:
    trial.set_user_attr("stop_reason", result.stop_reason)
    trial.set_user_attr("best_epoch", result.best_epoch)
