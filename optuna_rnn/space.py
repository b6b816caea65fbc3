"""The search space of a recurrent network and the hyperparameters sampled from it.

Every field of :class:`SearchSpace` is either a range (:class:`IntRange`,
:class:`FloatRange`), a :class:`Choice`, or a plain value that fixes the
parameter (and so removes it from the search). Conditional parameters are
sampled only where they mean something: the LSTM forget-gate bias only for
LSTM cells, ``momentum``/``nesterov`` only for SGD, ``beta1``/``beta2`` only for
Adam and AdamW, ``rmsprop_alpha`` only for RMSprop, ``window`` and ``forecast`` only
for forecasting. ``forecast`` is what a forecaster predicts: the target's ``level``, or its
``change`` from the last value the window holds (with that channel read relative to it), which
keeps a trending series' inputs and targets in the range training saw. Weight decay has two
parameters because it means two things:
``weight_decay`` is an L2 penalty for SGD, Adam and RMSprop, whose useful
strengths are small; ``adamw_weight_decay`` is AdamW's decoupled decay, which
shrinks the weights by ``lr * decay`` a step and needs values a hundred times
larger to do anything (PyTorch's default is 1e-2). Either lands in
:attr:`Hyperparams.weight_decay`, the optimiser's own argument.

Dropout is always sampled: it is applied to the recurrent output before the
head, and between stacked layers when ``num_layers > 1``.

Example::

    import optuna
    from optuna_rnn import IntRange, SearchSpace

    space = SearchSpace(cell="lstm", hidden_size=IntRange(16, 64, log=True))
    study = optuna.create_study()
    trial = study.ask()
    hp = space.suggest(trial)
    assert hp.cell == "lstm" and 16 <= hp.hidden_size <= 64
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, TypeAlias

import numpy as np
import optuna

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, from PyPI
    import tomli as tomllib

from optuna_rnn.errors import UsageError

Task = Literal["classification", "forecasting"]


def check_task(task: object) -> None:
    """Raise :class:`UsageError` unless ``task`` is ``classification`` or ``forecasting``: a typo
    would otherwise quietly mean the other one (no window sampled, or RMSE minimised)."""
    if task not in ("classification", "forecasting"):
        raise UsageError(f"task must be 'classification' or 'forecasting', got {task!r}")


CELLS = ("lstm", "gru", "rnn")
INPUT_INITS = (
    "xavier_uniform",
    "xavier_normal",
    "kaiming_uniform",
    "kaiming_normal",
    "uniform",
    "normal",
)
RECURRENT_INITS = ("orthogonal", *INPUT_INITS)
OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd")
FORECASTS = ("level", "change")

Scalar: TypeAlias = bool | int | float | str | None
# Grid search enumerates every combination up front: refuse grids that would not fit.
MAX_GRID_POINTS = 100_000


@dataclass(frozen=True)
class IntRange:
    """An integer range ``[low, high]``, sampled on a log scale when ``log``."""

    low: int
    high: int
    log: bool = False
    step: int = 1

    def __post_init__(self) -> None:
        _plain_fields(self)


@dataclass(frozen=True)
class FloatRange:
    """A float range ``[low, high]``, sampled on a log scale when ``log``."""

    low: float
    high: float
    log: bool = False

    def __post_init__(self) -> None:
        _plain_fields(self)


@dataclass(frozen=True)
class Choice:
    """A categorical choice among ``options``."""

    options: tuple[Scalar, ...]

    def __init__(self, options: Sequence[Scalar]) -> None:
        if isinstance(options, str | bytes):  # else Choice("gru") would be the choice of "g", "r", "u"
            raise UsageError(
                f"Choice takes a list of options, got the string {options!r}: Choice([{options!r}])"
            )
        object.__setattr__(self, "options", tuple(_plain(o) for o in options))


def _plain(value: Any) -> Any:
    """A NumPy scalar (``np.int64(16)``, ``np.True_``) as the Python value it holds."""
    return value.item() if isinstance(value, np.generic) else value


def _plain_fields(spec: Any) -> None:
    for f in dataclasses.fields(spec):
        object.__setattr__(spec, f.name, _plain(getattr(spec, f.name)))
    if not isinstance(spec.log, bool):  # log=1 would be recorded as 1, which reading back refuses
        raise UsageError(f"{type(spec).__name__}: log must be True or False, got {spec.log!r}")


Spec: TypeAlias = IntRange | FloatRange | Choice | bool | int | float | str | None


@dataclass(frozen=True)
class Hyperparams:
    """One concrete configuration of a recurrent network and its training.

    Parameters that do not apply (``forget_bias`` for a GRU, ``momentum`` for
    Adam) keep their defaults and are ignored by the model and optimiser.
    """

    cell: str = "lstm"
    hidden_size: int = 64
    num_layers: int = 1
    bidirectional: bool = False
    dropout: float = 0.0
    input_init: str = "xavier_uniform"
    recurrent_init: str = "orthogonal"
    forget_bias: float = 1.0
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    nesterov: bool = False
    beta1: float = 0.9
    beta2: float = 0.999
    rmsprop_alpha: float = 0.99
    batch_size: int = 64
    window: int | None = None
    forecast: str = "level"
    grad_clip: float | None = 1.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = _plain(getattr(self, f.name))
            if not (f.name == "window" and value is None):  # None: not a forecasting model
                _check_value(f.name, value)
            if f.name in _INT_PARAMS and isinstance(value, float):
                value = int(value)
            object.__setattr__(self, f.name, value)

    def to_dict(self) -> dict[str, Any]:
        """Plain values, suitable for JSON and for ``Hyperparams(**d)``."""
        return dataclasses.asdict(self)


_INT_PARAMS = {"hidden_size", "num_layers", "batch_size", "window"}
_CATEGORICAL_VALUES: dict[str, tuple[Scalar, ...]] = {
    "cell": CELLS,
    "input_init": INPUT_INITS,
    "recurrent_init": RECURRENT_INITS,
    "optimizer": OPTIMIZERS,
    "bidirectional": (False, True),
    "nesterov": (False, True),
    "forecast": FORECASTS,
}
# Parameters that may be switched off entirely with ``None`` (TOML: "none").
_NULLABLE = {"grad_clip"}
# Inclusive bounds every sampled value must respect, whatever the user asks for.
_BOUNDS: dict[str, tuple[float, float]] = {
    "hidden_size": (1, 1 << 16),
    "num_layers": (1, 64),
    "batch_size": (1, 1 << 20),
    "window": (1, 1 << 20),
    "dropout": (0.0, 0.99),
    "lr": (1e-12, 100.0),
    "weight_decay": (0.0, 10.0),
    "adamw_weight_decay": (0.0, 10.0),
    "momentum": (0.0, 0.9999),
    "beta1": (0.0, 0.9999),
    "beta2": (0.0, 0.99999),
    "rmsprop_alpha": (0.0, 0.99999),
    "forget_bias": (-10.0, 10.0),
    "grad_clip": (1e-6, 1e6),
}


@dataclass(frozen=True)
class SearchSpace:
    """Where each hyperparameter of :class:`Hyperparams` is searched.

    Defaults follow common practice for recurrent nets: log-scaled hidden size
    and learning rate, orthogonal recurrent weights as an option, a forget-gate
    bias near 1 for LSTMs, gradient clipping, and optimisers with their own
    conditional parameters. Pass a plain value to fix a parameter, a narrower
    range to narrow it. Ranges are checked when the space is built: an impossible
    one raises :class:`~optuna_rnn.errors.UsageError`.
    """

    cell: Spec = Choice(CELLS)
    hidden_size: Spec = IntRange(16, 256, log=True)
    num_layers: Spec = IntRange(1, 2)
    bidirectional: Spec = Choice((False, True))
    dropout: Spec = FloatRange(0.0, 0.5)
    input_init: Spec = Choice(INPUT_INITS)
    recurrent_init: Spec = Choice(("orthogonal", "xavier_uniform", "uniform"))
    forget_bias: Spec = FloatRange(0.0, 2.0)
    optimizer: Spec = Choice(OPTIMIZERS)
    lr: Spec = FloatRange(3e-4, 3e-2, log=True)
    weight_decay: Spec = FloatRange(1e-8, 1e-3, log=True)
    adamw_weight_decay: Spec = FloatRange(1e-4, 1e-1, log=True)
    momentum: Spec = FloatRange(0.5, 0.99)
    nesterov: Spec = Choice((False, True))
    beta1: Spec = FloatRange(0.8, 0.95)
    beta2: Spec = Choice((0.99, 0.999))
    rmsprop_alpha: Spec = FloatRange(0.9, 0.999)
    batch_size: Spec = Choice((32, 64, 128, 256))
    window: Spec = IntRange(8, 64, log=True)
    forecast: Spec = Choice(FORECASTS)
    grad_clip: Spec = FloatRange(0.25, 5.0, log=True)

    def __post_init__(self) -> None:
        for f in self._param_fields():
            object.__setattr__(self, f.name, _plain(getattr(self, f.name)))
            _check_spec(f.name, getattr(self, f.name))
            if f.name in _INT_PARAMS:  # 64.0 from a file is the whole number 64 that PyTorch needs
                object.__setattr__(self, f.name, _whole(getattr(self, f.name)))

    @staticmethod
    def _param_fields() -> list[dataclasses.Field[Any]]:
        return list(fields(SearchSpace))

    @classmethod
    def param_names(cls) -> list[str]:
        """Names of all hyperparameters a space can hold."""
        return [f.name for f in cls._param_fields()]

    def replace(self, **changes: Spec) -> SearchSpace:
        """A copy with some parameters fixed, narrowed or widened."""
        unknown = set(changes) - set(self.param_names())
        if unknown:
            raise UsageError(_unknown_message(sorted(unknown)[0]))
        return dataclasses.replace(self, **changes)

    # --- sampling -----------------------------------------------------------------

    def suggest(
        self, trial: optuna.Trial | optuna.trial.FixedTrial, *, task: Task = "classification"
    ) -> Hyperparams:
        """Sample one configuration from ``trial``; conditional parameters only where they apply."""
        check_task(task)
        values: dict[str, Any] = {}
        for name in self.param_names():  # in field order: cell and optimizer before what they decide
            if _applies(name, task=task, cell=values.get("cell", ""), optimizer=values.get("optimizer", "")):
                values[_HYPERPARAM.get(name, name)] = _suggest(trial, name, getattr(self, name))
        return Hyperparams(**values)

    def hyperparams_from(self, params: Mapping[str, Any], *, task: Task) -> Hyperparams:
        """Rebuild the :class:`Hyperparams` of a finished trial from its ``params``."""
        params = dict(params)
        if (
            params.get("optimizer") == "adamw"
            and "adamw_weight_decay" not in params
            and "weight_decay" in params
        ):
            # a trial from before AdamW had its own range recorded its decay as weight_decay
            params["adamw_weight_decay"] = params.pop("weight_decay")
        return self.suggest(optuna.trial.FixedTrial(params), task=task)

    def grid(self, *, task: Task, points: int = 3) -> dict[str, list[Scalar]]:
        """A finite grid over this space for :class:`optuna.samplers.GridSampler`.

        Choices keep all their options; ranges are cut into ``points`` values (as in
        :meth:`gridded`). The grid is the product of every parameter that applies in some
        configuration, so a point that differs only in a parameter its configuration does
        not use (SGD's momentum for Adam) repeats a configuration; :meth:`grid_size` counts
        the distinct ones. A grid of more than ``MAX_GRID_POINTS`` points is refused: grid
        search suits small spaces, so fix or narrow parameters first.
        """
        gridded = self.gridded(task=task, points=points)
        grid: dict[str, list[Scalar]] = {}
        for name in self.param_names():
            spec = getattr(gridded, name)
            if isinstance(spec, Choice) and self._may_apply(name, task):
                grid[name] = list(spec.options)
        size = math.prod(len(values) for values in grid.values())
        if size > MAX_GRID_POINTS:
            widest = sorted(grid, key=lambda n: -len(grid[n]))[:4]
            raise UsageError(
                f"the grid over this space has {size:,} points (limit {MAX_GRID_POINTS:,}); "
                f"fix or narrow parameters with --space, e.g. {', '.join(widest)}"
            )
        return grid

    def _may_apply(self, name: str, task: Task) -> bool:
        """Whether a conditional parameter can be sampled at all in this space."""

        def options(spec: Spec) -> tuple[Scalar, ...]:
            return spec.options if isinstance(spec, Choice) else (spec,)  # type: ignore[return-value]

        return any(
            _applies(name, task=task, cell=str(cell), optimizer=str(optimizer))
            for cell in options(self.cell)
            for optimizer in options(self.optimizer)
        )

    def gridded(self, *, task: Task, points: int = 3) -> SearchSpace:
        """This space with every range cut into ``points`` values: the configurations a grid holds.

        Choices keep all their options; ranges become a choice of ``points`` values
        (geometric for log ranges, on the range's steps).
        """
        changes: dict[str, Spec] = {}
        for name in self.param_names():
            spec = getattr(self, name)
            if isinstance(spec, IntRange | FloatRange):
                values = _range_points(spec, points)
                changes[name] = values[0] if len(values) == 1 else Choice(values)
        return self.replace(**changes)

    def grid_size(self, *, task: Task) -> int:
        """How many distinct configurations a grid over this (gridded) space holds.

        A conditional parameter multiplies only the branches where it applies: a
        momentum grid adds SGD configurations, not Adam ones.
        """

        def options(name: str) -> tuple[Scalar, ...]:
            spec = getattr(self, name)
            if isinstance(spec, IntRange | FloatRange):
                raise ValueError(f"{name}: a range has no grid size; call gridded() first")
            return spec.options if isinstance(spec, Choice) else (spec,)

        size = 0
        for cell in options("cell"):
            for optimizer in options("optimizer"):
                branch = {"cell": str(cell), "optimizer": str(optimizer)}
                counts = [
                    len(options(name))
                    for name in self.param_names()
                    if name not in branch and _applies(name, task=task, **branch)
                ]
                size += math.prod(counts)
        return size

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly description, the inverse of :meth:`from_dict`."""
        out: dict[str, Any] = {}
        for name in self.param_names():
            spec = getattr(self, name)
            if isinstance(spec, IntRange | FloatRange):
                out[name] = {"low": spec.low, "high": spec.high, "log": spec.log}
                if isinstance(spec, IntRange) and spec.step != 1:
                    out[name]["step"] = spec.step
            elif isinstance(spec, Choice):
                out[name] = list(spec.options)
            else:
                out[name] = "none" if spec is None else spec
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "space") -> SearchSpace:
        """Build a space from the defaults changed by ``data``.

        A list is a choice, a table ``{low, high, log}`` a range, anything else a
        fixed value; ``"none"`` switches off a parameter that allows it
        (``grad_clip``). ``source`` names the file in error messages.
        """
        changes: dict[str, Spec] = {}
        for name, value in data.items():
            if name not in cls.param_names():
                raise UsageError(f"{source}: {_unknown_message(name)}")
            try:
                changes[name] = _spec_from_value(name, value)
            except UsageError as exc:
                raise UsageError(f"{source}: {exc}") from None
        try:
            return cls(**changes)
        except UsageError as exc:
            raise UsageError(f"{source}: {exc}") from None

    @classmethod
    def from_toml(cls, path: str | Path) -> SearchSpace:
        """Read a space from a TOML file: keys at the top level or under ``[space]``."""
        path = Path(path)
        try:
            with path.open("rb") as file:  # TOML is UTF-8 whatever the locale
                data = tomllib.load(file)
        except FileNotFoundError:
            raise UsageError(f"{path}: search-space file not found") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise UsageError(f"{path}: not valid TOML ({exc})") from None
        except OSError as exc:
            raise UsageError(f"{path}: cannot read the search-space file ({exc.strerror})") from None
        if "space" in data and isinstance(data["space"], dict):
            outside = [name for name in data if name != "space"]
            if outside:
                raise UsageError(
                    f"{path}: {', '.join(map(repr, outside))} outside the [space] table would be "
                    "ignored; put every hyperparameter under [space], or drop the table header"
                )
            data = data["space"]
        return cls.from_dict(data, source=str(path))

    def refuse_for_new_study(self) -> None:
        """Refuse what would silently mislead a new study, checked when it is created (a study
        made before these checks resumes as it was):

        - an option listed twice (``[32, 32.0]``): a grid would run its configurations twice and
          never count itself done;
        - an integer range whose ``step`` does not reach ``high`` (32 to 100 by 32): Optuna would
          quietly stop at 96;
        - a parameter changed from its default that no cell or optimiser of this space uses:
          fixing ``weight_decay`` for AdamW, which reads ``adamw_weight_decay``, changes nothing.
          (A ``window`` or ``forecast`` is not refused for classification: one space file may
          serve both tasks.)
        """
        for name in self.param_names():
            spec = getattr(self, name)
            if isinstance(spec, IntRange) and (spec.high - spec.low) % spec.step:
                top = spec.high - (spec.high - spec.low) % spec.step
                raise UsageError(
                    f"--space: {name}: steps of {spec.step} from {spec.low} never reach {spec.high}; "
                    f"write high = {top} (the last value Optuna would draw)"
                )
            options = spec.options if isinstance(spec, Choice) else ()
            for i, option in enumerate(options):
                if option in options[:i]:  # 32 == 32.0 too
                    raise UsageError(f"--space: {name}: {option!r} is listed twice; list each option once")
        cells, optimizers = _options(self.cell), _options(self.optimizer)
        default = SearchSpace()
        for name in self.param_names():
            if (
                getattr(self, name) == getattr(default, name)
                or name in ("window", "forecast")
                or any(
                    _applies(name, task="forecasting", cell=c, optimizer=o) for c in cells for o in optimizers
                )
            ):
                continue
            users = {
                "forget_bias": "the lstm cell",
                "weight_decay": "sgd, adam and rmsprop (AdamW reads adamw_weight_decay)",
                "adamw_weight_decay": "adamw",
                "momentum": "sgd",
                "nesterov": "sgd",
                "beta1": "adam and adamw",
                "beta2": "adam and adamw",
                "rmsprop_alpha": "rmsprop",
            }.get(name, "other settings")
            raise UsageError(
                f"--space: {name} would have no effect: only {users} uses it, and this space's "
                f"cell is {' or '.join(cells)} and its optimizer {' or '.join(optimizers)}"
            )


def _unknown_message(name: str) -> str:
    return f"unknown hyperparameter {name!r}; known: {', '.join(SearchSpace.param_names())}"


def _spec_from_value(name: str, value: Any) -> Spec:
    if isinstance(value, Mapping):
        extra = sorted(set(value) - {"low", "high", "log", "step"})
        if extra:
            raise UsageError(f"{name}: unknown key {extra[0]!r} in a range; it takes low, high, log, step")
        if not {"low", "high"} <= set(value):
            raise UsageError(f"{name}: a range needs 'low' and 'high' (and optionally 'log' or 'step')")
        log = value.get("log", False)
        if not isinstance(log, bool):
            raise UsageError(f"{name}: 'log' must be true or false, got {log!r}")
        low, high = _range_number(name, "low", value["low"]), _range_number(name, "high", value["high"])
        if name in _INT_PARAMS:
            step = _range_number(name, "step", value.get("step", 1))
            return IntRange(int(low), int(high), log, int(step))
        if "step" in value:
            raise UsageError(f"{name}: 'step' applies to integer ranges only")
        return FloatRange(float(low), float(high), log)
    if isinstance(value, list):
        return Choice([_none_if(v) for v in value])
    return _none_if(value)


def _range_number(name: str, key: str, value: Any) -> float:
    """``value`` of a range table's ``key``, refused rather than coerced when it is not a number."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise UsageError(f"{name}: {key!r} must be a number, got {value!r}")
    if (name in _INT_PARAMS or key == "step") and not float(value).is_integer():
        raise UsageError(f"{name}: {key!r} must be a whole number, got {value!r}")
    return value


def _none_if(value: Any) -> Any:
    return None if isinstance(value, str) and value.lower() == "none" else value


def _check_value(name: str, value: Any) -> None:
    if value is None:
        if name in _NULLABLE:
            return
        raise UsageError(f"{name}: cannot be switched off")
    if name in _CATEGORICAL_VALUES:
        allowed = _CATEGORICAL_VALUES[name]
        if value not in allowed or type(value) is not type(allowed[0]):
            if isinstance(allowed[0], bool):  # TOML's spelling; Python's True/False reads the same
                raise UsageError(f"{name}: {value!r} is neither true nor false")
            raise UsageError(f"{name}: {value!r} is not one of {', '.join(map(str, allowed))}")
        return
    if isinstance(value, list | tuple | dict):  # a TOML file's spellings, given to the Python API
        raise UsageError(
            f"{name}: expected a number, got {value!r}; in Python give Choice([...]), "
            "IntRange(low, high) or FloatRange(low, high)"
        )
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UsageError(f"{name}: expected a number, got {value!r}")
    if name in _INT_PARAMS and not float(value).is_integer():
        raise UsageError(f"{name}: expected a whole number, got {value!r}")
    lo, hi = _BOUNDS[name]
    if not (lo <= value <= hi) or not math.isfinite(value):
        raise UsageError(f"{name}: {value!r} is outside the allowed [{lo:g}, {hi:g}]")


def _check_spec(name: str, spec: Spec) -> None:
    if isinstance(spec, IntRange | FloatRange):
        if name in _CATEGORICAL_VALUES:
            raise UsageError(f"{name}: takes a choice, not a range")
        if isinstance(spec, IntRange) and name not in _INT_PARAMS:
            raise UsageError(f"{name}: takes a float range (FloatRange)")
        if isinstance(spec, FloatRange) and name in _INT_PARAMS:
            raise UsageError(f"{name}: takes an integer range (IntRange)")
        if spec.low > spec.high:
            raise UsageError(f"{name}: empty range, low {spec.low:g} > high {spec.high:g}")
        if spec.log and spec.low <= 0:
            raise UsageError(f"{name}: a log range needs low > 0, got {spec.low:g}")
        if isinstance(spec, IntRange) and spec.step < 1:
            raise UsageError(f"{name}: step must be >= 1")
        if isinstance(spec, IntRange) and spec.log and spec.step != 1:
            raise UsageError(f"{name}: a log range cannot have a step (Optuna samples it continuously)")
        _check_value(name, spec.low)
        _check_value(name, spec.high)
    elif isinstance(spec, Choice):
        if not spec.options:
            raise UsageError(f"{name}: a choice needs at least one option")
        for option in spec.options:
            _check_value(name, option)
    else:
        _check_value(name, spec)


def _whole(spec: Spec) -> Spec:
    """``spec`` of an integer parameter with its fixed value or options as ``int``."""
    if isinstance(spec, Choice):
        return Choice(tuple(int(o) if isinstance(o, float) else o for o in spec.options))
    if isinstance(spec, float):
        return int(spec)
    return spec


# Search-space parameters that fill a Hyperparams field of another name.
_HYPERPARAM = {"adamw_weight_decay": "weight_decay"}


def _options(spec: Spec) -> list[str]:
    """The values a categorical parameter may take."""
    return [str(o) for o in spec.options] if isinstance(spec, Choice) else [str(spec)]


def _applies(name: str, *, task: Task, cell: str, optimizer: str) -> bool:
    """Whether :meth:`SearchSpace.suggest` samples ``name`` for this cell, optimiser and task."""
    conditions = {
        "window": task == "forecasting",
        "forecast": task == "forecasting",
        "forget_bias": cell == "lstm",
        "weight_decay": optimizer != "adamw",
        "adamw_weight_decay": optimizer == "adamw",
        "momentum": optimizer == "sgd",
        "nesterov": optimizer == "sgd",
        "beta1": optimizer in ("adam", "adamw"),
        "beta2": optimizer in ("adam", "adamw"),
        "rmsprop_alpha": optimizer == "rmsprop",
    }
    return conditions.get(name, True)


def _suggest(trial: optuna.Trial | optuna.trial.FixedTrial, name: str, spec: Spec) -> Any:
    if isinstance(spec, IntRange):
        return trial.suggest_int(name, spec.low, spec.high, log=spec.log, step=spec.step)
    if isinstance(spec, FloatRange):
        return trial.suggest_float(name, spec.low, spec.high, log=spec.log)
    if isinstance(spec, Choice):
        if len(spec.options) == 1:
            return spec.options[0]
        return trial.suggest_categorical(name, spec.options)
    return spec


def _range_points(spec: IntRange | FloatRange, points: int) -> list[Scalar]:
    if points < 2 or spec.low == spec.high:
        return [spec.low]
    if spec.log:
        ratio = spec.high / spec.low
        raw = [spec.low * ratio ** (i / (points - 1)) for i in range(points)]
    else:
        raw = [spec.low + (spec.high - spec.low) * i / (points - 1) for i in range(points)]
    if isinstance(spec, IntRange):
        top = spec.low + (spec.high - spec.low) // spec.step * spec.step  # the highest value Optuna draws
        return sorted({min(spec.low + round((v - spec.low) / spec.step) * spec.step, top) for v in raw})
    # Rounding can merge neighbouring points of a very narrow range: each point once.
    return list(dict.fromkeys(min(max(float(f"{v:.6g}"), spec.low), spec.high) for v in raw))
