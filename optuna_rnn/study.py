"""Storages, samplers and pruners; creating, resuming and running a study.

Storage URLs: ``sqlite:///file.db`` (the default, ``sqlite:///optuna-rnn.db``,
overridden by ``$OPTUNA_RNN_STORAGE`` and then by ``--storage``),
``postgresql://...`` and ``mysql+pymysql://...`` (RDB, with pre-ping),
``redis://...`` (Optuna's journal on Redis) and a plain file path ending in
``.log``, ``.journal`` or ``.jsonl`` (Optuna's journal file). Passwords are masked in every
message.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import json
import os
import re
import sqlite3
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
import sqlalchemy
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState
from tqdm.auto import tqdm

from optuna_rnn import shutdown
from optuna_rnn.artifacts import artifact_store, download_model_payload, model_from_payload, ranked_complete
from optuna_rnn.config import CONFIG_ATTR, StudyConfig, merge_config
from optuna_rnn.data import Dataset, fit_space
from optuna_rnn.datasets import DatasetSpec
from optuna_rnn.errors import UsageError, first_line
from optuna_rnn.objective import Objective
from optuna_rnn.recovery import (
    INTERRUPTED,
    WORKER_ID_ATTR,
    RetryDeadWorker,
    checkpoints_dir,
    drop_leftovers,
    heartbeat_conflicts,
    requeue_interrupted,
    requeue_orphaned,
    retried_numbers,
    storage_heartbeat,
    tidy_checkpoints,
)
from optuna_rnn.space import Hyperparams, SearchSpace, Task
from optuna_rnn.training import Trainer, metric_for
from optuna_rnn.workers import LOCAL_WORKER_ENV, SharedTotal, SurplusTrial, TrialGuard

if TYPE_CHECKING:
    from optuna_rnn.dashboard import StudyDashboard

DEFAULT_STORAGE = "sqlite:///optuna-rnn.db"
STORAGE_ENV = "OPTUNA_RNN_STORAGE"
ARTIFACTS_DIRNAME = "optuna-rnn-artifacts"
DATA_ATTR = "optuna_rnn.data"
BEST_TEST_ATTR = "optuna_rnn.best_test"
TOTAL_ATTR = "optuna_rnn.n_trials"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
JOURNAL_SUFFIXES = (".log", ".journal", ".jsonl")
SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")  # only to suggest the sqlite:/// URL for a bare path


# --- storage --------------------------------------------------------------------------


def storage_url(url: str | None = None) -> str:
    """``url`` if given, else ``$OPTUNA_RNN_STORAGE``, else ``sqlite:///optuna-rnn.db``.

    A variable set to nothing is refused: ``OPTUNA_RNN_STORAGE=$DB`` with ``DB`` unset must not
    quietly mean the default database, as ``--storage ""`` does not.
    """
    if url:
        return url
    from_env = os.environ.get(STORAGE_ENV)
    if from_env is not None and not from_env.strip():
        raise UsageError(f"${STORAGE_ENV} is set but empty; unset it for the default {DEFAULT_STORAGE}")
    return from_env or DEFAULT_STORAGE


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (SQLAlchemy lets a password hold ``/``)."""
    return re.sub(r"(://[^:/@\s]*:)[^@\s?#]*@", r"\1***@", url)


def mask_secrets(text: str, url: str | None = None) -> str:
    """``text`` with the passwords of any URLs in it, and ``url``'s password anywhere, as ``***``.

    Drivers quote URLs, but some also echo the bare password; both are masked.
    """
    masked = mask_url(text)
    match = re.search(r"://[^:/@\s]*:([^@\s?#]+)@", url or "")
    if match:
        from urllib.parse import unquote

        for secret in {match.group(1), unquote(match.group(1))}:
            if len(secret) >= 3:
                masked = masked.replace(secret, "***")
    return masked


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL, or ``None`` for other storages."""
    if not re.match(r"sqlite(\+pysqlite)?:///", url):  # the standard library's driver, named or not
        return None
    return Path(sqlalchemy.engine.make_url(url).database or "")  # decoded, as SQLAlchemy opens it: %20 is ' '


def _check_journal(path: Path, masked: str) -> None:
    """Refuse an existing file that is not an Optuna journal: a study opened on it would append
    Optuna's records to someone's notes before failing to read them."""
    try:
        with path.open("rb") as file:
            first = next((line for line in file if line.strip()), b"")
    except OSError:
        return  # missing (a new journal) or unreadable: opening it says why
    try:
        record = json.loads(first) if first else {}
    except ValueError:  # not JSON, or not UTF-8
        record = None
    if not isinstance(record, dict) or (first and "op_code" not in record):
        raise UsageError(f"storage {masked} is not an Optuna journal file; give a new file name")


def storage_file(url: str) -> Path | None:
    """The file a SQLite URL or journal path stores the study in, or ``None`` for a server."""
    return sqlite_path(url) or (Path(url) if is_journal_path(url) else None)


def is_journal_path(url: str) -> bool:
    return "://" not in url and url.endswith(JOURNAL_SUFFIXES)


# A bare scheme means SQLAlchemy's default driver, which may not be the one installed
# (SQLAlchemy 2.1 picks psycopg 3 for postgresql://, MySQLdb for mysql://).
_DRIVERS = {
    "postgresql": (("psycopg", "psycopg"), ("psycopg2", "psycopg2")),
    "postgres": (("psycopg", "psycopg"), ("psycopg2", "psycopg2")),
    "mysql": (("mysqldb", "MySQLdb"), ("pymysql", "pymysql")),
}


def with_installed_driver(url: str) -> str:
    """``url`` with an explicit driver (``postgresql+psycopg2://``) when its scheme names none.

    The first installed of the usual drivers is chosen; a URL that names its
    driver is returned unchanged.
    """
    import importlib.util

    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in _DRIVERS:
        return url
    for driver, module in _DRIVERS[scheme]:
        if importlib.util.find_spec(module) is not None:
            dialect = "postgresql" if scheme == "postgres" else scheme
            return f"{dialect}+{driver}://{rest}"
    return url


def open_storage(
    url: str,
    *,
    must_exist: bool = False,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    for_reading: bool = False,
) -> BaseStorage:
    """Open the storage at ``url``; a connection problem raises :class:`UsageError`.

    ``must_exist`` refuses to create a new SQLite or journal file (for commands
    that only read). RDB storages get a heartbeat when ``heartbeat_interval``
    is set: a trial whose worker died is failed and retried once, inheriting
    its intermediate values. SQLite transactions take the write lock as they
    begin (see :func:`_begin_immediate`) unless ``for_reading`` says this process
    only reads (dashboard, ``best``, ``report``): readers then never wait on workers.
    """
    masked = mask_url(url)
    file = _refuse_bad_url(url, must_exist=must_exist)
    if must_exist and sqlite_path(url) is not None and not _holds_optuna_tables(str(file)):
        # a reader must not add Optuna's tables to some other database
        raise UsageError(f"storage {masked} is not an Optuna database")
    try:
        if url.startswith("redis://") or url.startswith("rediss://"):
            from optuna.storages.journal import JournalRedisBackend, JournalStorage

            with warnings.catch_warnings():  # "experimental" in Optuna 5
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                storage: BaseStorage = JournalStorage(JournalRedisBackend(url))
            storage.get_all_studies()
            return storage
        if is_journal_path(url):
            from optuna.storages.journal import JournalFileBackend, JournalStorage

            _check_journal(Path(url), masked)

            return JournalStorage(JournalFileBackend(url))
        if "://" not in url:
            file_name = url.split(":", 1)[1] if url.lower().startswith("sqlite:") else url
            if Path(file_name).parent == Path("/"):  # sqlite:/x.db: a slash short of a relative path
                file_name = file_name.lstrip("/")
            hint = f"; for a SQLite file write sqlite:///{file_name}" if url.endswith(SQLITE_SUFFIXES) else ""
            raise UsageError(
                f"storage {masked!r} is neither a database URL nor a journal file (.log, .journal or .jsonl)"
                + hint
            )
        engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
        if file is not None:
            engine_kwargs["creator"] = functools.partial(_connect_sqlite, str(file))
        elif url.startswith("sqlite"):
            engine_kwargs["connect_args"] = {"timeout": 60}
        from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

        attempt = 0
        while True:
            try:
                with warnings.catch_warnings():  # heartbeat arguments are "experimental" in Optuna 5
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    rdb = optuna.storages.RDBStorage(
                        with_installed_driver(url),
                        engine_kwargs=engine_kwargs,
                        heartbeat_interval=heartbeat_interval,
                        grace_period=grace_period if heartbeat_interval is not None else None,
                        heartbeat_stale_trial_callback=RetryDeadWorker() if heartbeat_interval else None,
                    )
                if file is not None and not for_reading and os.access(file, os.W_OK):
                    sqlalchemy.event.listen(rdb.engine, "begin", _begin_immediate)
                return rdb
            except (IntegrityError, ProgrammingError, OperationalError) as exc:
                # Another process is creating the same new schema; once it is done, ours opens it.
                # SQLite says so with an OperationalError, which otherwise means "cannot connect":
                # "already exists", or "database is locked" when our read-then-create transaction
                # met the other's write (a conflict SQLite reports at once, without its busy wait).
                attempt += 1
                racing = ("already exists", "database is locked")
                if attempt == 10 or (
                    isinstance(exc, OperationalError) and not any(m in str(exc) for m in racing)
                ):
                    raise
                time.sleep(0.2 * attempt)
    except UsageError:
        raise
    except Exception as exc:  # drivers raise many types; all mean "cannot open"
        reason = mask_secrets(first_line(exc), url)
        raise UsageError(f"cannot open storage {masked}: {reason}") from None


def _connect_sqlite(path: str) -> sqlite3.Connection:
    """A SQLite connection in write-ahead-log mode, waiting up to a minute for locks.

    WAL with ``synchronous=NORMAL`` makes each commit a log append instead of
    several fsyncs (Optuna commits every parameter, report and user attr), and
    lets readers such as optuna-dashboard read while a worker writes. Like any
    SQLite file, it belongs on a local disk, not a network file system.
    """
    connection = sqlite3.connect(path, timeout=60, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    return connection


def _holds_optuna_tables(path: str) -> bool:
    """Whether the existing SQLite file at ``path`` has Optuna's ``studies`` table."""
    try:
        with contextlib.closing(sqlite3.connect(path)) as connection:
            found = connection.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='studies'")
            return found.fetchone() is not None
    except sqlite3.Error:  # not a database at all
        return False


def _begin_immediate(connection: sqlalchemy.engine.Connection) -> None:
    """Start each SQLite transaction holding the write lock (``BEGIN IMMEDIATE``).

    Optuna moves a queued trial to RUNNING by reading its state and then updating it,
    relying on ``SELECT ... FOR UPDATE``, which SQLite ignores: two workers that asked at
    the same moment both read WAITING and both ran the trial (a retry of an interrupted
    trial, or an enqueued one), and the slower one crashed with "Cannot tell a COMPLETE
    trial" (optuna/optuna#4002). Taking the lock at the start makes that read and write
    one step. Every transaction of a worker takes it, reads too, so workers' reads wait
    for each other's writes (the workers benchmark shows no loss of throughput); readers
    that open the file without it (optuna-dashboard, and this package's dashboard,
    ``best`` and ``report``) read a WAL snapshot and wait for no one.
    """
    dbapi = connection.connection.dbapi_connection
    if dbapi is not None and not dbapi.in_transaction:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def artifacts_folder(recorded: str | None, url: str) -> str:
    """Where a study's models are: the folder it recorded, else the default beside its storage file.

    A study made before the default was left unrecorded holds the default's absolute path: when
    that folder is gone and one sits beside the storage file, the project moved with it.
    """
    default = default_artifacts_dir(url)
    if recorded is None:
        return default
    moved = Path(recorded).name == ARTIFACTS_DIRNAME and not os.path.isdir(recorded)
    if moved and storage_file(url) is not None and os.path.isdir(default):
        return default
    return recorded


def default_artifacts_dir(url: str) -> str:
    """``optuna-rnn-artifacts/`` beside a SQLite or journal file, else in the working directory."""
    file = storage_file(url)
    base = file.resolve().parent if file is not None else Path.cwd()
    return str(base / ARTIFACTS_DIRNAME)


# --- samplers and pruners -------------------------------------------------------------


def make_sampler(config: StudyConfig, *, dataset: Dataset) -> optuna.samplers.BaseSampler:
    """The sampler named in ``config``, seeded with ``config.seed``, for ``config.space`` on ``dataset``.

    TPE is multivariate with grouping (it understands the conditional
    parameters) and uses the constant liar, so parallel workers do not sample
    the same point. It keeps Optuna's 10 random start-up trials: with 5, the
    search-quality benchmark's default needed more of the budget to reach
    random search's best on two of four datasets, as much on a third and a
    little less on the fourth.
    """
    seed, name = config.seed, config.sampler
    if name == "tpe":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, warn_independent_sampling=False)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        grid = fit_space(config.space, dataset).grid(task=dataset.task)  # only windows the data can serve
        return optuna.samplers.GridSampler(grid, seed=seed)
    if name == "qmc":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.QMCSampler(seed=seed, warn_independent_sampling=False)
    raise UsageError(f"unknown sampler {name!r}")


def make_pruner(name: str, *, max_epochs: int) -> optuna.pruners.BasePruner:
    """The pruner named ``name``; epochs are its steps.

    The median pruner (the default) judges a trial from its first epoch on, once 2 trials have
    completed. Under an equal epoch budget, on one machine and the same seeds, TPE with it found
    random search's best with 36-39% of the budget on all four benchmark datasets, where Optuna's
    usual 5 start-up trials with ``n_warmup_steps=3`` (judged from epoch 3) needed 50-58% and ended
    with worse validation forecasts (``benchmarks/RESULTS.md``, "Choosing the default pruner").
    """
    warmup = min(3, max(0, max_epochs - 1))
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=min(1, max(0, max_epochs - 1)))
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_epochs)
    if name == "successive-halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1)
    if name == "percentile":
        return optuna.pruners.PercentilePruner(25.0, n_startup_trials=5, n_warmup_steps=warmup)
    if name == "patient":
        inner = optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=warmup)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.pruners.PatientPruner(inner, patience=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise UsageError(f"unknown pruner {name!r}")


# --- studies --------------------------------------------------------------------------


def recorded_config(storage: BaseStorage, study_name: str) -> dict[str, Any] | None:
    """The configuration recorded on ``study_name``, or ``None`` when it does not exist."""
    try:
        study_id = storage.get_study_id_from_name(study_name)
    except KeyError:
        return None
    raw = storage.get_study_user_attrs(study_id).get(CONFIG_ATTR)
    if raw is None:
        raise UnconfiguredStudy(f"study {study_name!r} exists but was not created by optuna-rnn")
    return json.loads(raw) if isinstance(raw, str) else dict(raw)


class UnconfiguredStudy(UsageError):
    """The study exists but records no optuna-rnn configuration."""


def settled_config(storage: BaseStorage, study_name: str, *, wait: float = 5.0) -> dict[str, Any] | None:
    """The configuration recorded on ``study_name``, or ``None`` for a study this run may create.

    A study that exists without a configuration may have been created a moment ago by
    another run, about to record its own: wait for it. ``None`` then means there is no study,
    or nobody recorded one within ``wait`` seconds and the study holds no trial (a run
    stopped while creating it): this run may adopt it. A study with trials and no
    configuration was not made by optuna-rnn.
    """
    deadline = time.monotonic() + wait
    while True:
        try:
            return recorded_config(storage, study_name)
        except UnconfiguredStudy:
            if time.monotonic() >= deadline:
                study_id = storage.get_study_id_from_name(study_name)
                if storage.get_all_trials(study_id, deepcopy=False):
                    raise
                return None
        time.sleep(0.2)


class StudySession:
    """A study opened from its storage with everything needed to run, report or load it."""

    def __init__(
        self,
        study: optuna.Study,
        config: StudyConfig,
        storage_url: str,
        *,
        storage: optuna.storages.BaseStorage,
        dataset: Dataset | None = None,
    ) -> None:
        self.study = study
        self.config = config
        self.storage_url = storage_url
        self.storage = storage  # the study's, as open_storage opened it
        self._dataset = dataset

    @property
    def dataset(self) -> Dataset:
        if self._dataset is None:
            self._dataset = self.config.dataset.load()
        return self._dataset

    @property
    def artifacts_dir(self) -> str:
        """Where the study's models and checkpoints go (see :func:`artifacts_folder`)."""
        return artifacts_folder(self.config.artifacts, self.storage_url)

    @property
    def checkpoints_dir(self) -> Path:
        """Where this study's per-epoch checkpoints go (see :mod:`optuna_rnn.recovery`)."""
        return checkpoints_dir(self.artifacts_dir, self.study.study_name)

    @property
    def task(self) -> Task:
        """``classification`` or ``forecasting``, from the study's record (no need to load the data)."""
        recorded = (self.study.user_attrs.get(DATA_ATTR) or {}).get("task")
        if recorded == "classification" or recorded == "forecasting":
            return recorded
        return self.dataset.task

    def show_progress(self, bar: tqdm, *, limit: int) -> None:
        """Set ``bar`` to the study's finished trials (every worker's, up to ``limit``), with the
        best value and the number pruned."""
        done = self.study.get_trials(deepcopy=False, states=FINISHED)
        best = self.best_trial()
        bar.update(min(len(done), limit) - bar.n)
        bar.set_postfix(
            best=f"{best.value if best is not None else metric_for(self.task).worst:.4g}",
            pruned=sum(t.state == TrialState.PRUNED for t in done),
        )

    @property
    def baseline(self) -> dict[str, Any] | None:
        """The naive baseline recorded with the study's data (the majority class, or persistence).

        ``{"name": ..., "valid": score, "test": score}`` in the study's metric; ``None`` for a
        study created before baselines were recorded.
        """
        recorded = (self.study.user_attrs.get(DATA_ATTR) or {}).get("baseline")
        return recorded if isinstance(recorded, dict) else None

    @property
    def space(self) -> SearchSpace:
        """The recorded search space as its trials sample it: windows narrowed to fit the data."""
        if self.task != "forecasting":
            return self.config.space  # nothing to fit: no need to load the data
        return fit_space(self.config.space, self.dataset)

    def grid_left(self) -> int | None:
        """Distinct configurations of a grid study that no trial has run (``None`` for other samplers).

        Trials that sampled nothing (refused as surplus) do not count. A failed trial's does, as
        Optuna's grid sampler counts it visited (an interrupted one is queued again under a new
        number, with its configuration).
        """
        if self.config.sampler != "grid":
            return None
        size = self.space.gridded(task=self.task).grid_size(task=self.task)
        trials = self.study.get_trials(deepcopy=False)
        retried = retried_numbers(trials)
        ran = [
            t
            for t in trials
            if t.state in (*FINISHED, TrialState.RUNNING)
            or (  # a failure, not one that runs again (an interrupt, a dead worker's trial)
                t.state == TrialState.FAIL
                and t.number not in retried
                and t.user_attrs.get("stop_reason") != INTERRUPTED
            )
        ]
        return size - len({tuple(sorted(t.params.items())) for t in ran if t.params})

    def objective(self, *, device: str = "auto") -> Objective:
        return Objective(
            self.dataset,
            space=self.space,
            max_epochs=self.config.max_epochs,
            patience=self.config.patience,
            device=device,
            seed=self.config.seed,
            artifacts=self.artifacts(),
            checkpoints=self.checkpoints_dir,
        )

    def artifacts(self) -> optuna.artifacts.FileSystemArtifactStore:
        """The study's artifact store, its folder created if missing; one that cannot be is a
        :class:`UsageError` that says which."""
        try:
            return artifact_store(self.artifacts_dir)
        except OSError as exc:  # e.g. a database copied from another machine records its folder
            raise UsageError(
                f"study {self.study.study_name!r} saves its models in {self.artifacts_dir}, which cannot "
                f"be created here ({exc.strerror}); create that folder or link it to the study's models"
            ) from None

    def total(self, n_trials: int | None, *, default: int) -> int:
        """``n_trials`` if given, else the total the study's last ``run`` aimed at, else ``default``.

        So that ``worker --study NAME`` and ``run --study NAME`` without ``--n-trials``
        finish the job the run started, rather than stop at a default of their own.
        """
        if n_trials is not None:
            return n_trials
        recorded = self.study.user_attrs.get(TOTAL_ATTR)
        return recorded if isinstance(recorded, int) and recorded >= 1 else default

    def record_total(self, n_trials: int) -> None:
        """Remember ``n_trials`` as the study's total, for workers that join without one."""
        if self.study.user_attrs.get(TOTAL_ATTR) != n_trials:
            self.study.set_user_attr(TOTAL_ATTR, n_trials)

    def finished(self) -> int:
        """COMPLETE plus PRUNED trials: what ``--n-trials`` counts."""
        return len(self.study.get_trials(deepcopy=False, states=FINISHED))

    def best_trial(self) -> FrozenTrial | None:
        """The best COMPLETE trial, the earliest among ties, as ``--keep-top`` and the dashboard rank.

        Not ``Study.best_trial``: on PostgreSQL and MySQL its ``ORDER BY value LIMIT 1``
        leaves ties in no fixed order, and the trial it picks might be one whose model
        ``--keep-top`` removed.
        """
        ranked = ranked_complete(self.study)
        return ranked[0] if ranked else None

    def test_value(self, trial: FrozenTrial) -> float:
        """The test metric of ``trial``'s saved weights (the test split is never used to select)."""
        payload = download_model_payload(artifact_store(self.artifacts_dir, create=False), trial)
        _check_same_data(self.study, self.dataset)  # a test split cut from other data would not compare
        model = model_from_payload(payload)
        hp = Hyperparams(**payload["hyperparams"])
        return Trainer(device="cpu").evaluate(
            model, self.dataset.windowed(hp.window, forecast=hp.forecast), "test"
        )

    def best_test(self) -> dict[str, Any] | None:
        """The best trial's test metric, computed once from its saved weights and recorded."""
        best = self.best_trial()
        if best is None:
            return None
        recorded = self.study.user_attrs.get(BEST_TEST_ATTR)
        if isinstance(recorded, dict) and recorded.get("trial") == best.number:
            return recorded
        record = {
            "trial": best.number,
            "metric": metric_for(self.dataset.task).name,
            "test_value": self.test_value(best),
            "validation_value": best.value,
        }
        unwritable = (optuna.exceptions.StorageInternalError, sqlalchemy.exc.SQLAlchemyError, OSError)
        with contextlib.suppress(*unwritable):  # a read-only storage: the metric stands, computed next time
            self.study.set_user_attr(BEST_TEST_ATTR, record)
        return record


def _refuse_bad_url(url: str, *, must_exist: bool) -> Path | None:
    """What can be refused in a storage URL before opening it; returns its file, if it has one."""
    masked = mask_url(url)
    if url.startswith("sqlite") and "?" in url:  # it would become part of the file's name
        raise UsageError(
            f"storage {masked}: SQLite URLs take no options; optuna-rnn sets a 60 s busy timeout itself"
        )
    file = storage_file(url)
    if file is not None:
        _check_file(file, masked, must_exist=must_exist)
    return file


def _check_file(file: Path, masked: str, *, must_exist: bool) -> None:
    """Refuse a storage file that is missing (for readers) or whose folder is."""
    try:
        if must_exist and not file.exists():
            raise UsageError(f"storage {masked} does not exist")
        if not file.parent.is_dir():
            home = "; '~' is not expanded in storage URLs" if "~" in file.parts[0] else ""
            raise UsageError(f"storage {masked}: folder {file.parent} does not exist; create it first{home}")
    except OSError as exc:  # an unsearchable folder on the way
        raise UsageError(f"storage {masked}: cannot reach it ({exc.strerror or exc})") from None


def no_study(backend: BaseStorage, study_name: str, url: str) -> UsageError:
    """The error for a missing study, naming the studies the storage does hold."""
    names = sorted(optuna.get_all_study_names(storage=backend))
    if study_name in names:  # made by hand, or a run stopped while creating it
        return UsageError(
            f"study {study_name!r} in {mask_url(url)} has no optuna-rnn configuration; give it one with "
            f"optuna-rnn run --study {study_name} --dataset NAME (or --data PATH)"
        )
    shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
    there = f"studies there: {shown}" if names else "it holds no studies yet"
    close = difflib.get_close_matches(study_name, names, n=3, cutoff=0.6)
    guess = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
    return UsageError(f"no study named {study_name!r} in {mask_url(url)} ({guess}{there})")


def open_session(
    study_name: str,
    *,
    storage: str | None = None,
    given: dict[str, Any] | None = None,
    create: bool = False,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    read_only: bool = False,
) -> StudySession:
    """Open (and with ``create``, create or resume) a study and its configuration.

    A new study is created only after its data loaded and validated, so bad
    input never leaves an empty study behind. ``heartbeat_interval`` and
    ``grace_period`` (seconds) turn on the heartbeat and retry of RDB storages.
    A resumed study refuses data that differ from those it was created on.
    ``read_only`` is for commands that only read the study (``best``, ``report``):
    its data are loaded only if asked for, so they work where the data file is not.
    """
    url = storage_url(storage)
    file = storage_file(url)
    # Opening a storage file creates it: a study it would certainly hold is checked whole first.
    new_file = create and file is not None and not file.exists()
    given_data = _refuse_bad_input(given or {}, load=create, whole=new_file)
    if new_file:  # an artifacts folder that cannot be made must not leave an empty database behind
        _refuse_bad_url(url, must_exist=False)  # first: the default folder goes beside the file
        _make_artifacts_dir((given or {}).get("artifacts") or default_artifacts_dir(url))
    backend = open_storage(
        url,
        must_exist=not create,
        heartbeat_interval=heartbeat_interval,
        grace_period=grace_period,
        for_reading=read_only,
    )
    # A reader has no run to wait for: a study without a configuration was not made by optuna-rnn.
    recorded = recorded_config(backend, study_name) if read_only else settled_config(backend, study_name)
    named, default = (given or {}).get("artifacts"), default_artifacts_dir(url)
    if named is not None and file is not None and _same_path(named, default):
        stored = (recorded or {}).get("artifacts")
        if stored is None or _same_path(artifacts_folder(stored, url), default):  # the default, named
            given = {k: v for k, v in (given or {}).items() if k != "artifacts"}
    if recorded is None and not create:
        raise no_study(backend, study_name, url)
    config = merge_config(given or {}, recorded)
    if read_only and recorded is not None:
        loaded = optuna.load_study(study_name=study_name, storage=backend)
        return StudySession(loaded, config, url, storage=backend)
    if recorded is None:
        artifacts_dir = os.path.abspath(config.artifacts or default)
        # Recorded absolute (other processes open it from other directories), except the default
        # beside a storage file: left unrecorded, it is found beside the file when the folder moves.
        if config.artifacts is not None or file is None:
            config = StudyConfig(**{**_as_kwargs(config), "artifacts": artifacts_dir})
    # The data given were loaded (and checked) before the storage was opened, and merge_config
    # found them the recorded ones; otherwise load and check them now, before anything is created.
    dataset = given_data if given_data is not None else config.dataset.load()
    fit_space(config.space, dataset)  # a window range the data cannot serve is refused here
    if recorded is None:
        config.space.refuse_for_new_study()
    sampler = make_sampler(config, dataset=dataset)
    pruner = make_pruner(config.pruner, max_epochs=config.max_epochs)
    if recorded is None:
        _make_artifacts_dir(artifacts_dir)
        direction = metric_for(dataset.task).direction
        with shutdown.deferred():  # a study without its configuration could not be resumed
            try:
                study: optuna.Study | None = optuna.create_study(
                    storage=backend,
                    study_name=study_name,
                    direction=direction,
                    sampler=sampler,
                    pruner=pruner,
                )
            except optuna.exceptions.DuplicatedStudyError:
                # Another run created it since we looked (study None: join it below), or a
                # stopped run left it bare (adopt it).
                study = None
                if settled_config(backend, study_name) is None:
                    study = optuna.load_study(
                        study_name=study_name, storage=backend, sampler=sampler, pruner=pruner
                    )
                    if len(study.directions) != 1 or study.direction.name.lower() != direction:
                        raise UsageError(
                            f"study {study_name!r} exists but was not created by optuna-rnn"
                        ) from None
            if study is not None:
                _record_config(study, config, dataset)
        shutdown.check()
        if study is None:  # joined as a resume, which refuses a different configuration
            return open_session(
                study_name,
                storage=storage,
                given=given,
                create=create,
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period,
            )
    else:
        study = optuna.load_study(study_name=study_name, storage=backend, sampler=sampler, pruner=pruner)
        _check_same_data(study, dataset)
        resumed_at = len(study.get_trials(deepcopy=False))
        if config.seed is not None and resumed_at and config.sampler not in ("qmc", "grid"):
            # Seeded as the first run was, the sampler would replay that run's random draws and
            # repeat its trials. QMC and grid samplers continue their sequence from the storage.
            reseeded = StudyConfig(**{**_as_kwargs(config), "seed": resumed_seed(config.seed, resumed_at)})
            study.sampler = make_sampler(reseeded, dataset=dataset)
    return StudySession(study, config, url, storage=backend, dataset=dataset)


def _say_who_fills_the_total(study: optuna.Study, n_trials: int) -> None:
    """A run that stops at once because running trials fill ``--n-trials`` says which and what to do."""
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    named = ", ".join(f"{t.number} ({t.user_attrs.get(WORKER_ID_ATTR, 'worker unknown')})" for t in running)
    print(
        f"optuna-rnn: note: running trials make up the rest of --n-trials {n_trials}, so this run "
        f"starts none: {named}. If their workers are gone (on another machine, or in a container "
        "since restarted, where no heartbeat tells), give --retry-trial N for each",
        file=sys.stderr,
    )


def _same_path(a: str, b: str) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def _make_artifacts_dir(path: str) -> None:
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--artifacts {path}: cannot create the directory ({exc.strerror})") from None


def _refuse_bad_input(given: dict[str, Any], *, load: bool, whole: bool = False) -> Dataset | None:
    """Refuse bad options and, with ``load``, bad data before a storage (a new SQLite file) is
    opened: a typo must not leave an empty database behind. Returns the data it loaded.

    ``whole`` (the storage does not exist yet, so no recorded configuration can change what
    is given) also checks what only the options and data together decide: a window range
    the series cannot serve, a grid too large to enumerate.
    """
    if not given:
        return None
    config = StudyConfig(**{"dataset": DatasetSpec(name="digits"), **given})  # checks each option given
    spec = given.get("dataset")
    if not isinstance(spec, DatasetSpec):
        return None
    if load:
        data = spec.load()
        if whole:
            config.space.refuse_for_new_study()
            fit_space(config.space, data)
            make_sampler(config, dataset=data)
        return data
    if spec.path is not None and not Path(spec.path).is_file():
        spec.load()  # raises the reader's own message: file not found, not a file
    return None


def resumed_seed(seed: int, n_trials: int) -> int:
    """The sampler seed of a run that resumes a study seeded ``seed`` after ``n_trials`` trials.

    A function of both, so that resuming is still repeatable.
    """
    return int(np.random.SeedSequence([seed, n_trials]).generate_state(1)[0])


# What must not change under a study's feet: its trials' values would stop being comparable.
_DATA_IDENTITY = ("task", "input_size", "output_size", "rows", "columns", "target", "horizon", "splits")


def _check_same_data(study: optuna.Study, dataset: Dataset) -> None:
    """Refuse to resume ``study`` on data whose shape or splits differ from those it recorded."""
    recorded = study.user_attrs.get(DATA_ATTR)
    if not isinstance(recorded, dict):
        return
    now = json.loads(json.dumps(dataset.summary()))  # as the storage returns it: lists, not tuples
    changed = [k for k in _DATA_IDENTITY if k in recorded and k in now and recorded[k] != now[k]]
    if changed:
        was = ", ".join(f"{k} {recorded[k]}" for k in changed)
        is_now = ", ".join(f"{k} {now[k]}" for k in changed)
        raise UsageError(
            f"study {study.study_name!r} was created on other data ({was}; now {is_now}); "
            "give a new --study name to tune on these data"
        )


def _record_config(study: optuna.Study, config: StudyConfig, dataset: Dataset) -> None:
    """Record what the study was created with, so that any later run or worker can rebuild it."""
    study.set_user_attr(CONFIG_ATTR, json.dumps(config.to_dict()))
    study.set_user_attr(DATA_ATTR, dataset.summary())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([metric_for(dataset.task).name])


def _as_kwargs(config: StudyConfig) -> dict[str, Any]:
    return {name: getattr(config, name) for name in config.__dataclass_fields__}


def run_trials(
    session: StudySession,
    *,
    n_trials: int,
    timeout: float | None = None,
    device: str = "auto",
    progress: bool = True,
    callbacks: list[Callable[[optuna.Study, FrozenTrial], None]] | None = None,
) -> None:
    """Run trials until the study holds ``n_trials`` finished ones (or ``timeout`` passes).

    ``n_trials`` is the study's total, shared by every worker: re-running an
    interrupted command finishes the job rather than overshooting it, and
    workers stop together at exactly ``n_trials`` (:class:`SharedTotal`).
    Trials that an earlier run closed on SIGTERM/SIGINT are queued again first
    and resume from their checkpoints. A signal during the run closes the
    running trial as FAIL and raises :class:`KeyboardInterrupt` (see
    :mod:`optuna_rnn.shutdown`).
    """
    # Dashboard content and the bounded model store (imported here: dashboard imports this module).
    from optuna_rnn.artifacts import KeepTopModels
    from optuna_rnn.dashboard import StudyDashboard

    session.artifacts()  # a folder that cannot be made says so before any trial is touched
    heartbeat = storage_heartbeat(session.storage)
    for clash in heartbeat_conflicts(session.study, heartbeat):  # before this worker fails any trial
        print(
            f"optuna-rnn: warning: {clash}; give every worker of a study the same "
            "$OPTUNA_RNN_HEARTBEAT_INTERVAL and $OPTUNA_RNN_HEARTBEAT_GRACE",
            file=sys.stderr,
        )
    with shutdown.deferred():  # a trial half requeued would be lost for good
        requeue_orphaned(session.study, session.checkpoints_dir, storage=session.storage)
        finished = session.finished()
        if finished < n_trials:  # else a run raising the total later retries them
            requeue_interrupted(session.study, session.checkpoints_dir)
    shutdown.check()
    total = SharedTotal(n_trials)
    remaining = n_trials - finished
    if remaining <= 0:
        print(
            f"optuna-rnn: note: study {session.study.study_name!r} already holds {finished} "
            f"finished trials (--n-trials {n_trials} is the study's total); give a larger --n-trials "
            "to run more",
            file=sys.stderr,
        )
    grid_left = session.grid_left()
    if grid_left is not None and grid_left <= 0 < remaining:  # else the grid sampler repeats one
        remaining = 0
        _say_the_grid_ran_out(n_trials)
    dashboard = StudyDashboard(session)
    filled = remaining > 0 and total.reached(session.study)
    if filled:
        _say_who_fills_the_total(session.study, n_trials)
    if remaining <= 0 or filled:
        _wrap_up(session, dashboard)  # a stop at the very end of an earlier run may have skipped it
        return
    guard = TrialGuard(session.study, session.objective(device=device), total, heartbeat=heartbeat)

    def stop_when_asked(study: optuna.Study, trial: FrozenTrial) -> None:
        if shutdown.stop_requested():
            study.stop()

    bar = tqdm(
        total=n_trials,
        initial=session.finished(),
        desc=session.study.study_name,
        unit="trial",
        disable=not progress,
        dynamic_ncols=True,
    )

    def show(study: optuna.Study, trial: FrozenTrial) -> None:
        if trial.state in FINISHED and not bar.disable:
            session.show_progress(bar, limit=n_trials)

    keep = session.config.keep_top
    trim = [KeepTopModels(session.artifacts(), keep)] if keep else []
    started = time.monotonic()
    interrupted = False
    try:
        while remaining > 0:
            left = None if timeout is None else timeout - (time.monotonic() - started)
            if left is not None and left <= 0:
                break
            try:
                with shutdown.deferred():
                    session.study.optimize(
                        guard,
                        n_trials=remaining,
                        timeout=left,
                        catch=(SurplusTrial,),
                        callbacks=[total, stop_when_asked, show, *trim, dashboard, *(callbacks or [])],
                    )
                break
            except (ValueError, optuna.exceptions.UpdateFinishedTrialError):
                if not guard.lost():
                    raise
                # This worker stalled past the grace period and its trial went to another one.
                remaining = 0 if total.reached(session.study) else n_trials - session.finished()
        if not bar.disable:  # other workers' trials finished since this one's last
            session.show_progress(bar, limit=n_trials)
    except KeyboardInterrupt:
        interrupted = True  # the trial is closed; publish where the study got to, then stop
    finally:
        bar.close()
    _wrap_up(session, dashboard)
    if interrupted or shutdown.stop_requested():
        raise KeyboardInterrupt
    say_if_the_grid_ran_out(session, n_trials)


def say_if_the_grid_ran_out(session: StudySession, n_trials: int) -> None:
    """Note that a grid study stopped short of ``n_trials`` because every configuration has run."""
    if session.grid_left() == 0 and not SharedTotal(n_trials).reached(session.study):
        _say_the_grid_ran_out(n_trials)


def _say_the_grid_ran_out(n_trials: int) -> None:
    if os.environ.get(LOCAL_WORKER_ENV):  # `run --workers N` says it once for all
        return
    print(
        "optuna-rnn: note: every configuration of the grid has run (a failed one is not run again); "
        "the study stops short of "
        f"--n-trials {n_trials}",
        file=sys.stderr,
    )


def _wrap_up(session: StudySession, dashboard: StudyDashboard) -> None:
    """Remove the empty checkpoint folder and publish the dashboard content, undisturbed by signals."""
    with shutdown.deferred():
        drop_leftovers(session.study, session.checkpoints_dir)
        tidy_checkpoints(session.checkpoints_dir)
        dashboard.update()
