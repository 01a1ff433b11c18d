"""Flower and a real `dispatcher worker` as child processes on the test Redis, for the Flower API test and
the browser screenshots. Flower is started exactly as `dispatcher up` starts it (workers.up.flower_command:
`celery flower`, read-only, basic auth through FLOWER_BASIC_AUTH). Test modules import these names.

    def test_x(flower: FlowerProcess, flower_worker: WorkerProcess) -> None:
        flower.wait_for("the worker", lambda: flower_worker.name in flower.api("/api/workers?refresh=1").json())
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from workers.up import FlowerAuth, flower_command, flower_env

AUTH = FlowerAuth("ops", "flower-secret", generated=False)
DISPATCHER = str(Path(sys.executable).with_name("dispatcher"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ChildProcess:
    """A child process with its output in a file, stopped with SIGTERM (then SIGKILL) at the end."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, what: str, found: Callable[[], object], timeout: float = 30) -> None:
        """Poll until `found()` is true (a connection refused counts as not yet); fail with the log if never."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if found():
                    return
            except httpx.TransportError:
                pass  # not listening yet
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"never saw {what} (exit {self.process.poll()}):\n{self.log()[-4000:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class FlowerProcess(ChildProcess):
    """Flower on `broker_url` at `url` (no credentials in it), `auth` = (user, password); `api(path)` sends it."""

    def __init__(self, broker_url: str, log_path: Path, auth: FlowerAuth = AUTH) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.auth = (auth.user, auth.password)
        env = {**os.environ, **flower_env(auth)}
        super().__init__(flower_command(broker_url, self.port), env, log_path)

    def api(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, auth=self.auth, timeout=10)


class WorkerProcess(ChildProcess):
    """`dispatcher worker` (threads, every queue) on `broker_url`, named `name`."""

    def __init__(self, broker_url: str, state_dir: Path, name: str = "flowertest@localhost") -> None:
        self.name = name
        env = {**os.environ, "DISPATCHER_REDIS_URL": broker_url, "DISPATCHER_STATE_DIR": str(state_dir)}
        argv = [DISPATCHER, "worker", "--pool", "threads", "-c", "2", "--name", name]
        super().__init__(argv, env, state_dir / "worker.log")


@pytest.fixture
def flower(redis_url: str, tmp_path: Path) -> Iterator[FlowerProcess]:
    running = FlowerProcess(redis_url, tmp_path / "flower.log")
    yield running
    running.stop()


@pytest.fixture
def flower_worker(redis_url: str, tmp_path: Path) -> Iterator[WorkerProcess]:
    running = WorkerProcess(redis_url, tmp_path)
    yield running
    running.stop()
