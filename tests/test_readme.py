"""The README's code runs as written (with fewer epochs and trials)."""

from __future__ import annotations

import re
from pathlib import Path

import optuna
import pytest

from optuna_rnn.cli import build_parser

README = Path(__file__).parent.parent / "README.md"


def _library_recipe() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("```python", text.index("## As a library")) + len("```python")
    return text[start : text.index("```", start)]


# A 35-row series serves windows of at most 9 steps: the default range (8 to 64) must be fitted to it.
SHORT = 'ForecastSeries(name="short", values=__import__("numpy").sin(__import__("numpy").arange(35) / 4))'


@pytest.mark.parametrize(
    "data", ['load_dataset("digits")', 'load_dataset("sunspots")', SHORT], ids=["digits", "sunspots", "short"]
)
def test_the_library_recipe_tunes_a_classifier_and_a_forecaster(data: str) -> None:
    code = "from optuna_rnn import ForecastSeries\n" + _library_recipe()
    for old, new in (
        ("max_epochs=20", "max_epochs=1"),
        ("n_trials=20", "n_trials=2"),
        ('load_dataset("digits")', data),
    ):
        assert old in code, old
        code = code.replace(old, new)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    namespace: dict[str, object] = {}
    studies: list[optuna.Study] = []
    original = optuna.create_study

    def keep(*args: object, **kwargs: object) -> optuna.Study:
        studies.append(original(*args, **kwargs))  # type: ignore[arg-type]
        return studies[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(optuna, "create_study", keep)
        exec(compile(code, str(README), "exec"), namespace)
    (study,) = studies
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert study.direction.name.lower() == ("maximize" if "digits" in data else "minimize")


def test_the_readmes_options_are_the_commands_own(capsys) -> None:
    helps = ""
    for command in ("datasets", "run", "worker", "best", "dashboard", "report"):
        with pytest.raises(SystemExit):
            build_parser().parse_args([command, "--help"])
        helps += capsys.readouterr().out
    named = set(re.findall(r"`(--[a-z-]+ [A-Z]+)", README.read_text(encoding="utf-8")))
    assert len(named) > 10
    assert sorted(option for option in named if not re.search(re.escape(option) + r"\b", helps)) == []


def test_the_readmes_choices_are_the_commands_own() -> None:
    from optuna_rnn.config import PRUNERS, SAMPLERS

    text = README.read_text(encoding="utf-8")
    for option, choices in (
        ("--sampler", SAMPLERS),
        ("--pruner", PRUNERS),
        ("--device", ("auto", "cpu", "cuda")),
    ):
        shown = re.findall(re.escape(option) + r" ([a-z-]+(?:\|[a-z-]+)+)`", text)
        assert shown, option
        assert all(tuple(s.split("|")) == tuple(choices) for s in shown), (option, shown)
