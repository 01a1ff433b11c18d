"""Flower as an operator sees it: a real `dispatcher worker` on its own embedded Redis, a few tasks sent
through the broker, Flower behind basic auth, and headless Chromium rendering its workers and tasks pages
into artefacts/flower-workers.png and artefacts/flower-tasks.png."""

# ruff: noqa: F811 - the fixtures imported from test_worker_survival come back as test parameters

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from celery import Celery

from dispatcher.state.redis_server import EmbeddedRedis
from tests.browser.chromium import chromium, dump_dom, screenshot
from tests.flower_fixtures import FlowerProcess
from tests.integration.test_worker_survival import (  # noqa: F401
    WorkerProcess,
    _upsert,
    own_redis,
    producer,
    worker_process,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]
SHOWN = 3  # succeeded tasks on the tasks page


@pytest.fixture
def flower(own_redis: EmbeddedRedis, tmp_path: Path) -> Iterator[FlowerProcess]:
    chromium()  # skip before starting anything when there is no browser
    running = FlowerProcess(own_redis.url, tmp_path / "flower.log")
    yield running
    running.stop()


def test_flower_shows_the_worker_and_its_tasks(
    worker_process: WorkerProcess, producer: Celery, flower: FlowerProcess
) -> None:
    worker = f"dispatcher@{socket.gethostname()}"  # `dispatcher worker`'s default --name
    flower.wait_for(f"worker {worker}", lambda: worker in flower.api("/api/workers?refresh=1").json())
    # The worker sends task events only once Flower's enable_events broadcast (every 5 s) reached it;
    # tasks run before that are invisible to Flower, so upserts are sent until enough of them show.
    sent = iter(f"FLOWER{n}" for n in range(1000))

    def enough_seen() -> bool:
        _upsert(producer, next(sent))
        return _succeeded(flower) >= SHOWN

    flower.wait_for("the upsert tasks succeed", enough_seen)

    assert httpx.get(f"{flower.url}/workers", timeout=10).status_code == 401, "Flower must ask for basic auth"
    # Chromium answers the basic-auth challenge with the credentials of the URL it was given.
    authed = f"http://{flower.auth[0]}:{quote(flower.auth[1])}@127.0.0.1:{flower.port}"
    workers_dom = dump_dom(f"{authed}/workers")
    assert worker in workers_dom, f"the workers page does not list {worker}"
    tasks_dom = dump_dom(f"{authed}/tasks")
    assert "dispatcher.upsert_account" in tasks_dom and worker in tasks_dom, "the tasks page lists no upsert"
    screenshot(f"{authed}/workers", "flower-workers.png", size="1280,700")
    screenshot(f"{authed}/tasks", "flower-tasks.png", size="1280,800")


def _succeeded(flower: FlowerProcess) -> int:
    tasks = flower.api("/api/tasks?taskname=dispatcher.upsert_account&state=SUCCESS").json()
    return len(tasks)
