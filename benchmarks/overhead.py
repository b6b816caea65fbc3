"""Overhead: time per trial spent outside training, for SQLite, journal file and PostgreSQL.

A study is first filled with 100 (or 1000) finished trials copied from real ones, so the
sampler and the storage work at that size; then real trials run and we compare the
wall-clock of the whole ``run_trials`` call with the sum of the epochs' compute time
(training and validation, the ``seconds`` of each epoch in the ``curve`` user attr).
Everything else is overhead: sampling, storage writes and reads, model building, the
per-epoch report and pruning check, checkpoints, callbacks, artifact upload.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
import uuid
from pathlib import Path

import optuna
from optuna.trial import TrialState, create_trial

from benchmarks.common import Section, machine, table
from optuna_rnn import DATASETS, DatasetSpec
from optuna_rnn.study import open_session, open_storage, run_trials

POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


def _fill(study: optuna.Study, templates: list[optuna.trial.FrozenTrial], size: int) -> None:
    rng = random.Random(0)
    fakes = []
    for i in range(size - len(templates)):
        t = templates[i % len(templates)]
        noise = rng.uniform(-0.02, 0.02) * abs(t.value or 1.0)
        fakes.append(
            create_trial(
                params=t.params,
                distributions=t.distributions,
                value=(t.value or 0.0) + noise,
                intermediate_values=t.intermediate_values,
                user_attrs={k: v for k, v in t.user_attrs.items() if k != "model_artifact_id"},
                state=TrialState.COMPLETE,
            )
        )
    study.add_trials(fakes)


def measure(storage: str, dataset: str, size: int, n_measured: int, max_epochs: int) -> tuple[float, float]:
    """(overhead share, overhead seconds per trial) for a study holding ``size`` trials."""
    name = f"overhead-{uuid.uuid4().hex[:8]}"
    given = {"dataset": DatasetSpec(name=dataset), "seed": 0, "max_epochs": max_epochs, "pruner": "none"}
    session = open_session(name, storage=storage, given=given, create=True)
    try:
        run_trials(session, n_trials=5, progress=False)
        _fill(session.study, session.study.get_trials(states=(TrialState.COMPLETE,)), size)
        before = {t.number for t in session.study.get_trials(deepcopy=False)}
        t0 = time.perf_counter()
        run_trials(session, n_trials=size + n_measured, progress=False)
        wall = time.perf_counter() - t0
        new = [t for t in session.study.get_trials(deepcopy=False) if t.number not in before]
        training = sum(sum(t.user_attrs["curve"]["seconds"]) for t in new if "curve" in t.user_attrs)
        return (wall - training) / wall, (wall - training) / len(new)
    finally:
        optuna.delete_study(study_name=name, storage=open_storage(storage))


def _postgres_ok() -> bool:
    try:
        optuna.storages.RDBStorage(POSTGRES)
        return True
    except Exception:
        return False


def run(*, quick: bool = False) -> Section:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    dataset = "japanese_vowels" if "japanese_vowels" in DATASETS else "digits"
    sizes = (20, 50) if quick else (100, 1000)
    n_measured, max_epochs = (3, 2) if quick else (8, 30)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        storages = {
            "SQLite": f"sqlite:///{Path(tmp) / 'o.db'}",
            "journal file": str(Path(tmp) / "o.log"),
        }
        if _postgres_ok():
            storages["PostgreSQL"] = POSTGRES
        for label, url in storages.items():
            for size in sizes:
                share, per_trial = measure(url, dataset, size, n_measured, max_epochs)
                rows.append([label, size, n_measured, per_trial * 1000, 100 * share])
                print(
                    f"  {label:12} {size:5} trials: {per_trial * 1000:.0f} ms/trial "
                    f"outside training ({100 * share:.1f}%)"
                )
    body = (
        f"Machine: {machine()}. Dataset `{dataset}`, default space and trainer settings "
        f"(at most {max_epochs} epochs), no pruner; {n_measured} trials measured "
        "on top of the study's size.\n\n"
        + table(
            ["storage", "trials in study", "trials measured", "overhead ms / trial", "overhead % of trial"],
            rows,
        )
    )
    return Section("Overhead outside training", "python -m benchmarks --only overhead", body)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    print(run(quick=parser.parse_args().quick).markdown())
