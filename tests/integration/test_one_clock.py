"""One clock for every process of a deployment: the API's runtime follows DISPATCHER_CLOCK_* as the
workers' does, so an accelerated deployment never mixes two dates."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from config.settings import load_settings
from dispatcher.wiring import open_runtime
from workers.process_runtime import build_runtime
from workers.queueing import dispatch

pytestmark = pytest.mark.integration


def test_the_api_runtime_and_the_workers_share_the_configured_accelerated_clock(redis_url: str) -> None:
    start = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
    settings = load_settings(redis_url=redis_url, clock_start=start, clock_factor=3600.0, clock_origin=time.time())
    with open_runtime(settings) as api_side:  # what `dispatcher api` builds
        worker_side = build_runtime(settings, dispatch)
        api_now, worker_now = api_side.engine.clock.now(), worker_side.engine.clock.now()
    assert start <= api_now < start + timedelta(days=1)  # not today's date
    assert abs(api_now - worker_now) < timedelta(hours=1)  # an hour of simulated time is a second here
