"""Start ``optuna-rnn dashboard`` for real and look at it over HTTP and in headless Chromium.

Shared by the tests and by ``docs/screenshot.py`` (which makes the README's
screenshot with the same code). The server always runs on a free port
(``--port 0``), is waited for with a deadline, and is always terminated.
"""

from __future__ import annotations

import json
import selectors
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.conftest import cli_command, cli_env

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def dashboard_server(
    storage: str, *, cwd: Path, timeout: float = 90, extra: tuple[str, ...] = ()
) -> Iterator[str]:
    """Run ``optuna-rnn dashboard --storage STORAGE --port 0``; yields its base URL (``http://host:port``)."""
    proc = subprocess.Popen(
        cli_command("dashboard", "--storage", storage, "--port", "0", *extra),
        cwd=cwd,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base = _wait_for_url(proc, deadline=time.monotonic() + timeout)
        _wait_until_serving(base, deadline=time.monotonic() + timeout)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def _wait_for_url(proc: subprocess.Popen[str], *, deadline: float) -> str:
    """The URL from the server's "... at http://...  (Ctrl-C to stop)" line."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not selector.select(timeout=max(0.0, min(1.0, deadline - time.monotonic()))):
                if proc.poll() is not None:
                    break
                continue
            line = proc.stdout.readline()
            if not line:
                break
            if " at http://" in line:
                url = line.split(" at ", 1)[1].split()[0]
                return url.removesuffix("/dashboard/")
    proc.kill()
    _, err = proc.communicate(timeout=20)
    raise AssertionError(f"optuna-rnn dashboard did not start (exit {proc.returncode}): {err[-2000:]}")


def _wait_until_serving(base: str, *, deadline: float) -> None:
    while True:
        try:
            with urllib.request.urlopen(f"{base}/api/meta", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def get(base: str, path: str) -> tuple[int, dict[str, str], bytes]:
    """GET ``base + path``: status, headers, body."""
    with urllib.request.urlopen(base + path, timeout=30) as response:
        return response.status, dict(response.headers), response.read()


def delete(base: str, path: str) -> int:
    """DELETE ``base + path`` as the dashboard's UI does; the status."""
    request = urllib.request.Request(
        base + path, data=b"{}", method="DELETE", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return int(response.status)


def get_json(base: str, path: str) -> Any:
    status, _, body = get(base, path)
    assert status == 200, (path, status)
    return json.loads(body)


def chromium_available() -> bool:
    """Whether the Debian Chromium and Playwright for Python are installed."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return False
    return Path(CHROMIUM).exists()


@contextmanager
def chromium_page(*, width: int = 1400, height: int = 1000) -> Iterator[Any]:
    """A Playwright page in headless Chromium with a fresh profile."""
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="optuna-rnn-chromium-")
    try:
        with sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                profile,
                executable_path=CHROMIUM,
                headless=True,
                args=CHROMIUM_ARGS,
                viewport={"width": width, "height": height},
            )
            try:
                page = context.pages[0] if context.pages else context.new_page()
                page.set_default_timeout(60_000)
                yield page
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def study_page_screenshot(page: Any, base: str, study_id: int, path: Path) -> None:
    """Open a study's main page, wait for optuna-rnn's graphs to render, and save a screenshot."""
    page.goto(f"{base}/dashboard/studies/{study_id}")
    page.get_by_text("Learning curves of the top").first.wait_for()
    page.get_by_text("Epochs spent on complete vs pruned trials").first.wait_for()
    page.wait_for_timeout(500)  # let plotly finish drawing the last traces
    page.screenshot(path=str(path))
