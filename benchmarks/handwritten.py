"""A hand-written Optuna study in the official PyTorch example's style: the baseline.

It is what a user writes without optuna-rnn: an LSTM classifier, a ``DataLoader`` over a
``TensorDataset`` (batch 32), ``trial.report`` + ``should_prune`` every epoch, TPE with the
median pruner, in-memory storage. It trains on the same train/valid split as the package.
Its space is the example's adapted to an LSTM: the same optimisers, learning rate 1e-4 to 1e-1
(the example: 1e-5 to 1e-1), dropout 0-0.5 (0.2-0.5), 1-2 recurrent layers (1-3 linear ones)
and batch 32 (128).
"""

from __future__ import annotations

from collections.abc import Callable

import optuna
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from optuna_rnn import Choice, FloatRange, IntRange, SearchSpace
from optuna_rnn.data import SequenceData

BATCH = 32

# What ``make_objective`` samples, in the package's terms; the rest fixed to its choices.
HANDWRITTEN_SPACE = SearchSpace(
    cell="lstm",
    hidden_size=IntRange(16, 128, log=True),
    num_layers=IntRange(1, 2),
    bidirectional=False,
    dropout=FloatRange(0.0, 0.5),
    optimizer=Choice(("adam", "rmsprop", "sgd")),
    lr=FloatRange(1e-4, 1e-1, log=True),
    batch_size=BATCH,
    weight_decay=0.0,
    momentum=0.0,
    nesterov=False,
    beta1=0.9,
    beta2=0.999,
    rmsprop_alpha=0.99,
    input_init="xavier_uniform",
    recurrent_init="orthogonal",
    forget_bias=1.0,
    grad_clip=None,
)


class LSTMClassifier(nn.Module):
    def __init__(self, input_size: int, hidden: int, layers: int, classes: int, dropout: float) -> None:
        super().__init__()
        self.lstm = nn.LSTM(
            input_size, hidden, layers, batch_first=True, dropout=dropout if layers > 1 else 0
        )
        self.fc = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.fc(out[:, -1])


def make_objective(
    data: SequenceData, *, max_epochs: int = 10, device: str = "cpu", seed: int | None = None
) -> Callable[[optuna.Trial], float]:
    """The objective; on a GPU (``device``) each batch moves there as the example's ``.to(DEVICE)`` does.

    The official example does not seed torch; with ``seed``, trial ``n`` seeds it with ``seed + n``
    (initial weights, shuffling, dropout), so that a study repeats from run to run and pairs with
    the package's seeded study in the benchmarks.
    """
    train = DataLoader(TensorDataset(data.train.X, data.train.y), batch_size=BATCH, shuffle=True)
    valid = DataLoader(TensorDataset(data.valid.X, data.valid.y), batch_size=BATCH)

    def objective(trial: optuna.Trial) -> float:
        if seed is not None:
            torch.manual_seed(seed + trial.number)
        layers = trial.suggest_int("n_layers", 1, 2)
        hidden = trial.suggest_int("hidden", 16, 128, log=True)
        dropout = trial.suggest_float("dropout", 0.0, 0.5)
        model = LSTMClassifier(data.input_size, hidden, layers, data.output_size, dropout).to(device)
        name = trial.suggest_categorical("optimizer", ["Adam", "RMSprop", "SGD"])
        lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        optimizer = getattr(torch.optim, name)(model.parameters(), lr=lr)
        accuracy = 0.0
        for epoch in range(max_epochs):
            model.train()
            for x, y in train:
                x, y = x.to(device), y.to(device)
                optimizer.zero_grad()
                loss = nn.functional.cross_entropy(model(x), y)
                loss.backward()
                optimizer.step()
            model.eval()
            correct = 0
            with torch.no_grad():
                for x, y in valid:
                    x, y = x.to(device), y.to(device)
                    correct += model(x).argmax(dim=1).eq(y).sum().item()
            accuracy = correct / len(data.valid.y)
            trial.report(accuracy, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return accuracy

    return objective


def handwritten_pruner() -> optuna.pruners.BasePruner:
    """The official example's pruner: Optuna's median pruner with its defaults (no warm-up)."""
    return optuna.pruners.MedianPruner()


def run_handwritten_study(
    data: SequenceData, *, n_trials: int = 20, seed: int = 0, device: str = "cpu", max_epochs: int = 10
) -> optuna.Study:
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=handwritten_pruner(),
    )
    study.optimize(make_objective(data, max_epochs=max_epochs, device=device, seed=seed), n_trials=n_trials)
    return study
