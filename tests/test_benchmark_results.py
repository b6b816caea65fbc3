"""benchmarks/RESULTS.md stays whole and in step with the hand-written notes it quotes, and the
helpers that compute its figures hold to what the tables say.

Each section's analysis lives in ``benchmarks/notes/<section>.md`` and is appended when the
section is re-run; an edit of a note that is not carried into RESULTS.md (or a hand edit that
drops a section marker) leaves the published results contradicting their own tables.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from benchmarks.__main__ import SECTIONS, _split
from benchmarks.budget import BudgetRun
from benchmarks.search_quality import epochs_to_reach

HERE = Path(__file__).resolve().parents[1] / "benchmarks"
RESULTS = _split((HERE / "RESULTS.md").read_text())


def test_every_section_is_published() -> None:
    assert list(RESULTS) == list(SECTIONS)


@pytest.mark.parametrize("name", SECTIONS)
def test_a_section_names_its_command_and_quotes_its_current_note(name: str) -> None:
    body = RESULTS[name]
    assert f"Command: `python -m benchmarks --only {name}`" in body
    note = HERE / "notes" / f"{name}.md"
    assert note.read_text() + "\n" in body, f"RESULTS.md's {name} section quotes an older {note.name}"


def test_epochs_to_reach_ignores_the_trial_that_crossed_the_budget() -> None:
    run = BudgetRun(
        dataset="d",
        method="m",
        seed=0,
        direction="maximize",
        curve=[(40, 0.5), (90, 0.7), (130, 0.9)],  # the last trial ran past a budget of 120
        trials=2,
        pruned=0,
        best_params={},
        all_params=[],
        test_value=None,
    )
    assert epochs_to_reach(run, 0.7, 120) == 90
    assert epochs_to_reach(run, 0.9, 120) == math.inf  # was 130: "reached" past the budget
    assert epochs_to_reach(run, 0.9, 130) == 130
