"""Make the README's dashboard screenshot (docs/dashboard.png) from a real study.

Runs ``optuna-rnn run`` on the digits dataset in a temporary folder, starts
``optuna-rnn dashboard`` on it and photographs the study page in headless
Chromium with the same code as the browser test (``tests/browser.py``)::

    .venv/bin/python docs/screenshot.py [--n-trials 30] [--max-epochs 15] [--out docs/dashboard.png]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.browser import chromium_page, dashboard_server, get_json, study_page_screenshot  # noqa: E402
from tests.conftest import cli_command, cli_env  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-trials", type=int, default=30)
    parser.add_argument("--max-epochs", type=int, default=15)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "dashboard.png")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        run = ["run", "--dataset", "digits", "--n-trials", str(args.n_trials), "--seed", "0"]
        run += ["--max-epochs", str(args.max_epochs), "--keep-top", "5", "-q"]
        subprocess.run(cli_command(*run), cwd=folder, env=cli_env(), check=True)
        storage = f"sqlite:///{folder / 'optuna-rnn.db'}"
        with dashboard_server(storage, cwd=folder) as base, chromium_page(width=1400, height=1750) as page:
            study_id = get_json(base, "/api/studies")["study_summaries"][0]["study_id"]
            study_page_screenshot(page, base, study_id, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
