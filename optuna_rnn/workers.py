"""Several worker processes on one study: the shared total, threads, GPUs, and local process groups.

Any number of ``optuna-rnn worker`` processes, on any machines, share one
study through its storage. They agree on when to stop without talking to
each other: :class:`SharedTotal` lets a worker start a trial only while the
study holds fewer than ``--n-trials`` finished plus running trials, so N
workers end with exactly ``--n-trials`` finished trials.

``optuna-rnn run --workers N`` (:func:`run_workers`) creates the study, then
starts N local ``worker`` processes. Each gets ``cores // N`` torch threads
(two 2-thread trainers on 2 cores were measured 17x slower than two 1-thread
ones) and, with several CUDA GPUs visible, a GPU of its own through
``CUDA_VISIBLE_DEVICES``. The storage URL reaches the workers through
``$OPTUNA_RNN_STORAGE``, never their command line, so ``ps`` shows no password.
Ctrl-C or SIGTERM to the parent is forwarded once to every worker as SIGTERM;
each closes its trial as FAIL and exits, and the parent exits 0.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from tqdm.auto import tqdm

from optuna_rnn import shutdown
from optuna_rnn.errors import storage_failure
from optuna_rnn.liveness import is_gone, this_process
from optuna_rnn.recovery import (
    HEARTBEAT_ATTR,
    WORKER_ATTR,
    WORKER_ID_ATTR,
    closed_elsewhere,
    mark_interrupted,
)

if TYPE_CHECKING:
    from optuna_rnn.study import StudySession

STOP_GRACE_SECONDS = 30.0
# Set in the environment of the workers that ``run --workers N`` starts: their parent speaks for them.
LOCAL_WORKER_ENV = "OPTUNA_RNN_LOCAL_WORKER"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
#: The start of a surplus trial's ``stop_reason``: asked for after the total was reached, refused.
SURPLUS = "surplus"
GRID_DONE = "every configuration of the grid has run or is running"


# --- the shared total -----------------------------------------------------------------


class SurplusTrial(Exception):
    """The study already holds its total of finished and running trials; this one is not trained."""


class SharedTotal:
    """Stop every worker of a study at exactly ``n_trials`` finished (complete + pruned) trials.

    Used as an ``optimize`` callback, it stops the worker once finished plus
    running trials reach ``n_trials``; :meth:`admit`, called as a trial
    starts, closes a trial that two workers raced into (more trials with a
    lower number than the total) as FAIL with ``stop_reason`` saying why,
    before any training. Trials of dead workers are failed first (heartbeat),
    so that they do not count as running and are retried instead.
    """

    def __init__(self, n_trials: int) -> None:
        self.n_trials = n_trials

    def reached(self, study: optuna.Study) -> bool:
        """Whether finished plus running trials already make the total."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)  # nothing happens without a heartbeat
        counted = study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))
        return len(counted) >= self.n_trials

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if self.reached(study) or trial.user_attrs.get("stop_reason") == f"{SURPLUS}: {GRID_DONE}":
            study.stop()

    def admit(self, study: optuna.Study, trial: optuna.Trial) -> None:
        """Raise :class:`SurplusTrial` when the trials before ``trial`` already make the total.

        In a grid study, also when ``trial`` repeats a grid point that another trial has run or is
        running (Optuna's grid sampler draws one again once none is left); as a callback, this
        then stops the worker. A grid point refused as surplus is queued again (a waiting trial
        that holds it), since the grid sampler counts it as visited and would never draw it again.
        """
        trials = study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING, TrialState.WAITING))
        point = next((_grid_point(t) for t in trials if t.number == trial.number), None)
        others = [t for t in trials if t.number != trial.number]
        taken = [t for t in others if point is not None and _grid_point(t) == point]
        # Of two trials drawn one point at once, the earlier keeps it (a later one is refused).
        running_earlier = [t for t in taken if t.state == TrialState.RUNNING and t.number < trial.number]
        if running_earlier or any(t.state in FINISHED for t in taken):
            self._refuse(trial, GRID_DONE)
        if sum(t.number < trial.number for t in others) >= self.n_trials:
            # a later trial holding the point is refused for this one's sake: queue it unless queued
            if point is not None and not any(t.state == TrialState.WAITING for t in taken):
                attrs = dict(zip(GRID_ATTRS, point, strict=True))
                study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING, system_attrs=attrs))
            self._refuse(trial, f"{self.n_trials} trials were already finished or running")

    @staticmethod
    def _refuse(trial: optuna.Trial, why: str) -> None:
        message = f"{SURPLUS}: {why}"
        trial.set_user_attr("stop_reason", message)
        raise SurplusTrial(message)


# Where Optuna's GridSampler keeps a trial's grid point; a retry copies them with the trial.
GRID_ATTRS = ("grid_id", "search_space")


def _grid_point(trial: FrozenTrial) -> tuple[Any, ...] | None:
    """The grid point ``trial`` holds (its id and the grid), or ``None`` outside a grid study."""
    if not all(key in trial.system_attrs for key in GRID_ATTRS):
        return None
    return tuple(trial.system_attrs[key] for key in GRID_ATTRS)


def is_surplus(trial: FrozenTrial) -> bool:
    """Whether ``trial`` was refused because the study's total was reached before it started."""
    return str(trial.user_attrs.get("stop_reason", "")).startswith(SURPLUS)


def state_counts(trials: Iterable[FrozenTrial]) -> dict[TrialState, int]:
    """How many ``trials`` are in each state, leaving out surplus ones (refused, not failed)."""
    count = dict.fromkeys(TrialState, 0)
    for trial in trials:
        if not is_surplus(trial):
            count[trial.state] += 1
    return count


class TrialGuard:
    """What one worker does around each trial of ``objective``.

    * records the worker (``host:pid``) in the trial's ``worker`` user attr, its
      identity (:mod:`optuna_rnn.liveness`) in ``worker_id`` and, with a ``heartbeat``
      (``(interval, grace)``), that in ``heartbeat`` for other workers to compare;
    * admits the trial against the :class:`SharedTotal`;
    * does not start a trial once SIGINT/SIGTERM asked to stop, and marks a
      trial they interrupted ``interrupted`` so the next run retries it
      (:mod:`optuna_rnn.shutdown`);
    * notices a trial *lost* to the heartbeat: when this worker stalled for
      longer than the grace period, another worker failed its trial and
      queued a retry; storing the result then fails, and :meth:`lost` tells
      the caller to go on with the next trial instead of crashing.
    """

    def __init__(
        self,
        study: optuna.Study,
        objective: Callable[[optuna.Trial], float],
        total: SharedTotal,
        *,
        heartbeat: tuple[int, int] | None = None,
    ) -> None:
        self.study = study
        self.heartbeat = heartbeat
        self.objective = objective
        self.total = total
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self.identity = this_process()  # for a later run to tell whether this worker is gone
        self._current: int | None = None
        self._raised = False

    def __call__(self, trial: optuna.Trial) -> float:
        self._current, self._raised = trial.number, False
        try:
            trial.set_user_attr(WORKER_ATTR, self.worker)
            trial.set_user_attr(WORKER_ID_ATTR, self.identity)
            if self.heartbeat is not None:
                trial.set_user_attr(HEARTBEAT_ATTR, list(self.heartbeat))
            shutdown.check()
            self.total.admit(self.study, trial)
            return self.objective(trial)
        except optuna.exceptions.UpdateFinishedTrialError:
            raise  # another worker closed this trial; see lost()
        except KeyboardInterrupt:
            mark_interrupted(trial)
            self._raised = True
            raise
        except BaseException:
            self._raised = not closed_elsewhere(self.study, trial.number)
            raise

    def lost(self) -> bool:
        """Whether the last trial was closed by another worker rather than by this one."""
        if self._current is None or self._raised:
            return False
        return closed_elsewhere(self.study, self._current)


def diversify_sampler(study: optuna.Study, sampler_name: str) -> None:
    """Make this worker's sampler draw differently from its siblings'.

    Workers built from one recorded ``--seed`` would otherwise propose the
    same random start-up points. QMC and grid samplers are left alone: their
    workers must share one seed to walk one sequence or grid together.
    """
    if sampler_name not in ("qmc", "grid"):
        study.sampler.reseed_rng()


# --- threads and devices ----------------------------------------------------------------


def available_cores() -> int:
    """The CPU cores this process may use: its affinity mask, capped by a container's CPU quota.

    A container limited to 2 CPUs (``docker run --cpus 2``) on a 64-core host still sees
    64 cores; threads for 64 there run many times slower than threads for 2.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = cpu_quota()
    return min(cores, quota) if quota is not None else cores


def cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """The CPUs a cgroup quota allows this process (cgroup v2 or v1), rounded up; ``None``: no quota."""
    for quota_file, period_file in (("cpu.max", None), ("cpu/cpu.cfs_quota_us", "cpu/cpu.cfs_period_us")):
        try:
            if period_file is None:  # v2: "<quota> <period>", or "max <period>"
                quota, period = (root / quota_file).read_text().split()[:2]
            else:  # v1: two files; a quota of -1 means none
                quota, period = (root / quota_file).read_text(), (root / period_file).read_text()
            if quota.strip() in ("max", "-1"):
                return None
            return max(1, math.ceil(int(quota) / int(period)))
        except (OSError, ValueError):
            continue
    return None


def local_peers(study: optuna.Study) -> int:
    """How many other live processes on this machine are running a trial of ``study``."""
    me = this_process()
    owners = {
        t.user_attrs.get(WORKER_ID_ATTR)
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    }
    return sum(isinstance(owner, str) and owner != me and is_gone(owner) is False for owner in owners)


def threads_per_worker(workers: int) -> int:
    """Torch threads for each of ``workers`` processes: workers x threads <= cores, at least 1."""
    return max(1, available_cores() // max(1, workers))


def gpus_per_worker(workers: int, device: str) -> list[str | None]:
    """The ``CUDA_VISIBLE_DEVICES`` value for each worker, or ``None`` to leave it as it is.

    With two or more GPUs visible (and a device other than ``cpu``), worker
    *i* gets GPU ``i mod count``; otherwise every worker sees what the parent sees.
    """
    if device == "cpu":
        return [None] * workers
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [d.strip() for d in visible.split(",") if d.strip()]
    else:
        import torch

        ids = [str(i) for i in range(torch.cuda.device_count())]
    if len(ids) < 2:
        return [None] * workers
    return [ids[i % len(ids)] for i in range(workers)]


# --- local worker processes -------------------------------------------------------------


def worker_command(
    study_name: str, *, n_trials: int, device: str, threads: int, timeout: float | None
) -> list[str]:
    """The command line of one local worker (the storage travels in the environment)."""
    command = [
        sys.executable,
        "-m",
        "optuna_rnn.cli",
        "worker",
        "--study",
        study_name,
        "--n-trials",
        str(n_trials),
        "--device",
        device,
        "--threads",
        str(threads),
        "-q",
    ]
    if timeout is not None:
        command += ["--timeout", str(timeout)]
    return command


def run_workers(
    session: StudySession,
    *,
    workers: int,
    n_trials: int,
    device: str = "auto",
    timeout: float | None = None,
    progress: bool = True,
) -> int:
    """Run ``workers`` local worker processes on ``session``'s study until it holds ``n_trials``.

    Returns 0 when every worker exited 0, else 1 (after saying which failed).
    A :class:`KeyboardInterrupt` (Ctrl-C, or SIGTERM through
    :mod:`optuna_rnn.shutdown`) stops the workers gracefully and is re-raised.
    """
    from optuna_rnn.study import run_trials  # study imports this module

    left = n_trials - session.finished()
    if left <= 0:  # nothing to train; requeue and wrap up as a one-process run would
        run_trials(session, n_trials=n_trials, device=device, progress=False)
        return 0
    workers = min(workers, left)  # an idle worker would only take cores from the others
    threads = threads_per_worker(workers)
    gpus = gpus_per_worker(workers, device)
    command = worker_command(
        session.study.study_name, n_trials=n_trials, device=device, threads=threads, timeout=timeout
    )
    base_env = {
        **os.environ,
        "OPTUNA_RNN_STORAGE": session.storage_url,
        "OMP_NUM_THREADS": str(threads),
        "PYTHONUNBUFFERED": "1",
        LOCAL_WORKER_ENV: "1",
    }
    procs: list[subprocess.Popen[bytes]] = []
    before_exec = _exit_with_parent()
    try:
        with shutdown.deferred():  # a Ctrl-C inside Popen would lose a started worker
            for gpu in gpus:
                env = dict(base_env) if gpu is None else {**base_env, "CUDA_VISIBLE_DEVICES": gpu}
                procs.append(
                    subprocess.Popen(
                        command,
                        env=env,
                        stdout=subprocess.DEVNULL,
                        start_new_session=True,  # the parent alone receives the terminal's Ctrl-C
                        preexec_fn=before_exec,
                    )
                )
        _watch(session, procs, n_trials=n_trials, progress=progress)
    except BaseException:  # Ctrl-C, or the parent failing: never leave workers behind
        stop_workers(procs)
        raise
    failed = [(i, p.returncode) for i, p in enumerate(procs) if p.returncode != 0]
    for index, code in failed:
        print(f"optuna-rnn: worker {index + 1} of {workers} {how_it_ended(code)}", file=sys.stderr)
    return 1 if failed else 0


def how_it_ended(returncode: int) -> str:
    """A worker's end in words, from its ``returncode`` (negative: the signal that killed it)."""
    if returncode >= 0:
        return f"exited with code {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:  # real-time signals have no name
        name = f"signal {-returncode}"
    return f"was killed by {name}"


def _watch(
    session: StudySession, procs: list[subprocess.Popen[bytes]], *, n_trials: int, progress: bool
) -> None:
    """Show the study's progress until every worker has exited."""
    bar = tqdm(
        total=n_trials,
        initial=min(session.finished(), n_trials),
        desc=f"{session.study.study_name} ({len(procs)} worker{'s' if len(procs) > 1 else ''})",
        unit="trial",
        disable=not progress,
        dynamic_ncols=True,
    )
    try:
        with shutdown.deferred():  # a signal must not cut a storage read in half (see shutdown)
            polled = time.monotonic()
            running = True
            while running:
                time.sleep(0.1)
                shutdown.check()
                running = any(p.poll() is None for p in procs)
                if progress and (time.monotonic() - polled >= 1.0 or not running):  # and once at the end
                    polled = time.monotonic()
                    try:
                        session.show_progress(bar, limit=n_trials)
                    except Exception as exc:  # the bar waits; the workers meet the storage's failure
                        if storage_failure(exc) is None:
                            raise
    finally:
        bar.close()


def stop_workers(procs: list[subprocess.Popen[bytes]], *, grace: float = STOP_GRACE_SECONDS) -> None:
    """SIGTERM every running worker, wait up to ``grace`` seconds, then SIGKILL the rest.

    A killed worker's trial is failed and retried by the next run on this machine
    (:func:`~optuna_rnn.recovery.requeue_orphaned`) or through the heartbeat.
    """
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _exit_with_parent() -> Callable[[], None] | None:
    """What a worker runs before exec (Linux): receive SIGTERM when the parent dies.

    ``prctl`` is looked up here, in the parent: between fork and exec the child must not
    load libraries (a lock held by another of the parent's threads at the fork would never
    be released). A parent that died before the call is noticed by the child's new parent id.
    """
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent, pr_set_pdeathsig = os.getpid(), 1

    def in_child() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM)
        if os.getppid() != parent:
            os._exit(1)

    return in_child
