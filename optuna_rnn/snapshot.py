"""Pruning decisions from a local copy of the study's completed trials.

``optuna.Trial.should_prune`` first refreshes Optuna's trial cache from the storage: with
SQLite that is seven SQL queries, 4-7 ms, at every epoch of every trial, whatever the
size of the study (more on a remote PostgreSQL). For a recurrent net on a small data set an
epoch takes tens of milliseconds, so the check alone costs a tenth of the training.

Optuna's median, percentile, threshold and no-op pruners only read the study's completed
trials, so they give the same answer when they are shown a copy of those trials. A
:class:`PruningSnapshot` keeps that copy in an in-memory Optuna study and asks the study's
own pruner against it. Other pruners may keep state in the storage (hyperband and successive
halving write their rungs there), so they, and any other class (a subclass of the four may
read more), are asked through ``Trial.should_prune`` as before.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Mapping

import optuna
from optuna.trial import TrialState, create_trial

# Exactly these classes: a subclass may override ``prune`` to read what the copy lacks.
_READ_ONLY_PRUNERS = (
    optuna.pruners.MedianPruner,
    optuna.pruners.PercentilePruner,
    optuna.pruners.ThresholdPruner,
    optuna.pruners.NopPruner,
)
_COPY_PREFIX = "optuna-rnn-pruning-snapshot-"


class _HideCopies(logging.Filter):
    """Drop Optuna's "new study created in memory" record for a snapshot's private copy."""

    def filter(self, record: logging.LogRecord) -> bool:
        return _COPY_PREFIX not in record.getMessage()


_HIDE_COPIES = _HideCopies()


class PruningSnapshot:
    """Ask ``study``'s pruner about running trials against a local copy of its completed trials.

    The copy is read again at each trial's first check, so one worker judges exactly as
    ``Trial.should_prune`` would, and then whenever it is older than ``max_age`` seconds, so
    trials that other workers complete meanwhile count within ``max_age`` seconds. One
    snapshot serves every trial a worker runs on the study; it is safe to share between
    threads (Optuna's ``n_jobs``).

    Example::

        import optuna
        from optuna_rnn import PruningSnapshot

        study = optuna.create_study(pruner=optuna.pruners.MedianPruner(n_startup_trials=1))
        study.add_trial(optuna.trial.create_trial(value=1.0, intermediate_values={0: 1.0}))
        snapshot = PruningSnapshot(study)
        trial = study.ask()
        trial.report(5.0, 0)
        assert snapshot.should_prune(trial, {0: 5.0})
    """

    def __init__(self, study: optuna.Study, *, max_age: float = 5.0) -> None:
        if max_age < 0:
            raise ValueError(f"max_age must be >= 0 seconds, got {max_age}")
        self.study = study
        self.max_age = max_age
        self._lock = threading.Lock()
        self._copy: optuna.Study | None = None
        self._copied: set[int] = set()
        self._read_at = -float("inf")
        self._stored: dict[int, dict[int, float]] = {}

    @property
    def supported(self) -> bool:
        """Whether the study's pruner only reads completed trials (otherwise ask Optuna)."""
        return type(self.study.pruner) in _READ_ONLY_PRUNERS and len(self.study.directions) == 1

    def should_prune(self, trial: optuna.Trial, reported: Mapping[int, float]) -> bool:
        """The pruner's verdict on ``trial``, whose values this worker reported are ``reported``.

        Values the trial had in the storage before (a retry inherits those of the trial it
        retries) are read at its first check and count as well; where a step is in both, the
        stored value wins, as ``Trial.report`` keeps the first value reported for a step.
        """
        if not self.supported:
            return bool(trial.should_prune())
        with self._lock:
            first = trial.number not in self._stored
            if first or time.monotonic() - self._read_at > self.max_age:
                self._refresh(trial.number)
            values = {**reported, **self._stored[trial.number]}
            running = create_trial(state=TrialState.RUNNING, intermediate_values=values)
            assert self._copy is not None
            return bool(self.study.pruner.prune(self._copy, running))

    def forget(self, trial: optuna.Trial) -> None:
        """Drop what is kept for ``trial`` once it has finished training."""
        with self._lock:
            self._stored.pop(trial.number, None)

    def _refresh(self, number: int) -> None:
        if self._copy is None:
            logging.getLogger(optuna.storages.InMemoryStorage.__module__).addFilter(_HIDE_COPIES)
            self._copy = optuna.create_study(
                storage=optuna.storages.InMemoryStorage(),
                study_name=f"{_COPY_PREFIX}{uuid.uuid4().hex}",
                direction=self.study.direction,
                sampler=optuna.samplers.RandomSampler(),
            )
        trials = self.study.get_trials(deepcopy=False)
        new = [t for t in trials if t.state == TrialState.COMPLETE and t.number not in self._copied]
        self._copy.add_trials(
            [create_trial(value=t.value, intermediate_values=t.intermediate_values) for t in new]
        )
        self._copied.update(t.number for t in new)
        if number not in self._stored:
            own = next((t for t in trials if t.number == number), None)
            self._stored[number] = dict(own.intermediate_values) if own is not None else {}
        self._read_at = time.monotonic()
