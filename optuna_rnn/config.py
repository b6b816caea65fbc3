"""The configuration a study records, so that any worker can rebuild its objective.

A :class:`StudyConfig` is stored as JSON in the study's user attrs under
``optuna_rnn.config``. ``worker``, ``best``, ``report`` and a resumed ``run``
read it back and need nothing but the study name and the storage. A ``run``
that asks for something different is refused (:func:`merge_config`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from optuna_rnn.datasets import DatasetSpec
from optuna_rnn.errors import ConfigMismatchError, UsageError
from optuna_rnn.space import SearchSpace

CONFIG_ATTR = "optuna_rnn.config"
SAMPLERS = ("tpe", "gp", "cmaes", "random", "grid", "qmc")
PRUNERS = ("median", "hyperband", "successive-halving", "percentile", "patient", "none")


@dataclass(frozen=True)
class StudyConfig:
    """Everything that defines a study's objective, sampler and pruner."""

    dataset: DatasetSpec
    space: SearchSpace = field(default_factory=SearchSpace)
    max_epochs: int = 30
    patience: int | None = 10
    sampler: str = "tpe"
    pruner: str = "median"
    seed: int | None = None
    artifacts: str | None = None
    keep_top: int | None = None  # keep only the best k trials' weights; None keeps all

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise UsageError(f"unknown sampler {self.sampler!r}; choose from {', '.join(SAMPLERS)}")
        if self.pruner not in PRUNERS:
            raise UsageError(f"unknown pruner {self.pruner!r}; choose from {', '.join(PRUNERS)}")
        if self.max_epochs < 1:
            raise UsageError(f"--max-epochs (max_epochs) must be >= 1, got {self.max_epochs}")
        if self.patience is not None and self.patience < 1:
            raise UsageError(f"--patience (patience) must be >= 1, got {self.patience}")
        if self.keep_top is not None and self.keep_top < 1:
            raise UsageError(f"--keep-top (keep_top) must be >= 1, got {self.keep_top}")
        if self.seed is not None and not 0 <= self.seed < 2**32:  # what Optuna's samplers accept
            raise UsageError(f"--seed (seed) must be in [0, {2**32 - 1}], got {self.seed}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form, as recorded on the study."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["dataset"] = self.dataset.to_dict()
        out["space"] = self.space.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StudyConfig:
        values = dict(data)
        values["dataset"] = DatasetSpec(**values["dataset"])
        # a study recorded before `forecast` was a parameter forecast levels, and goes on doing so
        space = {"forecast": "level", **values["space"]}
        values["space"] = SearchSpace.from_dict(space, source="recorded space")
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


def merge_config(given: Mapping[str, Any], recorded: Mapping[str, Any] | None) -> StudyConfig:
    """The configuration of a run: ``given`` options over the ``recorded`` ones.

    ``given`` holds only what the user said explicitly (``dataset`` as a
    :class:`DatasetSpec`, ``space`` as a :class:`SearchSpace`, other fields as
    plain values). For a new study (``recorded`` is ``None``) the rest take
    their defaults. For an existing one, anything given must equal what was
    recorded, or :class:`ConfigMismatchError` says what differs.
    """
    if recorded is None:
        if "dataset" not in given:
            raise UsageError("a new study needs --dataset NAME or --data PATH")
        return StudyConfig(**given)
    base = StudyConfig.from_dict(recorded)
    current = base.to_dict()
    before_forecast = "forecast" not in recorded.get("space", {})
    for name, value in given.items():
        if name == "space" and before_forecast and value.forecast == SearchSpace().forecast:
            value = value.replace(forecast=base.space.forecast)  # a --space file of that time, given again
        wanted = StudyConfig(**{**_fields(base), name: value}).to_dict()[name]
        if wanted != current[name] and not _same_anyway(name, value, base):
            if name == "dataset" and value.path is not None and _targets_agree(value, base.dataset):
                value = dataclasses.replace(value, target=base.dataset.target)  # not among the differences
                wanted = StudyConfig(**{**_fields(base), name: value}).to_dict()[name]
            was, asked = _difference(name, current[name], wanted)
            if name == "artifacts" and current[name] is None:
                was = "its artifacts beside the storage file (the default)"
            raise ConfigMismatchError(
                f"study was created with {was}, this run asks for {asked}; "
                "use the recorded value, drop the option, or choose a new --study"
            )
    return base


def _same_anyway(name: str, value: Any, base: StudyConfig) -> bool:
    """Whether ``value`` asks for what ``base`` recorded in other words: the same folder or file
    reached through a symbolic link, or a file's default target named explicitly."""
    if name == "artifacts":
        return base.artifacts is not None and os.path.realpath(value) == os.path.realpath(base.artifacts)
    if name != "dataset":
        return False
    recorded = base.dataset
    if value.path is not None and recorded.path is not None:
        if os.path.realpath(value.path) != os.path.realpath(recorded.path):
            return False
        value = dataclasses.replace(value, path=recorded.path)
    return value == recorded or _same_target(value, recorded)


def _difference(name: str, was: Any, asked: Any) -> tuple[str, str]:
    """``name=was`` and ``name=asked``, narrowed to the entries that differ when both are tables."""
    if isinstance(was, dict) and isinstance(asked, dict):
        keys = [k for k in dict.fromkeys([*was, *asked]) if was.get(k) != asked.get(k)]
        return (
            ", ".join(f"{name}.{k}={_short(was.get(k))}" for k in keys),
            ", ".join(f"{name}.{k}={_short(asked.get(k))}" for k in keys),
        )
    return f"{name}={_short(was)}", _short(asked)


def _same_target(given: DatasetSpec, recorded: DatasetSpec) -> bool:
    """Whether two specs of one file differ only in naming its default target or not.

    ``--target`` left out means the file's last numeric column: naming that column
    explicitly (or leaving it out where a study named it) asks for the same data.
    """
    if given.to_dict() | {"target": None} != recorded.to_dict() | {"target": None}:
        return False
    return _targets_agree(given, recorded)


def _targets_agree(given: DatasetSpec, recorded: DatasetSpec) -> bool:
    """Whether ``given`` and ``recorded`` name the same column of ``given``'s file, one of them
    perhaps by leaving its default out."""
    if given.target == recorded.target:
        return True
    if given.target is not None and recorded.target is not None:
        return False
    from optuna_rnn.data import ForecastSeries

    data = dataclasses.replace(given, target=None).load()  # the default is known only from the columns
    default = data.summary()["target"] if isinstance(data, ForecastSeries) else None
    return (given.target or default) == (recorded.target or default)


def _fields(config: StudyConfig) -> dict[str, Any]:
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."
