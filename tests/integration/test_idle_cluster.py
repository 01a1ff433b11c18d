# ruff: noqa: F811 - fixtures imported from test_worker_survival come back as test parameters
"""An idle cluster costs nothing: beat pumps the schedule itself and sends a plan task only for due
accounts, so a minute with nothing due puts (almost) nothing on the broker and the worker logs nothing at
INFO. Real `dispatcher beat` and `dispatcher worker` processes on their own embedded Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis

from dispatcher.core.clock import ManualClock
from dispatcher.state.redis_server import EmbeddedRedis
from dispatcher.state.store import Store
from tests.integration.test_worker_survival import DISPATCHER, WorkerProcess, own_redis  # noqa: F401
from workers.scheduler import BeatPump

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

IDLE_SECONDS = 60


def test_the_beat_pump_sends_nothing_while_nothing_is_due_and_one_task_per_batch_when_due(redis_url: str) -> None:
    store = Store.from_url(redis_url)
    now = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
    sent: list[tuple[str, list[str]]] = []
    send: Callable[..., None] = lambda name, args, queue: sent.append((name, args[0]))  # noqa: E731
    settings = _Settings(lease_seconds=120, pump_batch=500)
    pump = BeatPump(store, ManualClock(now), settings, send)  # type: ignore[arg-type]
    store.redis.zadd(store.wake_key(store.shard_of("A1")), {"A1": (now + timedelta(hours=1)).timestamp()})
    assert pump.run_once() == 0 and sent == []
    store.redis.zadd(store.wake_key(store.shard_of("A2")), {"A2": (now - timedelta(seconds=1)).timestamp()})
    assert pump.run_once() == 1
    assert sent == [("dispatcher.plan", ["A2"])]
    assert pump.run_once() == 0  # leased: not offered again until the lease runs out


def test_an_idle_cluster_puts_almost_nothing_on_the_broker_and_logs_nothing_at_info(
    own_redis: EmbeddedRedis, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(own_redis.url)
    (tmp_path / "worker").mkdir()
    worker = WorkerProcess(own_redis.url, tmp_path / "worker")
    env = {**os.environ, "DISPATCHER_REDIS_URL": own_redis.url, "DISPATCHER_STATE_DIR": str(tmp_path / "beat")}
    (tmp_path / "beat").mkdir()
    with (tmp_path / "beat.log").open("wb") as beat_log:
        beat = subprocess.Popen([DISPATCHER, "beat"], env=env, stdout=beat_log, stderr=subprocess.STDOUT)
    try:
        time.sleep(5)  # both settle: the worker's start-up lines, beat's first housekeeping
        client.config_resetstat()
        info_lines_before = _info_lines(worker.log())
        time.sleep(IDLE_SECONDS)
        stats = client.info("commandstats")
        published = int(stats.get("cmdstat_lpush", {}).get("calls", 0))
        events = int(stats.get("cmdstat_publish", {}).get("calls", 0))
        info_lines = _info_lines(worker.log()) - info_lines_before
    finally:
        beat.send_signal(signal.SIGTERM)
        beat.wait(15)
        worker.stop()
    print(f"idle {IDLE_SECONDS} s: {published} task messages, {events} event publishes (worker heartbeats for"
          f" Flower), {info_lines} INFO lines from the worker")  # fmt: skip
    assert beat.returncode in (0, -signal.SIGTERM), (tmp_path / "beat.log").read_text()[-3000:]
    assert published <= 3  # housekeeping and the archiver, once a minute each
    assert info_lines <= 2  # the record's one-time migration line at most


def _info_lines(log: str) -> int:
    return sum(1 for line in log.splitlines() if "INFO" in line or "[info" in line)


class _Settings:
    def __init__(self, lease_seconds: int, pump_batch: int) -> None:
        self.lease_seconds, self.pump_batch = lease_seconds, pump_batch
