"""benchmarks/RESULTS.md stays whole and in step with the hand-written notes it quotes.

Each section's analysis lives in ``benchmarks/notes/<section>.md`` and is appended when the
section is re-run; an edit of a note that is not carried into RESULTS.md (or a hand edit that
drops a section marker) leaves the published results contradicting their own tables.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.__main__ import SECTIONS, _split

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
