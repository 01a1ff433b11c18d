"""Fixtures for the worker tests: sandboxes, a runtime on the real Redis with a manual clock, and a real
Celery worker (threads pool) consuming every queue from the same Redis. Test modules import these."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from celery.contrib.testing.worker import start_worker

from channels.sandbox import Sandboxes, start_sandboxes
from config.settings import Settings, load_settings
from dispatcher.clock import ManualClock
from workers.app import QUEUES, app, configure
from workers.queueing import dispatch
from workers.runtime import WorkerRuntime, build_runtime, install_runtime
from workers.scheduler import BeatPump


@pytest.fixture(scope="module")
def worker_sandboxes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandboxes]:
    running = start_sandboxes(tmp_path_factory.mktemp("sandboxes"), callback_base_url="http://127.0.0.1:9")
    yield running
    running.stop()


@pytest.fixture
def worker_settings(redis_url: str, worker_sandboxes: Sandboxes) -> Settings:
    return load_settings(redis_url=redis_url, send_retries=3, **worker_sandboxes.settings_overrides())


@pytest.fixture
def runtime(worker_settings: Settings, clock: ManualClock) -> Iterator[WorkerRuntime]:
    built = build_runtime(worker_settings, dispatch, clock=clock, retry_wait=0.01)
    install_runtime(built)
    yield built
    install_runtime(None)


@pytest.fixture
def celery_worker(runtime: WorkerRuntime) -> Iterator[object]:
    configure(runtime.settings)
    app.conf.update(broker_pool_limit=4)
    with start_worker(
        app, pool="threads", concurrency=4, queues=list(QUEUES), perform_ping_check=False, loglevel="WARNING",
        shutdown_timeout=10,
    ) as worker:  # fmt: skip
        yield worker


@pytest.fixture
def beat_pump(runtime: WorkerRuntime) -> Iterator[BeatPump]:
    """Beat's pump, in a thread, on the runtime's clock: the accounts that come due are handed to the plan
    queue as `dispatcher beat` hands them (what the schedule holds comes back only through it)."""
    configure(runtime.settings)
    pump = BeatPump(runtime.engine.store, runtime.engine.clock, runtime.settings, app.send_task)
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(0.1):
            pump.run_once()

    thread = threading.Thread(target=loop, name="beat-pump", daemon=True)
    thread.start()
    yield pump
    stop.set()
    thread.join(5)


def eventually(check: Callable[[], object], timeout: float = 10.0) -> object:
    """Poll until `check()` is truthy (work done by another thread), failing after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s")
        time.sleep(0.02)


def stored_files(directory: Path, pattern: str) -> list[Path]:
    return sorted(directory.rglob(pattern))
