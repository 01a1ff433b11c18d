"""Flower as a child process on a broker, for the screenshot tests: started the way `dispatcher up` starts
it (`celery flower`, read-only, basic auth from the environment), on a free loopback port."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from dispatcher.api.app import bind_loopback

USER, PASSWORD = "ops", "secret"


class FlowerProcess:
    """`celery flower` watching `broker_url`; `url` carries no credentials, `auth` holds them."""

    def __init__(self, broker_url: str, log_path: Path) -> None:
        with bind_loopback() as probe:  # a free port; Flower binds it itself a moment later
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.auth = (USER, PASSWORD)
        self.log_path = log_path
        command = [sys.executable, "-m", "celery", f"--broker={broker_url}", "flower", "--address=127.0.0.1",
                   f"--port={self.port}", "--read_only=True"]  # fmt: skip
        # Credentials through Flower's FLOWER_<OPTION> variables, as in production: argv is public in `ps`.
        env = {**os.environ, "FLOWER_BASIC_AUTH": f"{USER}:{PASSWORD}"}
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)

    def api(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, auth=self.auth, timeout=10)

    def wait_for(self, what: str, found: Callable[[], bool], timeout: float = 30) -> None:
        """Poll until `found()` is true; fail with Flower's log when it never is."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if found():
                    return
            except httpx.HTTPError:
                pass  # not listening yet
            if self.process.poll() is not None or time.monotonic() > deadline:
                log = self.log_path.read_text(errors="replace")[-4000:]
                pytest.fail(f"Flower never showed {what} (exit {self.process.poll()}):\n{log}")
            time.sleep(0.5)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
