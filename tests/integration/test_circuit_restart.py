"""A provider setting fixed by a restart: the letters the open circuit held go within seconds of the new
worker's start. A real `dispatcher worker` process with a wrong DISPATCHER_PRINT_VENDOR_URL (the sandbox
answers 404), killed while its circuit holds the letters (as a worker stopped together with Redis is: it
cannot give back what it holds), then started again with the right URL; beat's pump runs in the test."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from channels.base import ProviderMisconfigured
from channels.sandbox import Sandboxes
from dispatcher.core.clock import AcceleratedClock
from dispatcher.core.models import Contact
from tests.conftest import make_account
from tests.worker_fixtures import eventually
from workers.circuit import CircuitBreaker, held_key
from workers.process_runtime import WorkerRuntime

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]
DISPATCHER = str(Path(sys.executable).with_name("dispatcher"))
START = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai
LETTERS = 4


@pytest.fixture
def clock() -> AcceleratedClock:
    """Real time from 10:00 in Shanghai, shared with the worker process through DISPATCHER_CLOCK_*."""
    return AcceleratedClock(START, 1.0)


class Worker:
    """`dispatcher worker -Q plan,letter` as a child process, with the environment a deployment gives it."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        command = [DISPATCHER, "worker", "-Q", "plan,letter", "-c", "4", "--pool", "threads", "--loglevel", "INFO"]
        with log.open("ab") as out:
            self.process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 45
        while "ready." not in log.read_text(errors="replace").rsplit("===== start", 1)[-1]:
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the worker never became ready:\n{log.read_text(errors='replace')[-4000:]}")
            time.sleep(0.1)
        self.ready_at = time.monotonic()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)


@pytest.fixture
def worker_env(
    runtime: WorkerRuntime, worker_sandboxes: Sandboxes, clock: AcceleratedClock, tmp_path: Path
) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("DISPATCHER_")}
    overrides = {
        f"DISPATCHER_{key.upper()}": str(value) for key, value in worker_sandboxes.settings_overrides().items()
    }
    env.update(overrides)
    env.update({
        "DISPATCHER_REDIS_URL": runtime.settings.redis_url or "", "DISPATCHER_STATE_DIR": str(tmp_path / "state"),
        "DISPATCHER_CLOCK_START": START.isoformat(), "DISPATCHER_CLOCK_FACTOR": "1",
        "DISPATCHER_CLOCK_ORIGIN": repr(clock.origin),
    })  # fmt: skip
    return env


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.kill()


def _letters(runtime: WorkerRuntime, clock: AcceleratedClock) -> list[Contact]:
    due = clock.now().date() - timedelta(days=60)  # the formal-letter stage
    letters = []
    for n in range(LETTERS):
        result = runtime.engine.upsert(make_account(f"RS{n}", due_date=due, phone=f"+86139100{n:05d}"))
        letters += [contact for contact in result.queued if contact.channel == "letter"]
    return letters


def _created(sandboxes: Sandboxes) -> list[str]:
    log = sandboxes.print_vendor.state.log.read()
    return [str(r["letter"]["metadata"]["contact_id"]) for r in log if r["event"] == "letter.created"]


def test_letters_held_for_a_wrong_url_go_within_seconds_of_the_restart_that_fixes_it(
    runtime: WorkerRuntime,
    beat_pump: object,
    worker_sandboxes: Sandboxes,
    worker_env: dict[str, str],
    workers: list[Worker],
    clock: AcceleratedClock,
    tmp_path: Path,
) -> None:
    right_url = worker_env["DISPATCHER_PRINT_VENDOR_URL"]
    store, log = runtime.engine.store, tmp_path / "worker.log"
    breaker = CircuitBreaker(store.redis, max_open=300)
    breaker.succeeded("letter")
    workers.append(Worker({**worker_env, "DISPATCHER_PRINT_VENDOR_URL": right_url + "/wrong"}, log))
    created_before = len(_created(worker_sandboxes))
    letters = _letters(runtime, clock)
    assert len(letters) == LETTERS
    eventually(lambda: breaker.state("letter").trips >= 1, timeout=30)  # the vendor answered 404
    # The setting stays wrong for a long time: the circuit reaches its longest opening (what the workers'
    # own trips do over minutes), and each letter waits for it.
    # The worker trips it too, concurrently (its own 404s): trip until the longest opening holds, within bounds.
    for _ in range(20):
        breaker.trip(ProviderMisconfigured("print vendor 404", "letter", "DISPATCHER_PRINT_VENDOR_URL"))
        if breaker.state("letter").open_seconds == 300:
            break
    assert breaker.state("letter").open_seconds == 300
    eventually(lambda: store.redis.scard(held_key("letter")) == LETTERS, timeout=30)
    assert _created(worker_sandboxes)[created_before:] == []

    with log.open("ab") as out:
        out.write(b"\n===== start after the fix\n")
    workers[0].kill()
    workers.append(Worker({**worker_env, "DISPATCHER_PRINT_VENDOR_URL": right_url}, log))
    restarted = workers[-1].ready_at
    eventually(lambda: all(store.claim_status(c.account_id, c.id) == "sent" for c in letters), timeout=60)
    took = time.monotonic() - restarted
    print(f"the held letters were sent {took:.1f} s after the restarted worker was ready (circuit open 300 s)")
    assert took < 30
    assert sorted(_created(worker_sandboxes)[created_before:]) == sorted(c.id for c in letters)  # each once
    assert not breaker.state("letter").is_open
