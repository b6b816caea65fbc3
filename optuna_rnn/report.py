"""Static study reports: self-contained plotly HTML files and a markdown summary.

:func:`write_report` works on any Optuna study, finished or still running
(RUNNING trials are left out of the plots that need a final value, and shown
in the intermediate values as far as they got). Each HTML file embeds
plotly.js, so it opens offline and can be mailed on its own.

Files: ``history.html``, ``importances.html``, ``parallel_coordinate.html``,
``slice.html``, ``intermediate_values.html`` and ``summary.md``; a
multi-objective study gets the first four once per objective
(``history-<objective>.html``, ...) and ``pareto_front.html``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import optuna
import plotly.graph_objects as go
from optuna.importance import FanovaImportanceEvaluator
from optuna.trial import FrozenTrial, TrialState
from optuna.visualization import (
    plot_intermediate_values,
    plot_optimization_history,
    plot_parallel_coordinate,
    plot_param_importances,
    plot_pareto_front,
    plot_slice,
)

from optuna_rnn.artifacts import ranked_complete
from optuna_rnn.dashboard import baseline_text, config_sections, recorded
from optuna_rnn.workers import state_counts

SUMMARY = "summary.md"
TOP_TRIALS = 10
Target = Callable[[FrozenTrial], float] | None


def plots(study: optuna.Study) -> dict[str, tuple[str, Callable[[], go.Figure]]]:
    """File stem -> (title, figure maker) for every plot the report holds."""
    names = study.metric_names or [f"objective {i}" for i in range(len(study.directions))]
    targets: list[tuple[str, str, Target]] = [("", names[0], None)]
    if len(study.directions) > 1:
        slugs = [_slug(name) for name in names]
        # names that differ only in punctuation ("val loss", "val/loss") must not share files
        slugs = [f"{i}-{s}" if slugs.count(s) > 1 else s for i, s in enumerate(slugs)]
        targets = [(f"-{slugs[i]}", name, _objective(i)) for i, name in enumerate(names)]
    out: dict[str, tuple[str, Callable[[], go.Figure]]] = {}
    for suffix, name, target in targets:
        kw: dict[str, Any] = {"target": target, "target_name": name}
        evaluator = FanovaImportanceEvaluator(seed=0)  # repeatable importances
        out[f"history{suffix}"] = (
            f"Optimisation history ({name})",
            partial(plot_optimization_history, study, **kw),
        )
        out[f"importances{suffix}"] = (
            f"Parameter importances for {name} (fANOVA)",
            partial(plot_param_importances, study, evaluator=evaluator, **kw),
        )
        out[f"parallel_coordinate{suffix}"] = (
            f"Parallel coordinates ({name})",
            partial(plot_parallel_coordinate, study, **kw),
        )
        out[f"slice{suffix}"] = (f"Slice plot ({name})", partial(plot_slice, study, **kw))
    if len(study.directions) == 1:
        out["intermediate_values"] = (
            "Intermediate values (validation metric per epoch)",
            partial(plot_intermediate_values, study),
        )
    else:
        out["pareto_front"] = ("Pareto front", partial(plot_pareto_front, study, target_names=names))
    return out


def write_report(
    study: optuna.Study, out: str | os.PathLike[str], *, best_test: dict[str, Any] | None = None
) -> list[Path]:
    """Write the report of ``study`` into ``out`` (created if missing); returns the files written.

    ``best_test`` is the best trial's test record of an optuna-rnn study
    (``StudySession.best_test``), shown in the summary.
    """
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    notes: dict[str, str] = {}
    for stem, (title, make) in plots(study).items():
        try:
            figure = make()
        except (ValueError, RuntimeError) as exc:  # e.g. importances of a single-parameter space
            notes[stem] = f"not drawn: {exc}"
            continue
        figure.update_layout(title=f"{study.study_name}: {title}")
        if not figure.data:
            notes[stem] = "nothing to plot"
        path = folder / f"{stem}.html"
        figure.write_html(path, include_plotlyjs=True, full_html=True)
        written.append(path)
    summary = folder / SUMMARY
    summary.write_text(summary_markdown(study, written, notes, best_test=best_test), encoding="utf-8")
    written.append(summary)
    return written


# The labels and order of the dashboard note's progress table, and the queue.
_STATES = (
    ("complete", TrialState.COMPLETE),
    ("pruned", TrialState.PRUNED),
    ("failed", TrialState.FAIL),
    ("running", TrialState.RUNNING),
    ("waiting", TrialState.WAITING),
)


def summary_markdown(
    study: optuna.Study,
    files: list[Path],
    notes: dict[str, str],
    *,
    best_test: dict[str, Any] | None = None,
) -> str:
    """``summary.md``: trial counts, best trials, the top trials, the recorded configuration, the plots."""
    count = state_counts(study.get_trials(deepcopy=False))
    names = study.metric_names or [f"objective {i}" for i in range(len(study.directions))]
    goals = ", ".join(f"{d.name.lower()} {n}" for d, n in zip(study.directions, names, strict=True))
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"# Study report: {study.study_name}",
        "",
        f"Generated {generated}; objective: {goals}.",
        "",
        "## Trials",
        "",
        "| " + " | ".join(label for label, _ in _STATES) + " |",
        "| " + " | ".join("---:" for _ in _STATES) + " |",
        "| " + " | ".join(str(count[state]) for _, state in _STATES) + " |",
        "",
    ]
    if count[TrialState.RUNNING]:
        lines += [f"The study is still running: {count[TrialState.RUNNING]} trials had no result yet.", ""]
    config, data, _ = recorded(study)
    lines += _top_lines(study, names, best_test, baseline_text(data.get("baseline")))
    lines += config_sections(config, data, level=2)[1:]  # _top_lines ends with a blank line
    lines += ["", "## Plots", ""]
    for path in files:
        lines.append(
            f"- [{path.name}]({path.name})" + (f": {notes[path.stem]}" if path.stem in notes else "")
        )
    lines += [f"- {stem}: {note}" for stem, note in notes.items() if not any(p.stem == stem for p in files)]
    return "\n".join(lines) + "\n"


def _top_lines(
    study: optuna.Study, names: list[str], best_test: dict[str, Any] | None, baseline: str | None
) -> list[str]:
    if len(study.directions) > 1:
        front = sorted(study.best_trials, key=lambda t: t.number)
        header = ["## Pareto front", "", f"{len(front)} trials:", ""]
        return header + _table(front, names) + [""]
    ranked = ranked_complete(study)
    if not ranked:
        return ["## Best trial", "", "No trial has completed yet.", ""]
    best = ranked[0]
    text = f"Trial **#{best.number}**: {names[0]} **{best.value:.4g}** (validation)"
    if best_test is not None and best_test.get("trial") == best.number:
        text += f"; test {best_test.get('metric', names[0])} **{best_test['test_value']:.4g}**"
    params = [f"| `{k}` | {_fmt(v)} |" for k, v in best.params.items()]
    return [
        "## Best trial",
        "",
        text + "." + (f" {baseline}" if baseline else ""),
        "",
        "| parameter | value |",
        "| --- | --- |",
        *params,
        "",
        f"## Top {min(TOP_TRIALS, len(ranked))} trials",
        "",
        *_table(ranked[:TOP_TRIALS], names),
        "",
    ]


def _table(trials: list[FrozenTrial], names: list[str]) -> list[str]:
    params = sorted({k for t in trials for k in t.params})
    columns = ["trial", *names, "epochs", "seconds", *params]
    rows = [
        [
            f"#{t.number}",
            *(_fmt(v) for v in (t.values or [])),
            _fmt(t.user_attrs.get("epochs", "")),
            _fmt(t.user_attrs.get("seconds", "")),
            *(_fmt(t.params.get(k, "")) for k in params),
        ]
        for t in trials
    ]
    return [
        "| " + " | ".join(columns) + " |",
        "| " + " | ".join("---" for _ in columns) + " |",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def _objective(i: int) -> Callable[[FrozenTrial], float]:
    def value(trial: FrozenTrial) -> float:
        return float(trial.values[i])

    return value


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "objective"


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
