"""Shared fixtures: a CLI runner, tiny search spaces, and service checks.

Tests that need PostgreSQL, MySQL, Redis or Chromium call :func:`require_service`:
it skips when the service is missing, or fails when ``OPTUNA_RNN_REQUIRE_SERVICES=1``
(as in CI), so a missing service can never pass silently.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# A search space small enough that a trial takes a fraction of a second.
TINY_SPACE = """
cell = ["lstm", "gru"]
hidden_size = {low = 4, high = 12, log = true}
num_layers = 1
bidirectional = false
batch_size = [128, 256]
window = {low = 4, high = 12}
"""


def require_service(name: str, available: Callable[[], bool]) -> None:
    """Skip (or, in CI, fail) the calling test when ``name`` is not available."""
    try:
        ok = available()
    except Exception:
        ok = False
    if ok:
        return
    if os.environ.get("OPTUNA_RNN_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{name} is required (OPTUNA_RNN_REQUIRE_SERVICES=1) but not available")
    pytest.skip(f"{name} is not available")


@pytest.fixture
def tiny_space(tmp_path: Path) -> Path:
    path = tmp_path / "space.toml"
    path.write_text(TINY_SPACE)
    return path


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "optuna_rnn.cli", *args]


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "OPTUNA_RNN_STORAGE"}
    env.update(PYTHONUNBUFFERED="1", **extra)
    return env


@pytest.fixture
def run_cli(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ``optuna-rnn ARGS`` in ``tmp_path`` and return the completed process."""

    def run(*args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            cli_command(*args),
            cwd=tmp_path,
            env=cli_env(**env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run


@pytest.fixture
def cli_in_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Like ``run_cli``, but in this process: no interpreter and torch start-up (3-4 s a call).

    For tests of what a command does; what crosses a process boundary (signals, the console
    script's exit status, concurrent workers) is tested with ``run_cli``. ``timeout`` is ignored.
    """
    from optuna_rnn import cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OPTUNA_RNN_STORAGE", raising=False)

    def run(*args: str, timeout: float | None = None, **env: str) -> subprocess.CompletedProcess[str]:
        capsys.readouterr()
        try:
            with monkeypatch.context() as scoped:
                for key, value in env.items():
                    scoped.setenv(key, value)
                code = cli.main(list(args))
        except SystemExit as exc:  # argparse refuses the options
            code = exc.code if isinstance(exc.code, int) else 1
        out = capsys.readouterr()
        return subprocess.CompletedProcess(["optuna-rnn", *args], code, out.out, out.err)

    return run


@dataclass(frozen=True)
class TunedStudy:
    """A finished optuna-rnn study on disk: its folder, storage URL and name."""

    folder: Path
    storage: str
    name: str


@pytest.fixture(scope="session")
def tuned_study(tmp_path_factory: pytest.TempPathFactory) -> TunedStudy:
    """A digits study made by the CLI (tiny space, 8 trials, median pruning, best 3 models kept).

    Shared by several tests: read it, never change it (copy the database first).
    """
    folder = tmp_path_factory.mktemp("tuned")
    (folder / "space.toml").write_text(TINY_SPACE)
    args = ("--n-trials", "8", "--space", "space.toml", "--max-epochs", "4", "--seed", "0", "-q")
    out = subprocess.run(
        cli_command("run", "--dataset", "digits", "--keep-top", "3", *args),
        cwd=folder,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    return TunedStudy(folder, f"sqlite:///{folder / 'optuna-rnn.db'}", "digits")
