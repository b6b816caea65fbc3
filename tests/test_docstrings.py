"""Every ``Example::`` in the package's docstrings runs as written."""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "optuna_rnn"


def _examples() -> dict[str, str]:
    """``module:object`` -> the code of its docstring's example (the indented block after ``Example::``)."""
    found = {}
    for path in sorted(PACKAGE.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in [tree, *(n for n in ast.walk(tree) if isinstance(n, (ast.ClassDef, ast.FunctionDef)))]:
            doc = ast.get_docstring(node, clean=True)
            if not doc or "Example::" not in doc:
                continue
            lines = []
            for line in doc.split("Example::", 1)[1].splitlines()[1:]:
                if line.strip() and not line.startswith(" "):
                    break  # the prose after the block
                lines.append(line)
            found[f"{path.stem}:{getattr(node, 'name', '<module>')}"] = textwrap.dedent("\n".join(lines))
    return found


EXAMPLES = _examples()


def test_the_examples_are_found() -> None:
    assert {"training:<module>", "callbacks:Checkpoint", "objective:<module>"} <= set(EXAMPLES)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_the_docstring_example_runs(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # examples may write files (a checkpoint)
    code = EXAMPLES[name]
    assert code.strip(), name
    exec(compile(code, f"<{name} example>", "exec"), {"__name__": "__example__"})
