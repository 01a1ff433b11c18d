"""Flower as installed with the project, started as `dispatcher up` starts it, on the embedded Redis with a
real `dispatcher worker`: its API lists the worker and the tasks it ran, behind basic auth and read-only.

/api/workers?refresh=1 asks the workers over the broker (remote control, which our workers keep on);
/api/tasks comes from task events, which our workers send only once Flower has enabled them (it broadcasts
enable_events every 5 s): the test waits for a probe task to show before it sends the ones it counts.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import date, timedelta

import httpx
import pytest
from celery import Celery

from tests.api_fixtures import account_body
from tests.flower_fixtures import FlowerProcess, WorkerProcess, flower, flower_worker  # noqa: F401

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]
ACCOUNTS = ("FLOWER1", "FLOWER2", "FLOWER3")


@pytest.fixture
def producer(redis_url: str) -> Iterator[Celery]:
    """A service on the same broker, sending by the task names of the contract (docs/operations.md)."""
    sender = Celery("producer", broker=redis_url)
    yield sender
    sender.close()


def test_flower_api_lists_the_worker_and_the_tasks_it_ran(
    flower: FlowerProcess,  # noqa: F811
    flower_worker: WorkerProcess,  # noqa: F811
    producer: Celery,
) -> None:
    name = flower_worker.name
    flower.wait_for(f"worker {name}", lambda: name in flower.api("/api/workers?refresh=1").json())
    flower.wait_for("task events (Flower turns them on every 5 s)", TaskEventsOn(flower, producer))
    sent = {producer.send_task("dispatcher.upsert_account", args=[_not_due(account_id)], queue="plan").id:
            "dispatcher.upsert_account" for account_id in ACCOUNTS}  # fmt: skip
    payment = {"kind": "payment", "amount": "10.00"}
    sent[producer.send_task("dispatcher.ingest_event", args=[ACCOUNTS[0], payment], queue="plan").id] = (
        "dispatcher.ingest_event")  # fmt: skip

    def succeeded() -> dict[str, str]:
        tasks = flower.api("/api/tasks?state=SUCCESS").json()
        return {task_id: tasks[task_id]["name"] for task_id in sent if tasks.get(task_id, {}).get("worker") == name}

    flower.wait_for("the tasks succeed on the worker", lambda: succeeded() == sent)
    # Its arguments as Flower shows them: ids and amounts, every personal field masked
    # (dispatcher.core.privacy.personal_data).
    shown = flower.api("/api/tasks?taskname=dispatcher.upsert_account").json()
    args = [task["args"] for task_id, task in shown.items() if task_id in sent]
    assert args and all("'id': 'FLOWER" in text and "'name': '***'" in text for text in args)
    assert not any(secret in text for text in args for secret in ("王小明", "13800138000", "xiaoming@", "Nanjing"))
    workers = flower.api("/api/workers").json()
    assert {queue["name"] for queue in workers[name]["active_queues"]} >= {"plan", "sms", "letter"}
    assert "dispatcher.send" in workers[name]["registered"]


class TaskEventsOn:
    """True once Flower lists a probe upsert: workers send task events only after Flower's broadcast, and
    a task run before it never shows. One probe a second at most."""

    def __init__(self, watcher: FlowerProcess, producer: Celery) -> None:
        self.flower, self.producer, self.last = watcher, producer, 0.0

    def __call__(self) -> bool:
        if time.monotonic() - self.last > 1.0:
            self.producer.send_task("dispatcher.upsert_account", args=[_not_due("PROBE")], queue="plan")
            self.last = time.monotonic()
        return bool(self.flower.api("/api/tasks?taskname=dispatcher.upsert_account").json())


def _not_due(account_id: str) -> dict[str, object]:
    """An account due in 30 days: its upsert writes it and plans nothing to send."""
    return account_body(account_id, due_date=(date.today() + timedelta(days=30)).isoformat())


def test_flower_wants_its_password_and_changes_nothing(flower: FlowerProcess) -> None:  # noqa: F811
    flower.wait_for("Flower answering", lambda: flower.api("/api/workers").status_code == 200)
    assert httpx.get(f"{flower.url}/api/workers", timeout=10).status_code == 401
    assert httpx.get(f"{flower.url}/api/workers", auth=(flower.auth[0], "wrong"), timeout=10).status_code == 401
    shutdown = httpx.post(f"{flower.url}/api/worker/shutdown/anyone@localhost",
                          auth=flower.auth, timeout=10)  # fmt: skip
    assert shutdown.status_code == 403  # read-only: Flower may watch the cluster, never steer it
