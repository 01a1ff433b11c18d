"""Logs: personal data masked in every line (ours, the standard library's, a real server's), a request id on
every request's lines, JSON in production and readable text in a terminal."""

# ruff: noqa: F811 - the fixtures imported from tests.api_fixtures come back as test parameters

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from config.settings import load_settings
from dispatcher.core.privacy.personal_data import mask_text
from dispatcher.logging import configure_logging, mask_pii
from tests.api_fixtures import Api, account_body, api, api_keys, api_settings  # noqa: F401

PHONES = ["+8613800138000", "+86 138 0013 8000", "13800138000", "138-0013-8000", "+1 (212) 555-0123",
          "(212) 555-0123", "212-555-0123", "020 7946 0958", "010-12345678", "+442079460958"]  # fmt: skip
EMAILS = ["xiaoming@example.com", "mary.smith+bank@mail.example.co.uk"]


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging(load_settings(log_format="json", log_level="DEBUG", _env_file=None), stream=stream)
    yield stream
    structlog.reset_defaults()
    logging.getLogger().handlers.clear()


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


@pytest.mark.parametrize("phone", PHONES)
def test_phone_numbers_are_masked_in_free_text(phone: str) -> None:
    masked = mask_text(f"calling {phone} now")
    assert phone not in masked
    assert masked.startswith("calling ***") and masked.endswith(" now")


@pytest.mark.parametrize("email", EMAILS)
def test_email_addresses_keep_only_their_domain(email: str) -> None:
    assert mask_text(f"to <{email}>") == f"to <***@{email.split('@')[1]}>"


@pytest.mark.parametrize(
    "text",
    ["2026-03-02T02:00:00+00:00", "A1/reminder/sms/0", "B00000123", "duration_ms=12.34", "1772416800",
     "amount 5000.00 CNY", "127.0.0.1:8700", "version 3"],
)  # fmt: skip
def test_ids_times_and_amounts_are_left_alone(text: str) -> None:
    assert mask_text(text) == text


def test_personal_fields_are_masked_whatever_they_hold_nested_too() -> None:
    event = {"event": "x", "name": "王小明", "to": {"line1": "1 Nanjing Rd"}, "account": {"phone": "+8613800138000",
             "email": "a@b.cn", "address": {"city": "Shanghai"}}, "account_id": "A1"}  # fmt: skip
    masked = mask_pii(None, "info", event)
    assert masked["name"] == "***" and masked["to"] == {"line1": "***"}
    assert masked["account"] == {"phone": "***", "email": "***", "address": {"city": "***"}}
    assert masked["account_id"] == "A1"


def test_structlog_and_stdlib_lines_are_json_and_masked(captured: io.StringIO) -> None:
    structlog.get_logger("t").info("sms.inbound", phone="+8613800138000", note="reply to xiaoming@example.com")
    logging.getLogger("some.library").warning("retrying +86 138 0013 8000 for xiaoming@example.com")
    try:
        raise ValueError("bad number 13800138000")
    except ValueError:
        structlog.get_logger("t").exception("failed")
    output = captured.getvalue()
    assert len(lines(captured)) == 3
    for raw in ("+8613800138000", "138 0013 8000", "13800138000", "xiaoming@example.com"):
        assert raw not in output


def test_console_format_is_readable_and_masked() -> None:
    stream = io.StringIO()
    configure_logging(load_settings(log_format="console", _env_file=None), stream=stream)
    try:
        structlog.get_logger("t").info("contact.sent", account_id="A1", email="xiaoming@example.com")
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    text = stream.getvalue()
    assert "contact.sent" in text and "account_id=A1" in text and "xiaoming" not in text


@pytest.mark.integration
def test_a_real_server_logs_a_request_id_on_every_line_and_no_raw_phone_or_email(
    captured: io.StringIO, api: Api
) -> None:
    api.put_account("A1", account_body())
    api.put_account("A2", account_body("A2", email="not-an-email"))  # 422, the bad input echoed in no log
    api.twilio("/v1/webhooks/twilio/inbound-sms", {"MessageSid": "S1", "From": "+8613800138000", "Body": "STOP"})
    api.client.get("/v1/accounts/A1", headers={**api.auth(), "X-Request-ID": "trace-123"})
    records = lines(captured)
    http = [r for r in records if r.get("logger", "").startswith(("dispatcher", "workers"))]
    assert {r["event"] for r in http} >= {"http.request", "account.upserted", "sms.inbound"}
    assert all(r.get("request_id") for r in http)
    assert any(r["request_id"] == "trace-123" for r in http)
    output = captured.getvalue()
    for raw in ("+8613800138000", "13800138000", "xiaoming@example.com", "王小明", "Nanjing"):
        assert raw not in output


@pytest.mark.parametrize(("level", "shown"), [("INFO", False), ("DEBUG", True)])
def test_celerys_per_message_lines_show_only_at_debug_and_its_warnings_always(level: str, shown: bool) -> None:
    stream = io.StringIO()
    configure_logging(load_settings(log_format="json", _env_file=None), stream=stream, level=level)
    try:
        logging.getLogger("celery.worker.strategy").info("Task %s received", "dispatcher.plan[1]")
        logging.getLogger("celery.app.trace").info("Task %s succeeded in 0.01s: %s", "dispatcher.plan[1]", 3)
        logging.getLogger("celery.beat").info("Scheduler: Sending due task housekeeping (dispatcher.housekeeping)")
        logging.getLogger("celery.beat").info("beat: Starting...")
        logging.getLogger("celery.app.trace").error("Task %s raised unexpected: %s", "dispatcher.send[2]", "boom")
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    events = [line["event"] for line in lines(stream)]
    assert ("beat: Starting..." in events) and any("raised unexpected" in event for event in events)
    assert any("received" in event for event in events) is shown
    assert any("Sending due task" in event for event in events) is shown


def test_lines_inside_a_task_carry_its_ids_and_the_contact_being_worked_on(captured: io.StringIO) -> None:
    with structlog.contextvars.bound_contextvars(task_id="t-1", task_name="dispatcher.send", contact_id="A1/x/sms/0"):
        logging.getLogger("urllib3.connectionpool").debug("POST /Messages.json 201")
        structlog.get_logger("workers.reconcile").info("claim.reconciled")
    assert [(r["task_id"], r["task_name"], r["contact_id"]) for r in lines(captured)] == [
        ("t-1", "dispatcher.send", "A1/x/sms/0")
    ] * 2
