"""Trained weights as Optuna artifacts, and reloading them as ready models.

A model file is a plain ``dict`` of tensors, strings and numbers (the state
dict plus what rebuilds the network), saved with ``torch.save`` and read back
with ``torch.load(..., weights_only=True)``: loading never unpickles
arbitrary objects.

:class:`KeepTopModels` bounds the store to the best ``k`` trials' weights, and
:func:`load_best_model` turns a study name into a ready ``nn.Module``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.artifacts import FileSystemArtifactStore, download_artifact, upload_artifact
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.trial import FrozenTrial, TrialState
from torch import nn

from optuna_rnn.errors import MissingModelError, UsageError, first_line
from optuna_rnn.models import OriginalUnits, RecurrentNet, build_model
from optuna_rnn.space import Hyperparams

FORMAT = "optuna-rnn/1"
MODEL_FILE = "model.pt"
MODEL_MIMETYPE = "application/x-pytorch"
ARTIFACT_ATTR = "model_artifact_id"


def artifact_store(path: str | os.PathLike[str], *, create: bool = True) -> FileSystemArtifactStore:
    """A file-system artifact store at ``path``, created if missing unless ``create=False``.

    Readers pass ``create=False``: a mistyped ``--artifacts`` must not leave a folder behind.
    """
    if create:
        Path(path).mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(base_path=str(path))


def model_payload(
    model: nn.Module, hp: Hyperparams, *, input_size: int, output_size: int, **meta: Any
) -> dict[str, Any]:
    """What a model file holds: weights and everything needed to rebuild the network."""
    return {
        "format": FORMAT,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "hyperparams": hp.to_dict(),
        "input_size": input_size,
        "output_size": output_size,
        **meta,
    }


def model_from_payload(payload: dict[str, Any]) -> RecurrentNet:
    """Rebuild the network of a model file, in eval mode."""
    if payload.get("format") != FORMAT:
        raise ValueError(f"not an optuna-rnn model file (format {payload.get('format')!r})")
    hp = Hyperparams(**payload["hyperparams"])
    with torch.random.fork_rng(devices=[]):  # the initialisers' draws, overwritten next, leave yours be
        model = build_model(hp, input_size=payload["input_size"], output_size=payload["output_size"])
    model.load_state_dict(payload["state_dict"])
    return model.eval()


def in_original_units(payload: dict[str, Any]) -> OriginalUnits:
    """The network of a model file, reading and answering in the units of the user's data.

    Files written before the statistics were kept wrap the network with mean 0 and standard
    deviation 1: it expects standardised inputs, as it did.
    """
    model = model_from_payload(payload)
    channels = int(payload["input_size"])
    return (
        OriginalUnits(
            model,
            input_mean=payload.get("input_mean") or [0.0] * channels,
            input_std=payload.get("input_std") or [1.0] * channels,
            target_mean=float(payload.get("target_mean", 0.0)),
            target_scale=float(payload.get("target_scale", 1.0)),
            task=payload.get("task"),
            classes=payload.get("classes"),
            hyperparams=Hyperparams(**payload["hyperparams"]),
            columns=payload.get("columns"),
            target=payload.get("target"),
            horizon=payload.get("horizon"),
            relative_channel=payload.get("relative_channel"),
        )
        .eval()
        .requires_grad_(False)
    )  # to predict with: model(x).numpy() works; requires_grad_() to train


def load_model_file(path: str | os.PathLike[str]) -> OriginalUnits:
    """Load a model file written by ``optuna-rnn best --export`` or uploaded as an artifact.

    The model takes inputs in the units of your data and returns class logits, or
    forecasts in the target's units (:class:`~optuna_rnn.models.OriginalUnits`).
    """
    try:
        payload = _read_payload(path)
    except ValueError as exc:
        raise ValueError(f"{os.fspath(path)} is not an optuna-rnn model file ({exc})") from None
    if not isinstance(payload, dict):
        raise ValueError(
            f"{os.fspath(path)} is not an optuna-rnn model file (it holds a {type(payload).__name__})"
        )
    return in_original_units(payload)


def _read_payload(path: str | os.PathLike[str]) -> Any:
    """``torch.load`` of a model file, nothing unpickled; an ``OSError`` is passed on, and whatever
    torch raises on other content (anything from ``KeyError`` to ``IndexError``) is a
    ``ValueError`` holding its first line."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise
    except Exception as exc:
        raise ValueError(first_line(exc)) from None


def upload_model(store: FileSystemArtifactStore, trial: optuna.Trial, payload: dict[str, Any]) -> str:
    """Save ``payload`` as the trial's model artifact; returns the artifact id."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / MODEL_FILE
        torch.save(payload, path)
        artifact_id = upload_artifact(
            artifact_store=store, file_path=str(path), study_or_trial=trial, mimetype=MODEL_MIMETYPE
        )
    trial.set_user_attr(ARTIFACT_ATTR, artifact_id)
    return artifact_id


def download_model_payload(store: FileSystemArtifactStore, trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """The model file of a finished trial, as a dict."""
    artifact_id = trial.user_attrs.get(ARTIFACT_ATTR)
    if artifact_id is None:
        raise MissingModelError(f"trial {trial.number} has no saved model")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / MODEL_FILE
        try:
            download_artifact(artifact_store=store, file_path=str(path), artifact_id=artifact_id)
        except (FileNotFoundError, ArtifactNotFound):
            raise MissingModelError(
                f"the model of trial {trial.number} is missing from the artifact store"
            ) from None
        try:
            payload: dict[str, Any] = _read_payload(path)
        except ValueError as exc:  # cut short or overwritten
            raise MissingModelError(f"the model file of trial {trial.number} is unreadable ({exc})") from None
    return payload


def load_best_model(
    study_name: str | optuna.Study,
    *,
    storage: str | None = None,
    artifacts: str | os.PathLike[str] | FileSystemArtifactStore | None = None,
) -> OriginalUnits:
    """The best trial's trained network of ``study_name``, ready to predict (eval mode, CPU).

    ``study_name`` may be an ``optuna.Study`` you ran with an :class:`~optuna_rnn.Objective`
    (an in-memory one too): then give ``artifacts``, the folder its models were saved to.

    Like :func:`load_model_file`, it reads and answers in the units of the study's data.

    ``storage`` defaults as on the command line (``$OPTUNA_RNN_STORAGE``, then
    ``sqlite:///optuna-rnn.db``); ``artifacts`` defaults to the directory the
    study recorded (for a study you made yourself and ran with an :class:`~optuna_rnn.Objective`,
    give the folder of its artifact store). Only the weights file is read (``weights_only=True``); the
    dataset is not loaded. A missing study raises :class:`UsageError`, a study
    without a saved best model :class:`~optuna_rnn.errors.MissingModelError` (a :class:`LookupError`).
    """
    from optuna_rnn.study import (
        UnconfiguredStudy,
        artifacts_folder,
        no_study,
        open_storage,
        recorded_config,
        storage_url,
    )

    if isinstance(study_name, optuna.Study):
        if artifacts is None:
            raise UsageError(
                "load_best_model(study): give artifacts= (the folder its Objective saved models to)"
            )
        return _best_in(study_name, artifacts)
    url = storage_url(storage)
    backend = open_storage(url, must_exist=True, for_reading=True)
    try:
        config = recorded_config(backend, study_name)
    except UnconfiguredStudy:  # your own study of an Objective: its models are where you said
        if artifacts is None:
            raise UsageError(
                f"study {study_name!r} was not created by optuna-rnn: give artifacts= (the folder "
                "of the artifact store its Objective saved models to)"
            ) from None
        config = {}
    if config is None:
        raise no_study(backend, study_name, url)
    directory = artifacts or artifacts_folder(config.get("artifacts"), url)
    return _best_in(optuna.load_study(study_name=study_name, storage=backend), directory)


def _best_in(
    study: optuna.Study, directory: str | os.PathLike[str] | FileSystemArtifactStore
) -> OriginalUnits:
    ranked = ranked_complete(study)
    if not ranked:
        raise MissingModelError(f"study {study.study_name!r} has no complete trial yet")
    store = (
        directory
        if isinstance(directory, FileSystemArtifactStore)
        else artifact_store(directory, create=False)
    )
    return in_original_units(download_model_payload(store, ranked[0]))


#: Trial states whose model file may be needed: complete, or able to complete yet.
MAY_OWN_A_MODEL = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)


class KeepTopModels:
    """Study callback that keeps the model files of the best ``k`` COMPLETE trials only.

    After each finished trial, the weights of COMPLETE trials ranked below the
    top ``k`` are removed from the artifact store, so the store stays bounded
    however long the study runs. A trial that falls out of the top ``k`` never
    comes back (the set of better trials only grows), so parallel workers
    trimming the same store never remove a file another worker still needs.
    The trial's artifact entry stays in the storage (Optuna forbids changing a
    finished trial); downloading it reports the file as missing. The model of a
    FAIL trial (one killed after saving its model but before it was told
    COMPLETE) is removed too, unless another trial (its retry) still names it: a retry
    that is running, waiting or complete; one that was pruned no longer needs it.
    """

    def __init__(self, store: FileSystemArtifactStore | str | os.PathLike[str], k: int) -> None:
        if k < 1:
            raise UsageError(f"k (--keep-top) must be >= 1, got {k}")
        self.store = artifact_store(store) if isinstance(store, (str, os.PathLike)) else store
        self.k = k
        self._removed: set[str] = set()

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if trial.state != TrialState.COMPLETE:
            return
        trials = study.get_trials(deepcopy=False)
        # A retry inherits its failed trial's user attrs, model id included, until it saves its own
        # (as it completes); a pruned retry ends still naming the dead trial's file.
        alive = {t.user_attrs.get(ARTIFACT_ATTR) for t in trials if t.state in MAY_OWN_A_MODEL}
        leftovers = [
            t
            for t in trials
            if t.state in (TrialState.FAIL, TrialState.PRUNED)
            and t.user_attrs.get(ARTIFACT_ATTR) not in alive
        ]
        for dropped in [*ranked_complete(study)[self.k :], *leftovers]:
            artifact_id = dropped.user_attrs.get(ARTIFACT_ATTR)
            if not isinstance(artifact_id, str) or artifact_id in self._removed:
                continue
            with contextlib.suppress(ArtifactNotFound):  # another worker removed it first
                self.store.remove(artifact_id)
            self._removed.add(artifact_id)


def ranked_complete(study: optuna.Study) -> list[FrozenTrial]:
    """COMPLETE trials, best first (ties: earlier trial first)."""
    sign = -1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
    scored = [
        (sign * t.value, t.number, t)
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.value is not None
    ]
    return [t for _, _, t in sorted(scored, key=lambda s: (s[0], s[1]))]
