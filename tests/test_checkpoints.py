"""Checkpoints: a run interrupted after any epoch and resumed ends exactly as an uninterrupted one."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
import torch

from optuna_rnn import (
    Checkpoint,
    EarlyStopping,
    Hyperparams,
    SequenceData,
    Trainer,
    build_model,
    load_checkpoint,
    load_dataset,
)
from optuna_rnn.callbacks import remove_checkpoint, save_checkpoint
from optuna_rnn.errors import UsageError
from optuna_rnn.recovery import TrialCheckpoint
from optuna_rnn.training import Callback, FitResult, TrainState


class Crash(Exception):
    """Stands for the process dying right after a checkpoint was written."""


class CrashAfter(Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, state: TrainState) -> None:
        if state.epoch == self.epoch:
            raise Crash


def variable_length() -> SequenceData:
    """Padded sequences of different lengths: exercises the bucketed, shuffled batches."""
    rng = np.random.default_rng(3)
    n, length = 240, 14
    lengths = rng.integers(4, length + 1, size=n)
    X = rng.normal(size=(n, length, 3)).astype(np.float32)
    y = (X[:, :4, 0].sum(axis=1) > 0).astype(np.int64)
    for i, k in enumerate(lengths):
        X[i, k:] = 0.0
    return SequenceData.from_arrays(X, y, name="ragged", lengths=lengths)


CASES = {
    # dropout between stacked layers draws from torch's global RNG every batch
    "digits-lstm-dropout-adam": (
        lambda: load_dataset("digits"),
        Hyperparams(cell="lstm", hidden_size=8, num_layers=2, dropout=0.3, batch_size=256, lr=0.01),
    ),
    "ragged-gru-sgd-momentum": (
        variable_length,
        Hyperparams(
            cell="gru", hidden_size=8, optimizer="sgd", lr=0.05, momentum=0.9, batch_size=32, dropout=0.2
        ),
    ),
}


def train(
    data: SequenceData,
    hp: Hyperparams,
    callbacks: list[Callback],
    *,
    seed: int,
    resume: dict | None = None,
) -> tuple[FitResult, dict[str, torch.Tensor]]:
    torch.manual_seed(seed)
    model = build_model(hp, input_size=data.input_size, output_size=data.output_size, task=data.task)
    trainer = Trainer(max_epochs=5, seed=seed, device="cpu")
    result = trainer.fit(model, data, hp, callbacks=callbacks, resume_from=resume)
    return result, model.state_dict()


@pytest.mark.parametrize("crash_after", [1, 3])
@pytest.mark.parametrize("case", sorted(CASES))
def test_resumed_run_matches_an_uninterrupted_one(tmp_path, case: str, crash_after: int) -> None:
    make_data, hp = CASES[case]
    data = make_data()
    # min_delta makes early stopping fire after the crash only if its state is rebuilt on resume
    stopper = {"patience": 2, "min_delta": 0.02}
    whole, whole_weights = train(data, hp, [EarlyStopping(**stopper)], seed=5)

    path = tmp_path / "run.ckpt"
    with pytest.raises(Crash):
        train(data, hp, [EarlyStopping(**stopper), Checkpoint(path), CrashAfter(crash_after)], seed=5)
    saved = load_checkpoint(path)
    assert saved is not None and saved["epoch"] == crash_after

    # another seed for the model, the trainer and torch's global RNG: all must be restored
    resumed, resumed_weights = train(data, hp, [EarlyStopping(**stopper)], seed=99, resume=saved)

    assert resumed.epochs == whole.epochs and resumed.stop_reason == whole.stop_reason
    assert resumed.best_epoch == whole.best_epoch
    assert resumed.best_value == pytest.approx(whole.best_value, abs=1e-6)
    for key in ("train_loss", "val_loss", "val_metric"):
        assert [h[key] for h in resumed.history] == pytest.approx([h[key] for h in whole.history], abs=1e-6)
    for name, tensor in whole_weights.items():
        torch.testing.assert_close(resumed_weights[name], tensor, rtol=1e-5, atol=1e-6)


def test_early_stopping_state_survives_a_resume(tmp_path) -> None:
    data = load_dataset("digits")
    hp = Hyperparams(cell="gru", hidden_size=6, batch_size=256, lr=0.003)
    # an improvement threshold no epoch reaches: the first epoch stays best, stop after 1 + patience
    stopper = {"patience": 3, "min_delta": 10.0}
    whole, _ = train(data, hp, [EarlyStopping(**stopper)], seed=1)
    assert whole.epochs == 4 and whole.stop_reason.startswith("early stopping")
    path = tmp_path / "run.ckpt"
    with pytest.raises(Crash):
        train(data, hp, [EarlyStopping(**stopper), Checkpoint(path), CrashAfter(2)], seed=1)
    resumed, _ = train(data, hp, [EarlyStopping(**stopper)], seed=1, resume=load_checkpoint(path))
    assert resumed.epochs == 4 and resumed.stop_reason == whole.stop_reason


def test_a_failed_write_leaves_the_previous_checkpoint_whole(tmp_path) -> None:
    path = tmp_path / "run.ckpt"
    save_checkpoint(path, {"epoch": 3}, meta={"seed": 1})
    with pytest.raises(Exception, match="pickle|lambda|serializ"):
        save_checkpoint(path, {"epoch": 4, "bad": lambda: None}, meta={"seed": 1})
    assert load_checkpoint(path, meta={"seed": 1}) == {"epoch": 3}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.ckpt"]  # no temporary file left


def test_a_checkpoint_of_another_run_is_not_resumed(tmp_path) -> None:
    path = tmp_path / "run.ckpt"
    save_checkpoint(path, {"epoch": 2}, meta={"seed": 1, "hyperparams": {"lr": 0.1}})
    with pytest.warns(UserWarning, match="another run"):
        assert load_checkpoint(path, meta={"seed": 2, "hyperparams": {"lr": 0.1}}) is None
    path.with_name("garbage.ckpt").write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning, match="unreadable"):
        assert load_checkpoint(path.with_name("garbage.ckpt")) is None
    (tmp_path / "run.ckpt.tmp-123").write_bytes(b"left by a killed writer")
    remove_checkpoint(path)
    assert load_checkpoint(path) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["garbage.ckpt"]


class SavedEpochs(Callback):
    """Records the epoch held by the checkpoint file after each epoch (runs after Checkpoint)."""

    def __init__(self, path) -> None:
        self.path = path
        self.seen: list[int] = []

    def on_epoch_end(self, state: TrainState) -> None:
        self.seen.append(load_checkpoint(self.path)["epoch"])


@pytest.mark.parametrize(
    ("min_seconds", "early_stop", "expected"),
    [
        (0.0, False, [1, 2, 3, 4, 5]),
        (3600.0, False, [1, 1, 1, 1, 1]),  # throttled: the first epoch's save is the only one
        (3600.0, True, [1, 1, 1, 4]),  # a stopping epoch is saved even within the throttle
    ],
)
def test_checkpoint_saves_at_most_once_per_min_seconds(tmp_path, min_seconds, early_stop, expected) -> None:
    data = load_dataset("digits")
    hp = Hyperparams(cell="gru", hidden_size=6, batch_size=256, lr=0.003)
    path = tmp_path / "run.ckpt"
    spy = SavedEpochs(path)
    stopper = [EarlyStopping(patience=3, min_delta=10.0)] if early_stop else []  # stops after epoch 4
    train(data, hp, [*stopper, Checkpoint(path, min_seconds=min_seconds), spy], seed=1)
    assert spy.seen == expected


def test_trial_checkpoints_take_their_throttle_from_the_environment(tmp_path, monkeypatch) -> None:
    trial = optuna.create_study().ask()
    checkpoint = TrialCheckpoint(tmp_path, trial)
    monkeypatch.delenv("OPTUNA_RNN_CHECKPOINT_SECONDS", raising=False)
    assert checkpoint.callback({}).min_seconds == 5
    monkeypatch.setenv("OPTUNA_RNN_CHECKPOINT_SECONDS", "0")
    assert checkpoint.callback({}).min_seconds == 0
    monkeypatch.setenv("OPTUNA_RNN_CHECKPOINT_SECONDS", "soon")
    with pytest.raises(UsageError, match=r"\$OPTUNA_RNN_CHECKPOINT_SECONDS must be a whole number"):
        checkpoint.callback({})
