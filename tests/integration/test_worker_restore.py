# ruff: noqa: F811 - fixtures imported from test_worker_survival come back as test parameters
"""Messages a worker held when Redis went away come back as soon as it reconnects, not after the broker's
visibility timeout (10 minutes by default): a real `dispatcher worker` process on its own redis-server."""

from __future__ import annotations

import contextlib
import time

import pytest
import redis
from celery import Celery

from dispatcher.state.redis_server import EmbeddedRedis
from tests.integration.test_worker_survival import (  # noqa: F401 - fixtures
    WorkerProcess,
    _exists,
    _hold_unacked,
    own_redis,
    producer,
    worker_process,
)
from tests.worker_fixtures import eventually

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_tasks_held_when_redis_restarted_run_once_it_is_back_not_after_the_visibility_timeout(
    own_redis: EmbeddedRedis, worker_process: WorkerProcess, producer: Celery
) -> None:
    _hold_unacked(worker_process, producer, own_redis.url, countdown=3)
    with contextlib.suppress(redis.ConnectionError):
        redis.Redis.from_url(own_redis.url).shutdown(save=True)  # with its data, as AOF or RDB keep it
    own_redis.stop()
    worker_process.wait_for_log("Connection to broker lost", timeout=10)
    time.sleep(1)
    own_redis.start()
    back = time.monotonic()
    eventually(lambda: all(_exists(own_redis.url, f"LATER{i}") for i in range(3)), timeout=45)
    print(f"the held tasks ran {time.monotonic() - back:.1f} s after Redis was back (visibility timeout 600 s)")
    assert worker_process.process.poll() is None
