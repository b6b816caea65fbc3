"""Surviving crashes: heartbeat settings, per-trial checkpoints and re-running interrupted trials.

Three ways a trial can stop before it finishes, and what brings it back:

* **Its worker died** (SIGKILL, power loss, a lost machine). On RDB storages
  every running trial sends a heartbeat; once it is older than the grace
  period, the next worker to start a trial marks it FAIL and Optuna's
  ``RetryHeartbeatStaleTrialCallback`` queues one retry with the same
  parameters, user attrs and intermediate values (see ``open_storage``).
  Journal files and Redis have no heartbeat, so a run or worker that starts
  also looks for running trials whose worker (the ``worker_id`` user attr) was
  on this machine and no longer exists, and does the same
  (:func:`requeue_orphaned`); a dead worker on another machine needs the heartbeat.
* **It was interrupted** (SIGTERM, SIGINT, Ctrl-C). The trial is closed as FAIL
  with ``stop_reason = "interrupted"``; the next ``run`` or ``worker`` start
  queues it once more through the same callback (:func:`requeue_interrupted`),
  however often it was interrupted before: stopping a run (or a preemptible
  machine being reclaimed) is not the trial's fault.
* In both cases the retry finds the dead trial's **checkpoint**: the file is
  named by the ``checkpoint`` user attr, which the retry inherits, and it holds
  the whole training state after the last finished epoch, so the retry goes on
  from there with the same seed and data order. Checkpoints of finished
  trials are deleted.

A dead worker's trial is retried once: a retry whose worker dies again stays
FAIL (it may be what kills the worker), and its checkpoint is removed when a
run wraps up (:func:`drop_leftovers`). Interruptions do not count as deaths
(:class:`RetryDeadWorker`).
Checkpoints live in ``<artifacts>/checkpoints/<study>/``; workers on several
machines resume each other's trials only when that directory is shared
(set ``--artifacts`` to a shared path when creating the study).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import os
import re
import time
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from optuna_rnn.callbacks import Checkpoint, load_checkpoint, remove_checkpoint
from optuna_rnn.errors import UsageError
from optuna_rnn.liveness import is_gone, pid_of, this_process

CHECKPOINT_ENV = "OPTUNA_RNN_CHECKPOINT_SECONDS"
DEFAULT_CHECKPOINT_SECONDS = 5
HEARTBEAT_ENV = "OPTUNA_RNN_HEARTBEAT_INTERVAL"
GRACE_ENV = "OPTUNA_RNN_HEARTBEAT_GRACE"
DEFAULT_HEARTBEAT_INTERVAL = 10
MAX_RETRY = 1
INTERRUPTED = "interrupted"
CHECKPOINT_ATTR = "checkpoint"
RESUMED_ATTR = "resumed_from_epoch"
CHECKPOINTS_DIRNAME = "checkpoints"
WORKER_ATTR = "worker"
WORKER_ID_ATTR = "worker_id"
#: ``[interval, grace]`` in seconds of the heartbeat a trial's worker runs with (RDB storages).
HEARTBEAT_ATTR = "heartbeat"
#: How many workers died under a trial's earlier attempts; retries inherit it.
DEATHS_ATTR = "worker_deaths"
STALE_CLAIM_SECONDS = 60
#: A running trial whose worker never recorded itself this long after it started is orphaned.
OWNERLESS_STALE_SECONDS = 600


def heartbeat_settings() -> tuple[int | None, int | None]:
    """``(interval, grace period)`` in seconds for RDB storages.

    10 s and 30 s unless ``$OPTUNA_RNN_HEARTBEAT_INTERVAL`` (``0`` turns the
    heartbeat off) or ``$OPTUNA_RNN_HEARTBEAT_GRACE`` say otherwise. A dead
    worker's trial is retried once the grace period has passed.
    """
    interval = _seconds(HEARTBEAT_ENV, DEFAULT_HEARTBEAT_INTERVAL, allow_zero=True)
    if interval == 0:
        return None, None
    grace = _seconds(GRACE_ENV, 3 * interval, allow_zero=False)
    if grace < 2 * interval:
        raise UsageError(
            f"${GRACE_ENV} ({grace} s) must be at least twice the heartbeat interval ({interval} s): "
            "between two heartbeats every live trial would look dead to the other workers"
        )
    return interval, grace


def checkpoint_seconds() -> int:
    """Seconds between two checkpoints of a trial: 5 unless ``$OPTUNA_RNN_CHECKPOINT_SECONDS``
    says otherwise (``0`` saves after every epoch)."""
    return _seconds(CHECKPOINT_ENV, DEFAULT_CHECKPOINT_SECONDS, allow_zero=True)


def storage_heartbeat(storage: optuna.storages.BaseStorage) -> tuple[int, int] | None:
    """``(interval, grace)`` of the heartbeat ``storage`` runs, or ``None`` without one."""
    if not isinstance(storage, optuna.storages.RDBStorage) or storage.heartbeat_interval is None:
        return None
    interval = storage.heartbeat_interval
    return interval, storage.grace_period or 2 * interval  # Optuna's own default grace


def heartbeat_conflicts(study: optuna.Study, mine: tuple[int, int] | None) -> list[str]:
    """How this worker's heartbeat settings ``mine`` clash with those of the running trials.

    Each worker fails the trials whose heartbeat is older than its own grace period. A worker
    whose grace is under two heartbeat intervals of another would fail that worker's live
    trials, and the other way round. A running trial's worker may be dead (then failing its
    trial is right), which a worker on another machine cannot tell: so this warns, not refuses.
    """
    if mine is None:
        return []
    interval, grace = mine
    clashes = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        theirs = trial.user_attrs.get(HEARTBEAT_ATTR)
        if not (isinstance(theirs, list) and len(theirs) == 2) or tuple(theirs) == mine:
            continue
        their_interval, their_grace = (int(v) for v in theirs)
        if grace < 2 * their_interval:
            clashes.append(
                f"trial {trial.number} runs on a worker whose heartbeat comes every {their_interval} s; "
                f"this worker's grace of {grace} s would fail it while it is alive"
            )
        elif 2 * interval > their_grace:
            clashes.append(
                f"trial {trial.number} runs on a worker whose grace is {their_grace} s; it would fail "
                f"this worker's trials between two of its heartbeats ({interval} s apart)"
            )
    return clashes


def _seconds(name: str, default: int, *, allow_zero: bool) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise UsageError(f"${name} must be a whole number of seconds, got {raw!r}") from None
    if value < 0 or (value == 0 and not allow_zero):
        raise UsageError(f"${name} must be {'>= 0' if allow_zero else '>= 1'}, got {value}")
    return value


def retry_callback() -> optuna.storages.RetryHeartbeatStaleTrialCallback:
    """Optuna's retry callback as optuna-rnn uses it: inheriting intermediate values, with no
    limit of its own (:class:`RetryDeadWorker` decides whether a retry is due)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RetryHeartbeatStaleTrialCallback(inherit_intermediate_values=True)


class RetryDeadWorker:
    """Queue a retry of a trial whose worker died, unless a worker already died under it.

    The storages' stale-trial callback and :func:`requeue_orphaned` use it. Optuna's
    ``RetryHeartbeatStaleTrialCallback(max_retry=...)`` counts every trial of the retry
    history, so a trial resumed after a Ctrl-C would not be retried when its worker is then
    killed; here only deaths count, interruptions do not. The count travels with the trial
    as its ``worker_deaths`` user attr, which the retry inherits: a worker killed while it was
    closing an interrupted trial leaves ``stop_reason = "interrupted"`` on a trial that died,
    so the stop reasons of the history cannot tell deaths apart.
    """

    def __init__(self, *, max_retry: int = MAX_RETRY) -> None:
        self.max_retry = max_retry

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.retry(study, trial)

    def retry(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        """Queue the retry if ``trial`` has one left; returns whether it did."""
        deaths = trial.user_attrs.get(DEATHS_ATTR)
        if not isinstance(deaths, int):  # a study from before the count: read the history
            history = trial.system_attrs.get("retry_history") or []
            earlier = [t for t in study.get_trials(deepcopy=False) if t.number in history] if history else []
            deaths = sum(t.user_attrs.get("stop_reason") != INTERRUPTED for t in earlier)
        if deaths >= self.max_retry:
            return False
        retry = copy.deepcopy(trial)
        retry.user_attrs.pop("stop_reason", None)  # whatever the dead worker had begun to write
        retry.user_attrs[DEATHS_ATTR] = deaths + 1
        retry_callback()(study, retry)
        return True


def checkpoints_dir(artifacts_dir: str | os.PathLike[str], study_name: str) -> Path:
    """``<artifacts>/checkpoints/<study>``; odd characters in the name are replaced."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", study_name).strip("._") or "study"
    if safe != study_name:
        safe += "-" + hashlib.sha1(study_name.encode()).hexdigest()[:8]
    return Path(artifacts_dir) / CHECKPOINTS_DIRNAME / safe


class TrialCheckpoint:
    """The checkpoint file of one trial and of the retries that continue it.

    The file is named by the trial's ``checkpoint`` user attr (``trial-<n>``
    for a new trial). Retries inherit user attrs, so a retry of trial *n*
    finds ``trial-<n>.pt`` whatever its own number. A retry records the epoch
    it resumed after as ``resumed_from_epoch`` (0 when no usable checkpoint was
    found and training restarted).
    """

    def __init__(self, directory: str | os.PathLike[str], trial: optuna.Trial) -> None:
        key = trial.user_attrs.get(CHECKPOINT_ATTR)
        self.inherited = isinstance(key, str)
        if not isinstance(key, str):
            key = f"trial-{trial.number}"
            trial.set_user_attr(CHECKPOINT_ATTR, key)
        self.trial = trial
        self.path = Path(directory) / f"{key}.pt"

    def resume(self, meta: dict[str, Any]) -> dict[str, Any] | None:
        """The saved training state to continue from, if this trial continues one."""
        state = load_checkpoint(self.path, meta=meta) if self.inherited else None
        if self.inherited:
            self.trial.set_user_attr(RESUMED_ATTR, int(state["epoch"]) if state is not None else 0)
        return state

    def callback(self, meta: dict[str, Any]) -> Checkpoint:
        """The trainer callback that saves this trial's state after an epoch.

        At most one save every ``$OPTUNA_RNN_CHECKPOINT_SECONDS`` (default 5 s;
        ``0`` saves after every epoch), so fast epochs are not slowed by disk writes.
        """
        return Checkpoint(
            self.path,
            min_seconds=checkpoint_seconds(),
            meta=meta,
        )

    def remove(self) -> None:
        """Forget the checkpoint: the trial finished and will not be resumed."""
        remove_checkpoint(self.path)


def tidy_checkpoints(directory: str | os.PathLike[str]) -> None:
    """Remove the study's checkpoint folder, and ``checkpoints/`` above it, once they are empty."""
    directory = Path(directory)
    for folder in (directory, directory.parent):
        with contextlib.suppress(OSError):  # not empty (or already gone): leave it
            folder.rmdir()


#: Trials this process marked interrupted: what its own stop message can speak of.
_MARKED: list[int] = []


def mark_interrupted(trial: optuna.Trial) -> None:
    """Record that SIGTERM/SIGINT stopped ``trial``, so that the next run retries it; best effort."""
    _MARKED.append(trial.number)
    with contextlib.suppress(Exception):  # the storage may be what failed; the trial is FAIL anyway
        trial.set_user_attr("stop_reason", INTERRUPTED)


def interrupted_here() -> bool:
    """Whether this process stopped a running trial on a signal (see :func:`mark_interrupted`)."""
    return bool(_MARKED)


def requeue_interrupted(study: optuna.Study, directory: str | os.PathLike[str]) -> list[int]:
    """Queue every trial closed by SIGTERM/SIGINT for a retry; returns their numbers.

    The retry has the same parameters, user attrs (seed, checkpoint; not the stop
    reason) and intermediate values, exactly as a heartbeat retry; a retry that
    is interrupted in turn is queued again, one that fails otherwise is not. Workers that start
    at the same moment claim each trial with an exclusive marker file in
    ``directory`` so that it is queued only once.
    """
    trials = study.get_trials(deepcopy=False)
    retried = retried_numbers(trials)
    queued = []
    for trial in trials:
        if (
            trial.state != TrialState.FAIL
            or trial.user_attrs.get("stop_reason") != INTERRUPTED
            or trial.number in retried
            or not _claim(Path(directory), trial)
        ):
            continue
        retry = copy.deepcopy(trial)
        del retry.user_attrs["stop_reason"]  # the retry is not interrupted unless it is in turn
        try:
            retry_callback()(study, retry)
        except BaseException:
            _marker(Path(directory), trial).unlink(missing_ok=True)  # unclaimed: the next run retries
            raise
        queued.append(trial.number)
    return queued


def requeue_orphaned(
    study: optuna.Study, directory: str | os.PathLike[str], *, storage: optuna.storages.BaseStorage
) -> list[int]:
    """Close as FAIL, and queue for a retry, running trials whose worker on this machine is gone.

    On storages without a heartbeat (journal file, Redis, an RDB with the heartbeat off)
    a killed worker's trial would otherwise stay RUNNING for ever, counting towards
    ``--n-trials`` so that every later run stops one trial short. Its ``worker_id`` attr
    says which process ran it (:mod:`optuna_rnn.liveness`); when that process is known to
    be gone, the trial is failed and retried once, as the heartbeat would do. A trial whose
    worker was killed before it recorded itself (while the sampler chose its parameters, a
    window the heartbeat does not cover either) is orphaned once it is
    ``OWNERLESS_STALE_SECONDS`` old, whichever machine ran it. Workers
    starting together claim each trial with the same marker files as
    :func:`requeue_interrupted`. ``storage`` is the study's: the trial is closed there, as
    Optuna's ``fail_stale_trials`` does, without the sampler's ``after_trial`` (a grid
    sampler's would stop the study, which outside ``optimize`` raises). Returns the numbers of
    the trials queued again.
    """
    trials = study.get_trials(deepcopy=False)
    by_number = {t.number: t for t in trials}
    queued = []
    for trial in trials:
        if trial.state != TrialState.RUNNING:
            continue
        owner = trial.user_attrs.get(WORKER_ID_ATTR)
        retried = trial.system_attrs.get("retry_history") or [None]
        inherited = by_number.get(retried[-1]) if isinstance(retried[-1], int) else None
        # a retry carries its dead predecessor's id until its own worker records itself
        recorded = isinstance(owner, str) and not (
            inherited is not None and inherited.user_attrs.get(WORKER_ID_ATTR) == owner
        )
        # Unrecorded, the worker died while the sampler chose its parameters (or is still at
        # it, a matter of seconds): by its age the trial is known to be orphaned on any machine.
        if recorded:
            orphaned = is_gone(str(owner), trial_started=trial.datetime_start) is True
        else:  # a retry its own (stalled, now live) worker took up again carries that worker's id
            alive = isinstance(owner, str) and is_gone(owner) is False
            orphaned = not alive and _older_than(trial, OWNERLESS_STALE_SECONDS)
        if orphaned and _fail_and_retry(study, trial, directory, storage=storage):
            queued.append(trial.number)
    return queued


def requeue_chosen(
    study: optuna.Study,
    numbers: list[int],
    directory: str | os.PathLike[str],
    *,
    storage: optuna.storages.BaseStorage,
) -> list[int]:
    """Close as FAIL, and queue for a retry, the running trials ``numbers`` whose workers the user
    knows are gone (``run --retry-trial N``).

    For what :func:`requeue_orphaned` cannot judge without a heartbeat: a worker on another
    machine, or in a container since restarted. A number that is not a running trial of the
    study raises :class:`UsageError` before any trial is touched. Returns the numbers queued again
    (a trial retried too often already is failed without one, as the heartbeat would do).
    """
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    for number in numbers:
        trial = by_number.get(number)
        if trial is None or trial.state != TrialState.RUNNING:
            state = "not in the study" if trial is None else f"{trial.state.name.lower()}, not running"
            raise UsageError(f"--retry-trial {number}: trial {number} of {study.study_name!r} is {state}")
        owner = trial.user_attrs.get(WORKER_ID_ATTR)
        if isinstance(owner, str) and is_gone(owner) is False:  # its training would be thrown away
            raise UsageError(
                f"--retry-trial {number}: trial {number}'s worker is alive on this machine "
                f"(pid {pid_of(owner)}); "
                "stop it first, or let it finish"
            )
    return [
        n for n in dict.fromkeys(numbers) if _fail_and_retry(study, by_number[n], directory, storage=storage)
    ]


def _fail_and_retry(
    study: optuna.Study,
    trial: FrozenTrial,
    directory: str | os.PathLike[str],
    *,
    storage: optuna.storages.BaseStorage,
) -> bool:
    """Claim ``trial`` (a dead worker's), close it as FAIL and queue its retry; whether one was queued."""
    if not _claim(Path(directory), trial):
        return False
    try:
        trial_id = storage.get_trial_id_from_study_id_trial_number(
            storage.get_study_id_from_name(study.study_name), trial.number
        )
        storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False  # closed meanwhile by another worker (the heartbeat's retry owns it)
    except BaseException:
        _marker(Path(directory), trial).unlink(missing_ok=True)  # unclaimed: the next run tries again
        raise
    return RetryDeadWorker().retry(study, trial)


def closed_elsewhere(study: optuna.Study, number: int) -> bool:
    """Whether trial ``number``, still running here, is already FAIL in the storage.

    So it is when this worker stalled past the heartbeat's grace period: another worker failed
    the trial and queued its retry, which owns the checkpoint now. Whatever this worker meets
    on waking (a storage refusing its writes, a checkpoint file the retry removed) is no failure
    of its own. ``False`` when the storage cannot say.
    """
    try:
        failed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    except Exception:
        return False
    return any(t.number == number for t in failed)


def drop_leftovers(study: optuna.Study, directory: str | os.PathLike[str]) -> None:
    """Remove what no run needs any more: claim markers of retried trials, orphaned checkpoints.

    Called when a run wraps up. A claim marker is spent once its trial's retry is in the
    storage (any run that started with this one has passed its requeue by then); left
    behind, the markers kept the checkpoint folder from ever being removed.

    A trial removes its own checkpoint when it finishes, but not when its worker dies: a
    retry whose worker died again is FAIL for good, and so is a trial that failed while
    its worker stalled and whose retry has since finished. A checkpoint is kept while any
    trial that uses it is running or waiting, or is an interrupted trial not yet queued again.
    """
    trials = study.get_trials(deepcopy=False)
    retried = retried_numbers(trials)
    needed, used = set(), set()
    for trial in trials:
        final = trial.state == TrialState.FAIL and trial.user_attrs.get("stop_reason") != INTERRUPTED
        if trial.number in retried or final:  # a dead retry is not retried again: its claim is spent too
            _marker(Path(directory), trial).unlink(missing_ok=True)
        key = trial.user_attrs.get(CHECKPOINT_ATTR)
        if not isinstance(key, str):
            continue
        used.add(key)
        if not trial.state.is_finished() or (
            trial.state == TrialState.FAIL
            and trial.user_attrs.get("stop_reason") == INTERRUPTED
            and trial.number not in retried
        ):
            needed.add(key)
    for key in used - needed:
        remove_checkpoint(Path(directory) / f"{key}.pt")


def _older_than(trial: FrozenTrial, seconds: float) -> bool:
    """Whether ``trial`` started more than ``seconds`` ago (Optuna records local time)."""
    started = trial.datetime_start
    return started is not None and (datetime.now() - started).total_seconds() > seconds


def retried_numbers(trials: list[FrozenTrial]) -> set[int]:
    """Numbers of the trials that a retry in ``trials`` continues."""
    return {n for t in trials for n in t.system_attrs.get("retry_history") or []}


def _marker(directory: Path, trial: FrozenTrial) -> Path:
    started = int(trial.datetime_start.timestamp()) if trial.datetime_start else 0
    return directory / f"requeued-{trial.number}-{started}"


def _claim(directory: Path, trial: FrozenTrial) -> bool:
    """Create ``requeued-<n>-<start>`` exclusively: only one process gets ``True``.

    A claim is followed by the retry within moments, after which the trial is no longer
    asked about; a marker whose trial is asked about again belongs to a process killed in
    between when that process (its identity is the marker's content) is gone, or, where that
    cannot be told (another machine), when the marker is older than ``STALE_CLAIM_SECONDS``.
    One process takes it over: renaming it away succeeds for one only, and the exclusive
    create that follows for one only.
    """
    directory.mkdir(parents=True, exist_ok=True)
    marker = _marker(directory, trial)
    for _ in range(2):
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            with os.fdopen(fd, "w") as file:
                file.write(this_process())
            return True
        except FileExistsError:
            try:
                claimer = marker.read_text(errors="replace").strip()
                fresh = time.time() - marker.stat().st_mtime < STALE_CLAIM_SECONDS
                if fresh and is_gone(claimer) is not True:  # an empty marker: its claimer is writing
                    return False
                taken = marker.with_name(f"{marker.name}.stale-{os.getpid()}")
                os.rename(marker, taken)
                taken.unlink()
            except FileNotFoundError:
                return False  # another process took it over first
    return False
