"""`optuna-rnn report`: self-contained plotly HTML files and summary.md, also while a study runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from optuna_rnn.report import write_report

PLOTLY_JS_MIN_BYTES = 1_000_000  # plotly.js embedded, so the file opens offline
PER_OBJECTIVE = ("history", "importances", "parallel_coordinate", "slice")


def figure(path: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The data and layout of the plotly figure an HTML file draws."""
    text = path.read_text()
    assert len(text) > PLOTLY_JS_MIN_BYTES and "<script src=" not in text, (
        f"{path.name} is not self-contained"
    )
    call = text.index("Plotly.newPlot(")
    decoder = json.JSONDecoder()
    data, end = decoder.raw_decode(text, text.index("[", call))
    layout, _ = decoder.raw_decode(text, text.index("{", end))
    return data, layout


def test_report_on_a_running_study(run_cli, tuned_study, tmp_path) -> None:
    shutil.copy(tuned_study.folder / "optuna-rnn.db", tmp_path / "study.db")
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.load_study(study_name=tuned_study.name, storage=storage)
    running = study.ask()  # a trial still training: one epoch reported, no value yet
    running.report(0.5, 1)

    # In a C locale: the summary's en dashes are written as UTF-8 whatever the locale says.
    c_locale = {"LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    out = run_cli("report", "--study", tuned_study.name, "--storage", storage, "--out", "report", **c_locale)
    assert out.returncode == 0, out.stderr
    folder = tmp_path / "report"
    assert "–" in (folder / "summary.md").read_text(encoding="utf-8")
    names = {"history", "importances", "parallel_coordinate", "slice", "intermediate_values"}
    assert {p.name for p in folder.iterdir()} == {f"{n}.html" for n in names} | {"summary.md"}

    trials = study.trials
    complete = sorted(t.value for t in trials if t.state == TrialState.COMPLETE)
    reported = {t.number for t in trials if t.intermediate_values}
    assert running.number in reported and len(complete) < len(reported) - 1  # pruned trials too

    data, layout = figure(folder / "history.html")
    assert sorted(data[0]["y"]) == complete  # one point per complete trial
    assert tuned_study.name in layout["title"]["text"]

    data, _ = figure(folder / "intermediate_values.html")
    assert {int(t["name"].removeprefix("Trial")) for t in data} == reported  # RUNNING one included
    running_trace = next(t for t in data if t["name"] == f"Trial{running.number}")
    assert running_trace["y"] == [0.5]

    data, layout = figure(folder / "slice.html")
    axis = next(k for k, v in layout.items() if k.startswith("xaxis") and v["title"]["text"] == "cell")
    (cells,) = [t for t in data if t.get("xaxis", "x") == axis.replace("axis", "")]
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert sorted(cells["marker"]["color"]) == [t.number for t in done]  # a point per complete trial
    shown = sorted(zip(cells["marker"]["color"], [x.strip("'") for x in cells["x"]], strict=True))
    assert shown == [(t.number, t.params["cell"]) for t in done]

    data, _ = figure(folder / "parallel_coordinate.html")
    lines = [t for t in data if t.get("mode") == "lines"]
    assert sorted(float(t["customdata"][0][1]) for t in lines) == pytest.approx(complete, rel=1e-2)

    data, _ = figure(folder / "importances.html")
    assert set(data[0]["y"]) <= set(study.best_trial.params) and len(data[0]["y"]) >= 3

    summary = (folder / "summary.md").read_text()
    best = study.best_trial
    test = study.user_attrs["optuna_rnn.best_test"]
    assert summary.startswith(f"# Study report: {tuned_study.name}")
    assert "still running: 1 trials had no result yet" in summary
    assert f"Trial **#{best.number}**: accuracy **{best.value:.4g}** (validation)" in summary
    assert f"test accuracy **{test['test_value']:.4g}**" in summary
    assert "## Search space" in summary and "- [history.html](history.html)" in summary


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_report_of_a_multi_objective_study_has_a_pareto_front(tmp_path) -> None:
    study = optuna.create_study(
        study_name="two", storage=f"sqlite:///{tmp_path / 'two.db'}", directions=["minimize", "maximize"]
    )
    study.set_metric_names(["loss", "speed"])
    study.optimize(lambda t: (t.suggest_float("x", 0, 1) ** 2, t.suggest_float("y", 0, 1)), n_trials=12)
    written = write_report(study, tmp_path / "out")
    assert {p.name for p in written} == {
        *(
            f"{n}-{m}.html"
            for n in ("history", "importances", "parallel_coordinate", "slice")
            for m in ("loss", "speed")
        ),
        "pareto_front.html",
        "summary.md",
    }
    data, _ = figure(tmp_path / "out" / "pareto_front.html")
    assert sum(len(t["x"]) for t in data) == 12  # every trial, on the front or not
    data, _ = figure(tmp_path / "out" / "history-speed.html")
    assert sorted(data[0]["y"]) == sorted(t.values[1] for t in study.trials)
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert f"## Pareto front\n\n{len(study.best_trials)} trials:" in summary

    study.set_metric_names(["val loss", "val/loss"])  # the same file name once slugged
    written = write_report(study, tmp_path / "same")
    assert {p.name for p in written if p.name.startswith("history")} == {
        "history-0-val_loss.html",
        "history-1-val_loss.html",
    }


def test_report_counts_trials_as_the_dashboard_note_does(tmp_path) -> None:
    study = optuna.create_study(study_name="failed", storage=f"sqlite:///{tmp_path / 'f.db'}")
    for _ in range(3):
        study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL))
    write_report(study, tmp_path / "out")
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert (
        "| complete | pruned | failed | running | waiting |" in summary and "| 0 | 0 | 3 | 0 | 0 |" in summary
    )
    assert "[history.html](history.html): nothing to plot" in summary  # was "no data yet"


def test_report_of_a_missing_study_exits_2(cli_in_process, tuned_study, tmp_path) -> None:
    out = cli_in_process("report", "--study", "nope", "--storage", tuned_study.storage, "--out", "report")
    assert out.returncode == 2 and "no study named 'nope'" in out.stderr
    assert not (tmp_path / "report").exists()
