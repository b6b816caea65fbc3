"""The ``optuna-rnn`` command.

Exit codes: 0 success (also after Ctrl-C or SIGTERM, which close the running
trial as FAIL so that the same command resumes); 2 bad usage or bad input,
with a one-line message and no traceback; 1 anything else (a traceback with
any storage password masked).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shlex
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any, NoReturn

from optuna_rnn.config import PRUNERS, SAMPLERS
from optuna_rnn.errors import MissingModelError, UsageError

DEFAULT_N_TRIALS = 30


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad usage as one line and exit code 2.

    Abbreviated options are refused: ``--datas`` must not pass for ``--dataset`` (a study
    script refuses a different dataset by the option's full name), and a typo should not
    silently mean whichever option it happens to begin.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{**kwargs, "allow_abbrev": False})

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _version() -> str:
    try:
        return version("optuna-rnn")
    except PackageNotFoundError:  # run from a source tree on PYTHONPATH, never installed
        return "(not installed: running from a source tree)"


def build_parser(*, script: str | None = None) -> argparse.ArgumentParser:
    """The command's parser; ``script`` (``studies/<name>.py``) hides the data options it fixes."""
    parser = _Parser(
        prog=f"python {script}" if script else "optuna-rnn",
        description="Tune PyTorch RNN/LSTM/GRU models with Optuna; studies live in a database "
        "that optuna-dashboard shows.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    commands.add_parser("datasets", help="list the built-in datasets")

    run = commands.add_parser(
        "run", help="create or resume a study and run its trials", prog=f"python {script}" if script else None
    )

    def data_help(text: str) -> str:
        return argparse.SUPPRESS if script else text

    # A study script fixes its data (it refuses --dataset and --data; --target and --horizon apply to
    # --data only). Python 3.11's argparse cannot format a usage line with hidden members of a
    # mutually exclusive group.
    source = run if script else run.add_mutually_exclusive_group()
    source.add_argument(
        "--dataset", metavar="NAME", help=data_help("a built-in dataset (see `optuna-rnn datasets`)")
    )
    source.add_argument("--data", metavar="PATH", help=data_help("your own .csv (forecasting) or .npz file"))
    run.add_argument(
        "--target",
        metavar="COL",
        help=data_help("CSV column to forecast (default: the last one that is not the time column)"),
    )
    run.add_argument(
        "--horizon", type=int, metavar="H", help=data_help("forecast this many steps ahead (default 1)")
    )
    run.add_argument("--study", metavar="NAME", help="study name (default: the dataset's name)")
    _storage_arg(run)
    _n_trials_arg(run)
    run.add_argument("--timeout", type=float, metavar="S", help="stop starting trials after S seconds")
    run.add_argument("--sampler", choices=SAMPLERS, help="default tpe")
    run.add_argument("--pruner", choices=PRUNERS, help="default median")
    run.add_argument("--max-epochs", type=int, metavar="E", help="epochs per trial at most (default 30)")
    run.add_argument(
        "--patience", type=int, metavar="P", help="early-stopping patience in epochs (default 10)"
    )
    run.add_argument("--seed", type=int, metavar="S", help="makes a single-worker study repeatable")
    run.add_argument("--space", metavar="FILE", help="TOML file fixing or narrowing parameters")
    run.add_argument("--artifacts", metavar="DIR", help="where trained weights and checkpoints go")
    run.add_argument("--keep-top", type=int, metavar="K", help="keep only the best K trials' weights")
    run.add_argument(
        "--workers", type=int, default=1, metavar="N", help="local worker processes on the study (default 1)"
    )
    _device_arg(run)
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    worker = commands.add_parser(
        "worker", help="join an existing study and run its trials (from any machine)"
    )
    worker.add_argument("--study", required=True, metavar="NAME", help="name of the study to join")
    _storage_arg(worker)
    _n_trials_arg(worker)
    worker.add_argument("--timeout", type=float, metavar="S", help="stop starting trials after S seconds")
    worker.add_argument(
        "--threads",
        type=int,
        metavar="T",
        help="torch threads (default: all cores; share them between workers)",
    )
    _device_arg(worker)
    worker.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    best = commands.add_parser("best", help="print the best trial as JSON")
    best.add_argument("--study", required=True, metavar="NAME", help="study name")
    _storage_arg(best)
    best.add_argument("--export", metavar="PATH", help="also write the best model to PATH")

    dashboard = commands.add_parser("dashboard", help="open the studies in optuna-dashboard")
    _storage_arg(dashboard)
    dashboard.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    dashboard.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks a free one)")
    dashboard.add_argument(
        "--artifacts", metavar="DIR", help="artifact directory to search first (default: beside the database)"
    )

    report = commands.add_parser("report", help="write HTML plots and summary.md of a study")
    report.add_argument("--study", required=True, metavar="NAME", help="study name")
    _storage_arg(report)
    report.add_argument("--out", required=True, metavar="DIR", help="directory to write the report to")
    return parser


def _storage_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--storage",
        metavar="URL",
        help="database URL or journal file (default: $OPTUNA_RNN_STORAGE or sqlite:///optuna-rnn.db)",
    )


def _n_trials_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--n-trials",
        type=int,
        metavar="N",
        help=f"the study's total of finished trials (default: its last run's, else {DEFAULT_N_TRIALS})",
    )
    parser.add_argument(
        "--retry-trial",
        type=int,
        action="append",
        default=[],
        metavar="N",
        help="fail and retry running trial N, whose worker you know is gone (repeatable)",
    )


def retry_chosen(session: Any, numbers: list[int]) -> None:
    """``--retry-trial``: fail and queue again the running trials the user says are dead."""
    if not numbers:
        return
    from optuna.trial import TrialState

    from optuna_rnn import shutdown
    from optuna_rnn.recovery import requeue_chosen, retried_numbers

    session.artifacts()  # the claims go into its checkpoint folder: one that cannot be made says so
    with shutdown.deferred():  # a trial failed but not yet queued again would be lost
        queued = requeue_chosen(session.study, numbers, session.checkpoints_dir, storage=session.storage)
    trials = session.study.get_trials(deepcopy=False)
    states = {t.number: t.state for t in trials}
    retried = retried_numbers(trials)
    for number in dict.fromkeys(numbers):
        if number in queued:
            outcome = "closed as failed and queued again"
        elif number in retried:  # another worker's heartbeat or start-up check was quicker
            outcome = "closed as failed and queued again by another worker"
        elif states[number] == TrialState.FAIL:
            outcome = "closed as failed, not queued again: a worker died under it before (the retry limit)"
        else:
            outcome = "left alone: another worker has taken it up"
        print(f"optuna-rnn: note: trial {number} {outcome}", file=sys.stderr)


def _device_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="where trials train (default auto: a CUDA GPU when there is one)",
    )


def given_config(args: argparse.Namespace) -> dict[str, Any]:
    """The study configuration the user asked for explicitly (see ``merge_config``)."""
    from optuna_rnn.datasets import DatasetSpec
    from optuna_rnn.space import SearchSpace

    given: dict[str, Any] = {}
    if args.dataset is not None or args.data is not None:
        if args.dataset is not None and (args.target is not None or args.horizon is not None):
            raise UsageError(
                "--target and --horizon apply to --data files only, "
                f"not to the built-in dataset {args.dataset!r}"
            )
        path = None if args.data is None else os.path.abspath(args.data)
        given["dataset"] = DatasetSpec(
            name=args.dataset,
            path=path,
            target=args.target,
            horizon=1 if args.horizon is None else args.horizon,
        )
    elif args.target is not None or args.horizon is not None:
        raise UsageError("--target and --horizon need --data")
    if args.space is not None:
        given["space"] = SearchSpace.from_toml(args.space)
    for option in ("sampler", "pruner", "max_epochs", "patience", "seed", "keep_top"):
        if getattr(args, option) is not None:
            given[option] = getattr(args, option)
    if args.artifacts is not None:
        given["artifacts"] = os.path.abspath(args.artifacts)
    return given


def set_threads(workers: int = 1, *, threads: int | None = None) -> int:
    """Give each of ``workers`` processes an equal share of the cores (at least one thread)."""
    import torch

    from optuna_rnn.workers import threads_per_worker

    threads = threads or threads_per_worker(workers)
    torch.set_num_threads(threads)
    return threads


def cmd_datasets(args: argparse.Namespace) -> int:
    import textwrap

    from optuna_rnn.datasets import DATASETS, dataset_table

    rows = dataset_table()
    widths = {k: max(len(k), *(len(r[k]) for r in rows)) for k in rows[0]}
    print("  ".join(k.upper().ljust(w) for k, w in widths.items()))
    for row in rows:
        print("  ".join(row[k].ljust(w) for k, w in widths.items()))
    print()
    for dataset in DATASETS.values():  # how each is split, scaled and cleaned
        print(textwrap.fill(f"{dataset.name}: {dataset.description}", 100, subsequent_indent="  "))
    return 0


def check_device(device: str) -> None:
    """Refuse ``--device cuda`` without a GPU here, before any study or trial is touched."""
    from optuna_rnn.training import resolve_device

    try:
        resolve_device(device)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def check_n_trials(n_trials: int | None) -> None:
    """``--n-trials`` is at least 1 (or absent)."""
    if n_trials is not None and n_trials < 1:
        raise UsageError(f"--n-trials must be >= 1, got {n_trials}")


def check_timeout(timeout: float | None) -> None:
    """``--timeout`` is a positive, finite number of seconds (or absent)."""
    if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
        raise UsageError(f"--timeout must be a positive number of seconds, got {timeout}")


def recovery_settings() -> tuple[int | None, int | None]:
    """The heartbeat's ``(interval, grace)`` for ``run`` and ``worker``, read from the environment.

    The checkpoint interval is read by each trial; it is checked here too, so that a bad value
    stops the command before any study exists.
    """
    from optuna_rnn.recovery import checkpoint_seconds, heartbeat_settings

    heartbeat = heartbeat_settings()
    checkpoint_seconds()
    return heartbeat


def cmd_run(args: argparse.Namespace) -> int:
    from optuna_rnn.study import mask_url, open_session, run_trials, say_if_the_grid_ran_out

    check_n_trials(args.n_trials)
    check_device(args.device)
    check_timeout(args.timeout)
    if args.workers < 1:
        raise UsageError(f"--workers must be >= 1, got {args.workers}")
    refuse_in_memory(args.storage)
    given = given_config(args)
    name = args.study
    if name is None:
        if "dataset" not in given:
            raise UsageError("give --study NAME to resume, or --dataset / --data to start")
        name = given["dataset"].label
    interval, grace = recovery_settings()
    session = open_session(
        name,
        storage=args.storage,
        given=given,
        create="dataset" in given,  # without data it resumes: a misspelt name must not start a study
        heartbeat_interval=interval,
        grace_period=grace,
    )
    n_trials = session.total(args.n_trials, default=DEFAULT_N_TRIALS)
    session.record_total(n_trials)
    retry_chosen(session, args.retry_trial)
    started = time.perf_counter()
    code = 0
    args.session = session  # trials start: an interrupt from here on may leave work to resume
    if args.workers > 1:
        from optuna_rnn.workers import run_workers

        code = run_workers(
            session,
            workers=args.workers,
            n_trials=n_trials,
            device=args.device,
            timeout=args.timeout,
            progress=not args.quiet,
        )
        say_if_the_grid_ran_out(session, n_trials)  # the workers leave it to their parent
    else:
        set_threads(1)
        run_trials(
            session,
            n_trials=n_trials,
            timeout=args.timeout,
            device=args.device,
            progress=not args.quiet,
        )
    _say_if_timed_out(session, args.timeout, time.perf_counter() - started, n_trials)
    _print_summary(session, time.perf_counter() - started)
    url = shlex.quote(mask_url(session.storage_url))  # pasted into a shell as printed
    print(f"\nSee it in optuna-dashboard:  optuna-rnn dashboard --storage {url}")
    print(f"Best model as JSON:          optuna-rnn best --study {shlex.quote(name)} --storage {url}")
    return code


def _say_if_timed_out(session: Any, timeout: float | None, seconds: float, n_trials: int) -> None:
    """Note that ``--timeout`` stopped the run short of the study's total (else it would look done)."""
    from optuna_rnn.workers import SharedTotal

    if timeout is not None and seconds >= timeout and not SharedTotal(n_trials).reached(session.study):
        print(
            f"optuna-rnn: note: --timeout {timeout:g} s passed, so no new trial started: the study holds "
            f"{session.finished()} of its {n_trials} trials; run the same command again to go on",
            file=sys.stderr,
        )


def refuse_in_memory(storage: str | None) -> None:
    """Refuse an in-memory SQLite database: it ends with the process that opened it."""
    from optuna_rnn.study import storage_url

    if re.fullmatch(r"sqlite(\+\w+)?://(/:memory:)?", storage_url(storage)):
        raise UsageError(
            "an in-memory SQLite database ends with the run: nothing could resume it, show it in the "
            "dashboard or share it with workers; give a file such as sqlite:///optuna-rnn.db"
        )


def cmd_worker(args: argparse.Namespace) -> int:
    from optuna_rnn.study import open_session, run_trials
    from optuna_rnn.workers import diversify_sampler, local_peers

    check_n_trials(args.n_trials)
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {args.threads}")
    check_device(args.device)
    check_timeout(args.timeout)
    refuse_in_memory(args.storage)
    interval, grace = recovery_settings()
    session = open_session(args.study, storage=args.storage, heartbeat_interval=interval, grace_period=grace)
    threads = set_threads(1, threads=args.threads)
    peers = local_peers(session.study) if args.threads is None else 0
    if peers:
        print(
            f"optuna-rnn: note: {peers} other worker(s) of this study run on this machine and this one "
            f"takes all {threads} cores; give each of the {peers + 1} --threads "
            f"{max(1, threads // (peers + 1))} so that they do not slow each other down",
            file=sys.stderr,
        )
    diversify_sampler(session.study, session.config.sampler)
    retry_chosen(session, args.retry_trial)
    n_trials = session.total(args.n_trials, default=DEFAULT_N_TRIALS)
    session.record_total(n_trials)  # a later `run --study` or `worker` without --n-trials finishes it
    started = time.perf_counter()
    args.session = session
    run_trials(session, n_trials=n_trials, timeout=args.timeout, device=args.device, progress=not args.quiet)
    _say_if_timed_out(session, args.timeout, time.perf_counter() - started, n_trials)
    print(
        f"Worker done: study {args.study!r} holds {session.finished()} finished trials "
        f"(this worker: {time.perf_counter() - started:.1f} s)"
    )
    return 0


def _print_summary(session: Any, seconds: float) -> None:
    from optuna.trial import TrialState

    from optuna_rnn.dashboard import baseline_text
    from optuna_rnn.recovery import retried_numbers
    from optuna_rnn.training import metric_for
    from optuna_rnn.workers import state_counts

    trials = session.study.get_trials(deepcopy=False)
    count = state_counts(trials)
    running = f", {count[TrialState.RUNNING]} running" if count[TrialState.RUNNING] else ""
    # an interrupted trial or a dead worker's is failed and then retried under a new number
    retried = retried_numbers(trials)
    again = sum(t.state == TrialState.FAIL and t.number in retried for t in trials)
    print(
        f"Study {session.study.study_name!r}: {count[TrialState.COMPLETE]} complete, "
        f"{count[TrialState.PRUNED]} pruned, {count[TrialState.FAIL]} failed"
        f"{f' ({again} of them retried)' if again else ''}{running} (this run: {seconds:.1f} s)"
    )
    best = session.best_trial()
    if best is None:
        print("No trial has completed yet.")
        return
    test = _best_test_or_none(session)
    metric = metric_for(session.task).name
    test_text = f", test {test['test_value']:.4g}" if test else ""
    print(f"Best trial #{best.number}: validation {metric} {best.value:.4g}{test_text}")
    if session.baseline is not None:
        print(baseline_text(session.baseline))
    for key, value in best.params.items():
        shown = f"{value:.4g}" if isinstance(value, float) else value
        print(f"  {key:<16} {shown}")


def cmd_best(args: argparse.Namespace) -> int:
    import torch

    from optuna_rnn.artifacts import artifact_store, download_model_payload
    from optuna_rnn.space import Hyperparams
    from optuna_rnn.study import open_session
    from optuna_rnn.training import metric_for

    if args.export and os.path.isdir(args.export):
        raise UsageError(f"--export {args.export}: is a folder; give a file name, such as best.pt inside it")
    session = open_session(args.study, storage=args.storage, read_only=True)
    best = session.best_trial()
    if best is None:
        raise MissingModelError(f"study {args.study!r} has no complete trial yet")
    try:
        payload: dict[str, Any] | None = download_model_payload(
            artifact_store(session.artifacts_dir, create=False), best
        )
    except MissingModelError as exc:  # its file is gone (or it ran without artifacts)
        if args.export:
            raise MissingModelError(f"--export {args.export}: {exc}") from None
        print(f"optuna-rnn: warning: {exc}", file=sys.stderr)
        payload = None
    test = _best_test_or_none(session, say_missing=False)  # the missing model was reported above
    if payload is not None:  # exactly what the model trained with
        hp = Hyperparams(**payload["hyperparams"])
    else:
        try:  # the space as the trials sampled it, with windows fitted to the data...
            hp = session.space.hyperparams_from(best.params, task=session.task)
        except UsageError:  # ...which may be gone too: a searched window is among the params
            hp = session.config.space.hyperparams_from(best.params, task=session.task)
    result = {
        "study": args.study,
        "trial_number": best.number,
        "metric": metric_for(session.task).name,
        "validation_value": _finite_or_none(best.value),
        "test_metric": _finite_or_none(test["test_value"]) if test else None,
        "baseline": session.baseline,
        "params": best.params,
        "hyperparams": hp.to_dict(),
    }
    if args.export and payload is not None:
        try:
            torch.save(payload, args.export)
        except (OSError, RuntimeError) as exc:  # torch reports a missing folder as a RuntimeError
            raise UsageError(f"--export {args.export}: cannot write the model ({exc})") from None
        result["exported"] = os.path.abspath(args.export)
    print(json.dumps(result, indent=2, allow_nan=False))
    return 0


def _best_test_or_none(session: Any, *, say_missing: bool = True) -> dict[str, Any] | None:
    """The best trial's test record (recorded, or computed from its model), or ``None`` when it cannot be.

    Why there is none goes to stderr; ``say_missing=False`` leaves out a missing model file,
    for a caller that has said so already.
    """
    try:
        return session.best_test()
    except (MissingModelError, UsageError) as exc:  # the model gone; or not recorded, and no data here
        if say_missing or not isinstance(exc, MissingModelError):
            print(f"optuna-rnn: warning: no test metric: {exc}", file=sys.stderr)
        return None


def _finite_or_none(value: float | None) -> float | None:
    """JSON has no NaN or infinity: a diverged value is ``null``."""
    return value if value is not None and math.isfinite(value) else None


def cmd_dashboard(args: argparse.Namespace) -> int:
    from optuna_rnn.dashboard import serve
    from optuna_rnn.study import default_artifacts_dir, mask_url, open_storage, storage_url

    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be in [0, 65535], got {args.port}")
    refuse_in_memory(args.storage)
    url = storage_url(args.storage)
    storage = open_storage(url, must_exist=True, for_reading=True)  # never creates an empty database
    if args.artifacts and not os.path.isdir(args.artifacts):  # a typo would show only as missing models
        raise UsageError(f"--artifacts {args.artifacts}: no such folder")
    artifacts = os.path.abspath(args.artifacts) if args.artifacts else default_artifacts_dir(url)

    def ready(address: str) -> None:
        print(f"optuna-dashboard for {mask_url(url)} at {address}  (Ctrl-C to stop)", flush=True)

    try:
        serve(storage, artifacts=artifacts, storage_url=url, host=args.host, port=args.port, on_ready=ready)
    except KeyboardInterrupt:
        print("optuna-dashboard stopped.", flush=True)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from optuna_rnn.report import write_report
    from optuna_rnn.study import open_session

    session = open_session(args.study, storage=args.storage, read_only=True)
    test = _best_test_or_none(session)
    try:
        written = write_report(session.study, args.out, best_test=test)
    except OSError as exc:
        raise UsageError(f"--out {args.out}: cannot write the report there ({exc.strerror or exc})") from None
    for path in written:
        print(path)
    return 0


COMMANDS = {
    "datasets": cmd_datasets,
    "run": cmd_run,
    "worker": cmd_worker,
    "best": cmd_best,
    "dashboard": cmd_dashboard,
    "report": cmd_report,
}


def _closed_on_interrupt(args: argparse.Namespace) -> bool:
    """Whether the interrupt closed a running trial: this process's, or with ``--workers``, any of
    the study's not yet queued again (the workers closed them)."""
    from optuna_rnn.recovery import INTERRUPTED, interrupted_here, retried_numbers

    if interrupted_here():
        return True
    if (getattr(args, "workers", None) or 1) == 1:
        return False
    try:
        trials = args.session.study.get_trials(deepcopy=False)
    except Exception:  # the storage may be what failed: say what the workers most likely did
        return True
    retried = retried_numbers(trials)
    return any(t.user_attrs.get("stop_reason") == INTERRUPTED and t.number not in retried for t in trials)


def main(argv: Sequence[str] | None = None, *, script: str | None = None) -> int:
    """Entry point of the ``optuna-rnn`` console script; returns the exit code.

    ``script`` names the study script (``studies/<name>.py``) that runs it, for its messages.
    """
    parser = build_parser(script=script)
    if script is None and not list(sys.argv[1:] if argv is None else argv):  # a bare `optuna-rnn`
        parser.print_help(sys.stderr)
        return 2
    args = parser.parse_args(argv)
    # `--storage "$DB"` with DB unset must not quietly mean the default database (nor "" a folder)
    empty = [
        name
        for name, value in vars(args).items()
        if isinstance(value, str) and not value.strip() and name != "host"
    ]
    if empty:
        parser.error(f"--{empty[0].replace('_', '-')} must not be empty")
    import optuna

    from optuna_rnn import shutdown

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with shutdown.installed(), _storage_failures_in_threads_in_one_line():
            return _run_command(args)
    finally:  # as it was, for a caller in the same process (a notebook, a test)
        optuna.logging.set_verbosity(verbosity)


@contextlib.contextmanager
def _storage_failures_in_threads_in_one_line() -> Iterator[None]:
    """A thread that meets a lost storage (Optuna's heartbeat) says so in one line, not a traceback.

    The heartbeat thread has no retry: after one failed write it is gone, the trial trains on,
    and other workers will take it for dead once the grace period has passed; so it is a warning.
    """
    from optuna_rnn.errors import first_line, storage_failure

    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        lost = storage_failure(args.exc_value) if args.exc_value is not None else None
        if lost is None:
            previous(args)
            return
        reason = first_line(lost)
        name = args.thread.name if args.thread is not None else "a thread"
        print(
            f"optuna-rnn: warning: {name} lost the storage ({reason}); with a heartbeat, other "
            "workers may take this worker's trial for dead",
            file=sys.stderr,
        )

    threading.excepthook = hook
    try:
        yield
    finally:  # as it was, for a caller in the same process (a notebook, a test)
        threading.excepthook = previous


def _run_command(args: argparse.Namespace) -> int:
    """Run the parsed command; errors become a message on stderr and an exit code."""
    try:
        code = COMMANDS[args.command](args)
        sys.stdout.flush()  # inside the try: a closed pipe must surface here, not at exit
        return code
    except UsageError as exc:
        print(f"optuna-rnn: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        from optuna_rnn.workers import LOCAL_WORKER_ENV

        if args.command not in ("run", "worker"):  # a report or export cut short is no success
            print("\noptuna-rnn: interrupted", file=sys.stderr)
            return 130
        if os.environ.get(LOCAL_WORKER_ENV):  # `run --workers N` says it once for all
            return 0
        if getattr(args, "session", None) is None:  # loading the data, opening the study
            print("\noptuna-rnn: interrupted before any trial started; nothing to resume", file=sys.stderr)
        elif _closed_on_interrupt(args):
            closed = "trials were" if (getattr(args, "workers", None) or 1) > 1 else "trial was"
            print(
                f"\noptuna-rnn: interrupted; the running {closed} closed as FAIL. "
                "Run the same command again to resume.",
                file=sys.stderr,
            )
        else:  # between trials, or wrapping up
            print(
                "\noptuna-rnn: interrupted; no trial was running. Run the same command again to go on.",
                file=sys.stderr,
            )
        return 0
    except MissingModelError as exc:
        print(f"optuna-rnn: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # the reader went away (`optuna-rnn datasets | head -1`): say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as exc:
        from optuna_rnn.errors import first_line, storage_failure
        from optuna_rnn.study import mask_secrets, mask_url, storage_url

        url = storage_url(getattr(args, "storage", None))
        lost = storage_failure(exc)
        if lost is not None:  # not a bug to show a traceback for: the database went away
            reason = first_line(lost)
            print(
                mask_secrets(
                    f"optuna-rnn: error: the storage {mask_url(url)} failed ({reason}); once it is back, "
                    "run the command again: a trial it could not close resumes from its checkpoint",
                    url,
                ),
                file=sys.stderr,
            )
            return 1
        print(mask_secrets(traceback.format_exc(), url), file=sys.stderr, end="")
        return 1


def study_script(dataset: str, argv: Sequence[str] | None = None) -> int:
    """Entry point of ``studies/<dataset>.py``: ``optuna-rnn run --dataset <dataset>`` plus ``argv``."""
    args = list(sys.argv[1:] if argv is None else argv)
    script = f"studies/{dataset}.py"
    if any(a.split("=")[0] in ("--dataset", "--data") for a in args):
        print(
            f"{script}: error: this script tunes on {dataset!r}; for other data use optuna-rnn run",
            file=sys.stderr,
        )
        return 2
    if "--version" in args:
        return main(["--version"])
    if "-h" in args or "--help" in args:
        print(f"{script} runs `optuna-rnn run --dataset {dataset}` with these options.\n")
        with contextlib.suppress(SystemExit):
            build_parser(script=script).parse_args(["run", "--help"])
        return 0
    return main(["run", "--dataset", dataset, *args], script=script)


def console() -> None:
    """The ``optuna-rnn`` console script: :func:`main`, then exit with its code.

    Once the command's work is done, SIGINT and SIGTERM are ignored: Python restores their
    default handlers while the interpreter shuts down (a second or so with torch loaded),
    and a stop arriving then would turn a finished run's exit 0 into death by signal.
    """
    code = main()
    from optuna_rnn.shutdown import SIGNALS

    for signum in SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    sys.exit(code)


if __name__ == "__main__":
    console()
