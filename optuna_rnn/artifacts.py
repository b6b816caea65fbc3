"""Trained weights as Optuna artifacts, and reloading them as ready models.

A model file is a plain ``dict`` of tensors, strings and numbers (the state
dict plus what rebuilds the network), saved with ``torch.save`` and read back
with ``torch.load(..., weights_only=True)``: loading never unpickles
arbitrary objects.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.artifacts import FileSystemArtifactStore, download_artifact, upload_artifact
from torch import nn

from optuna_rnn.models import RecurrentNet, build_model
from optuna_rnn.space import Hyperparams

FORMAT = "optuna-rnn/1"
MODEL_FILE = "model.pt"
MODEL_MIMETYPE = "application/x-pytorch"
ARTIFACT_ATTR = "model_artifact_id"


def artifact_store(path: str | os.PathLike[str]) -> FileSystemArtifactStore:
    """A file-system artifact store at ``path`` (created if missing)."""
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
    model = build_model(hp, input_size=payload["input_size"], output_size=payload["output_size"])
    model.load_state_dict(payload["state_dict"])
    return model.eval()


def load_model_file(path: str | os.PathLike[str]) -> RecurrentNet:
    """Load a model file written by ``optuna-rnn best --export`` or uploaded as an artifact."""
    return model_from_payload(torch.load(path, map_location="cpu", weights_only=True))


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
        raise LookupError(f"trial {trial.number} has no saved model")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / MODEL_FILE
        try:
            download_artifact(artifact_store=store, file_path=str(path), artifact_id=artifact_id)
        except FileNotFoundError:
            raise LookupError(
                f"the model of trial {trial.number} is missing from the artifact store"
            ) from None
        payload: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    return payload
