"""Overhead: time per trial spent outside training, for SQLite, journal file and PostgreSQL.

A study is first filled with 100 (or 1000) finished trials copied from real ones, so the
sampler and the storage work at that size; then real trials of the `japanese_vowels` study
run with its defaults (median pruner included). Two measures of what is not training:

* **vs bare training**: the same trainings (same parameters, seeds and epoch counts) are
  replayed with a bare :class:`~optuna_rnn.Trainer` (no storage, no sampler, no callbacks),
  and the overhead is the study's wall-clock minus the replay's. This also charges anything
  that slows the epochs down (a background thread competing for the cores).
* **outside epochs**: the study's wall-clock minus the sum of its epochs' own compute time
  (the ``seconds`` of each epoch in the ``curve`` user attr).

Overhead covers sampling, storage reads and writes, the per-epoch report and pruning check,
model building, checkpoints, dashboard content and artifact upload. What a worker pays once per
run rather than per trial (the run's set-up, the closing dashboard update) is shown on its own:
from the command's start to the first trial's start, plus from the last trial's end to the
command's return. The worker here filled the study itself, so its trials are already in memory;
a freshly started worker also reads them once. A real 1000-trial run spreads it over all of its
trials; charging it to the few trials measured here would overstate the per-trial cost.

Part of it is Optuna's own and would be paid by any objective on the same storage, sampler and
pruner: **Optuna alone** replays the measured trials' shape with no training at all (ask with
the package's TPE, the search space's suggestions, one report and pruning check per epoch of
each trial's learning curve, tell), with the row's own pruning check, and is shown as a share of
the same trials with bare training.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import optuna
from optuna.trial import TrialState, create_trial

from benchmarks.common import Section, machine, table
from optuna_rnn import DATASETS, DatasetSpec, Objective, PruningSnapshot, Trainer, build_model
from optuna_rnn.study import StudySession, open_session, open_storage, run_trials

POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


def _fill(study: optuna.Study, templates: list[optuna.trial.FrozenTrial], size: int) -> None:
    """Add copies of ``templates`` (with noisy values) until the study holds ``size`` trials."""
    rng = random.Random(0)
    fakes = []
    for i in range(size - len(study.get_trials(deepcopy=False))):
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


def replay(session: StudySession, trials: list[optuna.trial.FrozenTrial]) -> float:
    """Seconds to redo ``trials``' trainings with a bare trainer: same parameters, seeds, epochs."""
    import torch

    objective = session.objective(device="cpu")
    data_set = objective.dataset
    t0 = time.perf_counter()
    for t in trials:
        hp = objective.space.suggest(optuna.trial.FixedTrial(t.params), task=data_set.task)
        data = data_set.windowed(hp.window, forecast=hp.forecast)
        seed = int(t.user_attrs["seed"])
        torch.manual_seed(seed)
        model = build_model(hp, input_size=data.input_size, output_size=data.output_size, task=data.task)
        Trainer(max_epochs=int(t.user_attrs["epochs"]), device="cpu", seed=seed).fit(model, data, hp)
    return time.perf_counter() - t0


def optuna_alone(
    session: StudySession, trials: list[optuna.trial.FrozenTrial], *, snapshot: bool = True
) -> float:
    """Seconds Optuna needs for ``trials``' sampling, reports, pruning checks and results, untrained.

    The pruning check is the one the measured trials had: a :class:`PruningSnapshot` (``snapshot``)
    or Optuna's ``should_prune``.
    """
    study = session.study
    space = session.objective(device="cpu").space
    task = session.dataset.task
    judge = PruningSnapshot(study) if snapshot else None
    t0 = time.perf_counter()
    for t in trials:
        trial = study.ask()
        space.suggest(trial, task=task)
        reported: dict[int, float] = {}
        for step, value in sorted(t.intermediate_values.items()):
            trial.report(value, step)
            reported[step] = value
            if judge:
                judge.should_prune(trial, reported)
            else:
                trial.should_prune()
        if judge:
            judge.forget(trial)
        if t.state == TrialState.COMPLETE:
            study.tell(trial, t.value)
        else:
            study.tell(trial, state=TrialState.PRUNED)
    return time.perf_counter() - t0


@contextlib.contextmanager
def _should_prune_every_epoch() -> Iterator[None]:
    """Run the objective as a hand-written one would: Optuna's ``should_prune`` at every epoch."""
    original = Objective._pruning
    Objective._pruning = lambda self, trial: None  # type: ignore[assignment,method-assign,return-value]
    try:
        yield
    finally:
        Objective._pruning = original  # type: ignore[method-assign]


def measure(
    storage: str, dataset: str, size: int, n_measured: int, max_epochs: int, *, snapshot: bool = True
) -> dict[str, float]:
    """Overhead of ``n_measured`` trials run on a study that holds ``size`` trials.

    ``snapshot=False`` asks Optuna's ``Trial.should_prune`` at every epoch instead of the
    package's :class:`~optuna_rnn.PruningSnapshot`, to show what the snapshot saves.
    """
    name = f"overhead-{uuid.uuid4().hex[:8]}"
    given = {"dataset": DatasetSpec(name=dataset), "seed": 0, "max_epochs": max_epochs}
    session = open_session(name, storage=storage, given=given, create=True)
    checks = contextlib.nullcontext() if snapshot else _should_prune_every_epoch()
    try:
        run_trials(session, n_trials=5, progress=False)
        _fill(session.study, session.study.get_trials(states=(TrialState.COMPLETE,)), size)
        before = {t.number for t in session.study.get_trials(deepcopy=False)}
        started = datetime.now()
        with checks:
            run_trials(session, n_trials=size + n_measured, progress=False)
        ended = datetime.now()
        new = [t for t in session.study.get_trials(deepcopy=False) if t.number not in before]
        first = min(t.datetime_start for t in new if t.datetime_start is not None)
        last = max(t.datetime_complete for t in new if t.datetime_complete is not None)
        once = (first - started).total_seconds() + (ended - last).total_seconds()
        wall = (last - first).total_seconds()
        epochs = sum(sum(t.user_attrs["curve"]["seconds"]) for t in new)
        bare = replay(session, new)
        alone = optuna_alone(session, new, snapshot=snapshot)
        return {
            "alone": alone / len(new),
            "alone_share": alone / (alone + bare),
            "wall": wall,
            "once": once,
            "bare": bare,
            "trials": len(new),
            "pruned": sum(t.state == TrialState.PRUNED for t in new),
            "share": (wall - bare) / wall,
            "per_trial": (wall - bare) / len(new),
            "share_epochs": (wall - epochs) / wall,
        }
    finally:
        optuna.delete_study(study_name=name, storage=open_storage(storage))


def _postgres_ok() -> bool:
    try:
        open_storage(POSTGRES)
        return True
    except Exception:
        return False


REPEATS = 3


def run(*, quick: bool = False) -> Section:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    dataset = "japanese_vowels" if "japanese_vowels" in DATASETS else "digits"
    sizes = (20, 50) if quick else (100, 1000)
    n_measured, max_epochs = (3, 2) if quick else (10, 30)
    repeats = 1 if quick else REPEATS
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        storages = {
            "SQLite": f"sqlite:///{Path(tmp) / 'o.db'}",
            "journal file": str(Path(tmp) / "o.log"),
        }
        if _postgres_ok():
            storages["PostgreSQL"] = POSTGRES
        runs = [(label, url, size, True) for label, url in storages.items() for size in sizes]
        # the same study judged by Optuna's should_prune at every epoch, as a hand-written objective is
        if not quick:  # the quick run keeps under its 3 minutes
            runs += [(label, url, sizes[-1], False) for label, url in storages.items() if "://" in url]
        measured: dict[tuple[str, str, int, bool], list[dict[str, float]]] = {run: [] for run in runs}
        for _ in range(repeats):  # interleaved, so that a slow spell of the machine hits every row
            for label, url, size, snapshot in runs:
                measured[label, url, size, snapshot].append(
                    measure(url, dataset, size, n_measured, max_epochs, snapshot=snapshot)
                )
        for (label, _url, size, snapshot), results in measured.items():
            # every column from the repeat with the median share, so that a row's columns reconcile
            m = sorted(results, key=lambda r: r["share"])[(len(results) - 1) // 2]
            spread = sorted(r["per_trial"] * 1000 for r in results)
            rows.append(
                [
                    label,
                    "snapshot" if snapshot else "should_prune",
                    size,
                    f"{m['trials']:.0f} ({m['pruned']:.0f} pruned)",
                    m["once"],
                    m["wall"],
                    m["bare"],
                    m["per_trial"] * 1000,
                    " / ".join(f"{v:.0f}" for v in spread),
                    f"{100 * m['share']:.1f}%",
                    f"{100 * m['share_epochs']:.1f}%",
                    m["alone"] * 1000,
                    f"{100 * m['alone_share']:.1f}%",
                ]
            )
            ms, share = m["per_trial"] * 1000, 100 * m["share"]
            alone, once = m["alone"] * 1000, m["once"]
            print(
                f"  {label:12} {rows[-1][1]:12} {size:5} trials: {ms:.0f} ms/trial ({share:.1f}%), "
                f"Optuna {alone:.0f} ms, once per run {once:.1f} s"
            )
    body = (
        f"Machine: {machine()}. The `{dataset}` study with its defaults (median pruner, at most "
        f"{max_epochs} epochs, early stopping), {n_measured} trials measured on top of the study's size, "
        f"{repeats} repeats interleaved across the rows; each row shows the repeat with the median "
        "overhead share, every column from that repeat. "
        "'once per run' is the worker's start-up and wrap-up (the run's set-up, the closing dashboard "
        "update; the study's trials are already in its memory), paid once however many trials it runs; "
        "'trials s' is the wall-clock from "
        "the first measured trial's start to the last one's end. 'Overhead share of trial time' is "
        "(trials s - bare training s) / trials s, where 'bare training' is a replay of the same trainings "
        "with a bare trainer; 'outside epochs' subtracts the epochs' own compute time instead. "
        "'Optuna alone' is the same trials' sampling, "
        "reports, pruning checks (the row's own) and results with no training: what any objective pays "
        "on that storage with that sampler and pruner; its share is of Optuna alone plus bare training. "
        "'pruning check' is how the "
        "package's trials were judged: against the worker's `PruningSnapshot` of the completed trials "
        "(the default), or by Optuna's `should_prune` at every epoch, as a hand-written objective does.\n\n"
        + table(
            [
                "storage",
                "pruning check",
                "trials in study",
                "trials measured",
                "once per run s",
                "trials s",
                "bare training s",
                "overhead ms / trial",
                "ms / trial in each repeat (sorted)",
                "overhead share of trial time",
                "share outside epochs",
                "Optuna alone ms / trial",
                "Optuna alone share",
            ],
            rows,
        )
    )
    return Section("Overhead outside training", "python -m benchmarks --only overhead", body)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    print(run(quick=parser.parse_args().quick).markdown())
