"""optuna-rnn: tune PyTorch RNN, LSTM and GRU models with Optuna.

The pieces compose into your own Optuna objective::

    hp = SearchSpace().suggest(trial)
    model = build_model(hp, input_size=..., output_size=...)
    Trainer(callbacks=[PruningCallback(trial)]).fit(model, data, hp)

or run as a whole with :class:`Objective` and the ``optuna-rnn`` command.
"""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

from optuna_rnn.artifacts import KeepTopModels, load_best_model, load_model_file
from optuna_rnn.callbacks import (
    Checkpoint,
    Diverged,
    DivergenceGuard,
    EarlyStopping,
    PruningCallback,
    load_checkpoint,
)
from optuna_rnn.config import StudyConfig
from optuna_rnn.data import ForecastSeries, SequenceData, Split, fit_space
from optuna_rnn.datasets import DATASETS, DatasetSpec, load_dataset
from optuna_rnn.errors import ConfigMismatchError, MissingModelError, UsageError
from optuna_rnn.models import OriginalUnits, RecurrentNet, build_model
from optuna_rnn.objective import Objective
from optuna_rnn.snapshot import PruningSnapshot
from optuna_rnn.space import Choice, FloatRange, Hyperparams, IntRange, SearchSpace
from optuna_rnn.training import Callback, FitResult, Trainer, TrainState, metric_for

__all__ = [
    "DATASETS",
    "Callback",
    "Checkpoint",
    "Choice",
    "ConfigMismatchError",
    "DatasetSpec",
    "Diverged",
    "DivergenceGuard",
    "EarlyStopping",
    "FitResult",
    "FloatRange",
    "ForecastSeries",
    "Hyperparams",
    "IntRange",
    "KeepTopModels",
    "MissingModelError",
    "Objective",
    "OriginalUnits",
    "PruningCallback",
    "PruningSnapshot",
    "RecurrentNet",
    "SearchSpace",
    "SequenceData",
    "Split",
    "StudyConfig",
    "TrainState",
    "Trainer",
    "UsageError",
    "build_model",
    "fit_space",
    "load_best_model",
    "load_checkpoint",
    "load_dataset",
    "load_model_file",
    "metric_for",
]

try:
    __version__ = _version("optuna-rnn")
except PackageNotFoundError:  # a source tree on PYTHONPATH, never installed
    __version__ = "0+unknown"
