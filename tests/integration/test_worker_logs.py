"""A real `dispatcher worker` process with DISPATCHER_LOG_FORMAT=json: every line it writes, Celery's own
included, is one JSON object; lines inside a task carry its id and name; no phone number or email address
leaves it whole; and an idle worker, or one running tasks that do nothing, says nothing at INFO."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from celery import Celery

from channels.sandbox import Sandboxes
from config.settings import Settings
from dispatcher.core.clock import ManualClock
from tests.api_fixtures import account_body
from tests.conftest import make_account
from tests.integration.test_worker_survival import WorkerProcess
from tests.worker_fixtures import eventually
from workers.app import app, configure
from workers.process_runtime import WorkerRuntime
from workers.tasks import dispatch

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
PHONE, EMAIL = "+8613812345678", "xiaoming.wang@example.com"
RAW = (PHONE, PHONE[1:], "138 1234 5678", "13812345678", EMAIL, "xiaoming.wang@")


def worker_env(monkeypatch: pytest.MonkeyPatch, settings: Settings, clock: ManualClock, **extra: str) -> None:
    """The environment a worker subprocess reads: these sandboxes, JSON logs, and the test's clock (the worker
    starts at the manual clock's time and runs at real speed, so the last look sees the same day)."""
    fields = {
        "twilio_api_base_url": settings.twilio_api_base_url, "smtp_host": settings.smtp_host,
        "smtp_port": settings.smtp_port, "print_vendor_url": settings.print_vendor_url,
        "agency_url": settings.agency_url, "clock_start": clock.now().isoformat(), "clock_factor": 1,
        "log_format": "json", **extra,
    }  # fmt: skip
    for name, value in fields.items():
        monkeypatch.setenv(f"DISPATCHER_{name.upper()}", str(value))


def json_lines(log: str) -> list[dict[str, object]]:
    """Every line parsed; a line that is not one JSON object fails the test, named."""
    parsed = []
    for number, line in enumerate(log.splitlines(), 1):
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"line {number} is not JSON: {line!r}")
        assert isinstance(parsed[-1], dict), line
    return parsed


@pytest.fixture
def json_worker(
    monkeypatch: pytest.MonkeyPatch, runtime: WorkerRuntime, clock: ManualClock, tmp_path: Path,
    worker_sandboxes: Sandboxes,
) -> Iterator[WorkerProcess]:  # fmt: skip
    """A worker at DEBUG, so every library's chattiest lines (Twilio's, SMTP's, urllib3's) are in the test."""
    worker_env(monkeypatch, runtime.settings, clock, log_level="DEBUG")
    worker = WorkerProcess(runtime.settings.redis_url or "", tmp_path, queues="plan,sms,email")
    yield worker
    worker.stop()


def test_every_worker_line_is_json_with_task_ids_and_no_phone_or_email_whole(
    runtime: WorkerRuntime, json_worker: WorkerProcess, worker_sandboxes: Sandboxes, clock: ManualClock
) -> None:
    configure(runtime.settings)
    # Two contacts at once, an SMS and an email: two accounts, since contacts to one debtor are spaced.
    texted = runtime.engine.upsert(make_account("LOG1", due_date=clock.now().date() - timedelta(days=1), phone=PHONE))
    mailed = runtime.engine.upsert(make_account("LOG3", due_date=clock.now().date() - timedelta(days=20), email=EMAIL))
    contacts = [c for result in (texted, mailed) for c in result.queued if c.channel.value in ("sms", "email")]
    assert sorted(c.channel.value for c in contacts) == ["email", "sms"]
    dispatch(contacts, batch=10)
    # A service's upsert over the broker: its arguments (the phone, the email) are in Celery's DEBUG lines.
    app.send_task("dispatcher.upsert_account", args=[account_body("LOG2", phone=PHONE, email=EMAIL)], queue="plan")
    store = runtime.engine.store
    eventually(lambda: all(store.claim_status(c.account_id, c.id) == "sent" for c in contacts), timeout=30)
    eventually(lambda: store.load("LOG2").record is not None, timeout=15)
    time.sleep(0.5)  # the tasks' last lines
    json_worker.stop()

    log = json_worker.log()
    lines = json_lines(log)
    assert any(line.get("logger", "").startswith("celery") for line in lines)  # Celery's own, as JSON
    for raw in RAW:
        assert raw not in log
    in_send = [line for line in lines if line.get("task_name") == "dispatcher.send"]
    assert in_send and all(line.get("task_id") for line in in_send)
    assert {line.get("contact_id") for line in in_send} >= {c.id for c in contacts}
    masked = [json.dumps(line, ensure_ascii=False) for line in lines if line.get("task_name") != "dispatcher.send"]
    assert any("***78" in text and "***@example.com" in text for text in masked)  # the upsert's, masked


def test_an_idle_worker_and_tasks_that_do_nothing_log_nothing_at_info(
    monkeypatch: pytest.MonkeyPatch, runtime: WorkerRuntime, clock: ManualClock, tmp_path: Path
) -> None:
    worker_env(monkeypatch, runtime.settings, clock, log_level="INFO")
    worker = WorkerProcess(runtime.settings.redis_url or "", tmp_path, queues="plan")
    producer = Celery("producer", broker=runtime.settings.redis_url)
    try:
        started = len(json_worker_lines(worker))
        time.sleep(3)
        for _ in range(3):
            producer.send_task("dispatcher.housekeeping", queue="plan")
        eventually(lambda: producer.connection().default_channel.client.llen("plan") == 0, timeout=15)
        time.sleep(2)
        after = json_worker_lines(worker)[started:]
    finally:
        producer.close()
        worker.stop()
    assert [line for line in after if line["level"] == "info"] == []


def json_worker_lines(worker: WorkerProcess) -> list[dict[str, object]]:
    return json_lines(worker.log())
