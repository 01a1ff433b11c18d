"""Headless Chromium through its own command-line flags: the rendered DOM (`--dump-dom`) and a PNG
(`--screenshot`) of a page, with nothing but Debian's `chromium` package (no WebDriver, no Playwright).

`--virtual-time-budget` lets the page's scripts and fetches run for that much virtual time before the
DOM is dumped or the picture taken, so what comes back is what a person would see once the page settled.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

ARTEFACTS = Path(__file__).resolve().parents[2] / "artefacts"
INSTALL_HINT = "apt-get install chromium (Debian's package; .ci/run installs it)"
# Flags from the machine notes: without the background-networking ones Chromium keeps dialling Google's
# hosts, which a closed network refuses. The resolver rule makes every name but localhost fail, so a page
# that still reaches for a CDN breaks here as it would on a bank's disconnected network.
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--hide-scrollbars",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
]  # fmt: skip


def chromium() -> str:
    """The browser's path, or the test is skipped saying how to get it."""
    path = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if path is None:
        pytest.skip(f"no headless Chromium on this machine: {INSTALL_HINT}")
    return path


def _run(url: str, *flags: str, budget_ms: int, timeout: float) -> str:
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        command = [chromium(), *FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}", *flags, url]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise AssertionError(f"chromium exited {done.returncode} on {url}:\n{done.stderr[-3000:]}")
    return done.stdout


def dump_dom(url: str, *, budget_ms: int = 10_000, timeout: float = 90) -> str:
    """The page's DOM as HTML once its scripts ran for `budget_ms` of virtual time."""
    dom = _run(url, "--dump-dom", budget_ms=budget_ms, timeout=timeout)
    assert dom.strip(), f"chromium loaded nothing from {url} (a failed load still exits 0)"
    return dom


def screenshot(url: str, name: str, *, size: str = "1280,1600", budget_ms: int = 10_000, timeout: float = 90) -> Path:
    """A PNG of the page at artefacts/<name>, the folder made when missing."""
    ARTEFACTS.mkdir(exist_ok=True)
    path = ARTEFACTS / name
    path.unlink(missing_ok=True)
    _run(url, f"--screenshot={path}", f"--window-size={size}", budget_ms=budget_ms, timeout=timeout)
    assert path.stat().st_size > 0, f"chromium wrote no screenshot of {url}"
    return path
