"""Workers against a Redis that goes away: a real `dispatcher worker` process on its own embedded
redis-server, stopped (SHUTDOWN NOSAVE, kill -9) while the worker holds unacked messages and started again
on the same port; and a task whose Redis calls fail is given back to the queue instead of acked as done."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest
import redis
from celery import Celery

from channels.sandbox import Sandboxes
from dispatcher.core.clock import ManualClock
from dispatcher.state.redis_server import EmbeddedRedis
from dispatcher.state.store import Store
from tests.api_fixtures import account_body
from tests.conftest import make_account
from tests.worker_fixtures import eventually
from workers.process_runtime import WorkerRuntime, build_runtime, install_runtime
from workers.queueing import dispatch

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
DISPATCHER = str(Path(sys.executable).with_name("dispatcher"))


class WorkerProcess:
    """`dispatcher worker` as a child process on `url`, its log in a file for the failure message."""

    def __init__(self, url: str, state_dir: Path, queues: str = "plan,sms") -> None:
        self.log_path = state_dir / "worker.log"
        env = {**os.environ, "DISPATCHER_REDIS_URL": url, "DISPATCHER_STATE_DIR": str(state_dir)}
        command = [DISPATCHER, "worker", "-Q", queues, "-c", "2", "--pool", "threads", "--loglevel", "INFO"]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.wait_for_log("ready.", timeout=30)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log():
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"worker never logged {text!r} (exit {self.process.poll()}):\n{self.log()[-4000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A redis-server for this test alone: the test stops it, which the session's server must never see."""
    server = EmbeddedRedis(tmp_path / "redis", appendonly=False)
    with server:
        yield server


@pytest.fixture
def worker_process(own_redis: EmbeddedRedis, tmp_path: Path) -> Iterator[WorkerProcess]:
    worker = WorkerProcess(own_redis.url, tmp_path)
    yield worker
    worker.stop()


@pytest.fixture
def producer(own_redis: EmbeddedRedis) -> Iterator[Celery]:
    """A service on the same broker, as docs/operations.md shows: its own Celery app, names as the contract."""
    sender = Celery("producer", broker=own_redis.url)
    sender.conf.broker_connection_retry_on_startup = True
    yield sender
    sender.close()


def _future_account(account_id: str) -> dict[str, object]:
    """An account not yet due: the upsert writes it and plans nothing to send."""
    return account_body(account_id, due_date=(date.today() + timedelta(days=30)).isoformat())


def _upsert(producer: Celery, account_id: str, countdown: float | None = None) -> None:
    producer.send_task("dispatcher.upsert_account", args=[_future_account(account_id)], queue="plan",
                       countdown=countdown)  # fmt: skip


def _exists(url: str, account_id: str) -> bool:
    with contextlib.suppress(redis.RedisError):
        store = Store.from_url(url)
        try:
            return store.load(account_id).record is not None
        finally:
            store.redis.close()
    return False


def _hold_unacked(worker: WorkerProcess, producer: Celery, url: str, countdown: float = 300) -> None:
    """Give the worker messages it holds unacked (tasks with a countdown): what it has in hand when Redis goes."""
    for index in range(3):
        _upsert(producer, f"LATER{index}", countdown=countdown)
    client = redis.Redis.from_url(url)
    eventually(lambda: client.hlen("unacked") == 3, timeout=15)
    client.close()


def _kill_nine(server: EmbeddedRedis) -> None:
    client = redis.Redis.from_url(server.url)
    os.kill(int(client.info("server")["process_id"]), signal.SIGKILL)
    client.close()
    server.stop()  # only reaps the dead process


def _shutdown_nosave(server: EmbeddedRedis) -> None:
    with contextlib.suppress(redis.ConnectionError):
        redis.Redis.from_url(server.url).shutdown(nosave=True)
    server.stop()


@pytest.mark.parametrize("stop_redis", [_shutdown_nosave, _kill_nine], ids=["shutdown-nosave", "kill-9"])
def test_a_worker_holding_unacked_messages_survives_a_redis_restart_and_consumes_again(
    own_redis: EmbeddedRedis, worker_process: WorkerProcess, producer: Celery,
    stop_redis: Callable[[EmbeddedRedis], None],
) -> None:  # fmt: skip
    _upsert(producer, "BEFORE")
    eventually(lambda: _exists(own_redis.url, "BEFORE"), timeout=15)
    _hold_unacked(worker_process, producer, own_redis.url)

    stop_redis(own_redis)
    worker_process.wait_for_log("Connection to broker lost", timeout=10)
    time.sleep(1)  # down for a moment, as in a restart
    own_redis.start()  # same port, empty: NOSAVE and no AOF
    started = time.monotonic()
    _upsert(producer, "AFTER")

    eventually(lambda: worker_process.process.poll() is not None or _exists(own_redis.url, "AFTER"), timeout=45)
    assert worker_process.process.poll() is None, f"the worker exited:\n{worker_process.log()[-4000:]}"
    assert "Unrecoverable error" not in worker_process.log()
    print(f"consumption resumed {time.monotonic() - started:.1f}s after Redis was back")


def test_a_send_failing_on_a_redis_connection_error_is_given_back_and_sends_once_redis_answers(
    runtime: WorkerRuntime, celery_worker: object, worker_sandboxes: Sandboxes, clock: ManualClock
) -> None:
    # The worker's own Redis client points at a port nobody listens on: every store call raises ConnectionError.
    unreachable = runtime.settings.model_copy(update={"redis_url": "redis://127.0.0.1:9/0"})
    install_runtime(build_runtime(unreachable, dispatch, clock=clock, retry_wait=0.01))
    try:
        due = clock.now().date() - timedelta(days=1)
        # The upsert (on the test's own, healthy engine) hands the contact to the worker at once.
        [contact] = runtime.engine.upsert(make_account("REDIS1", phone="+8613944445555", due_date=due)).queued
        time.sleep(2.5)  # the task runs and fails on Redis meanwhile
    finally:
        install_runtime(runtime)
    eventually(lambda: runtime.engine.store.claim_status("REDIS1", contact.id) == "sent", timeout=15)
    texts = [r for r in worker_sandboxes.twilio.state.messages() if r["form"].get("To") == "+8613944445555"]
    assert len(texts) == 1
