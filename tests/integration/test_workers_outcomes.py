"""Outcomes come back and re-plan the account: a real Celery worker, the real Redis, the sandboxes, and the
API's webhooks on a real uvicorn server, all over loopback HTTP and SMTP."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from celery.contrib.testing.worker import start_worker
from twilio.request_validator import RequestValidator

from channels.sandbox import Sandboxes, start_sandboxes
from config.settings import DEFAULT_STRATEGY, load_settings
from dispatcher.api import create_app
from dispatcher.api.app import ServerThread, bind_loopback
from dispatcher.core.clock import ManualClock
from dispatcher.core.events import AdhocContact, Payment
from dispatcher.core.models import Channel, Contact, PostalAddress
from tests.conftest import make_account
from tests.worker_fixtures import eventually
from workers.app import QUEUES, app, configure
from workers.process_runtime import WorkerRuntime, build_runtime, install_runtime
from workers.tasks import dispatch

pytestmark = pytest.mark.integration


class Deployment:
    def __init__(self, runtime: WorkerRuntime, sandboxes: Sandboxes, api_url: str):
        self.runtime, self.sandboxes, self.api_url = runtime, sandboxes, api_url
        self.store = runtime.engine.store

    def account(self, account_id: str, days_past_due: int, **fields: object) -> list[Contact]:
        clock = self.runtime.engine.clock
        due = clock.now().date() - timedelta(days=days_past_due)
        return list(self.runtime.engine.upsert(make_account(account_id, due_date=due, **fields)).queued)

    def status(self, account_id: str, contact_id: str) -> str | None:
        return self.store.claim_status(account_id, contact_id)

    def texts_to(self, number: str) -> list[dict[str, str]]:
        return [r["form"] for r in self.sandboxes.twilio.state.messages() if r["form"].get("To") == number]


@pytest.fixture
def deployment(redis_url: str, tmp_path: Path) -> Iterator[Deployment]:
    clock = ManualClock(datetime(2026, 3, 2, 3, 0, tzinfo=UTC))  # 11:00 in Shanghai
    sock = bind_loopback()
    api_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    sandboxes = start_sandboxes(tmp_path / "sandboxes", callback_base_url=api_url)
    # Outcome mechanics, not contact pressure (tests/property/test_contact_pressure.py): no spacing, so a
    # step's channels are due together as the tests below expect.
    unspaced = tmp_path / "strategy.yaml"
    unspaced.write_text(
        DEFAULT_STRATEGY.read_text(encoding="utf-8").replace("spacing_minutes: 120", "spacing_minutes: 0")
    )
    settings = load_settings(
        redis_url=redis_url, public_base_url=api_url, strategy_path=unspaced, **sandboxes.settings_overrides()
    )
    runtime = build_runtime(settings, dispatch, clock=clock, retry_wait=0.01)
    install_runtime(runtime)
    configure(settings)
    api = create_app(runtime.engine, settings)
    try:
        with ServerThread(api, sock), start_worker(
            app, pool="threads", concurrency=4, queues=list(QUEUES), perform_ping_check=False, loglevel="WARNING"
        ):  # fmt: skip
            yield Deployment(runtime, sandboxes, api_url)
    finally:
        install_runtime(None)
        sandboxes.stop()


def test_an_unanswered_call_is_followed_by_a_missed_call_sms(deployment: Deployment) -> None:
    phone = "+8613812340002"  # the sandbox lets numbers ending 0002 ring out: no-answer
    [call] = [c for c in deployment.account("NA1", 2, phone=phone) if c.channel == "voice"]
    dispatch([call], batch=1)
    fallback = f"{call.id}/fb"
    eventually(lambda: deployment.status("NA1", fallback) == "sent", timeout=15)
    outcomes = [(e.contact_id, e.outcome) for e in deployment.store.load("NA1").history if e.kind == "outcome"]
    assert (call.id, "no_answer") in outcomes
    missed_call_texts = [t for t in deployment.texts_to(phone) if "call%2F0%2Ffb" in t["StatusCallback"]]
    assert len(missed_call_texts) == 1


def test_a_bounced_email_invalidates_the_address_and_falls_back_to_sms(deployment: Deployment) -> None:
    contacts = deployment.account("BO1", 16, email="bounce-me@example.com", phone="+8613812341111")
    [email] = [c for c in contacts if c.channel == "email"]
    dispatch([email], batch=1)
    eventually(lambda: deployment.status("BO1", f"{email.id}/fb") == "sent", timeout=15)
    loaded = deployment.store.load("BO1")
    assert "email" in loaded.record.state.invalid_addresses
    assert (email.id, "bounced") in [(e.contact_id, e.outcome) for e in loaded.history if e.kind == "outcome"]
    attempts = [(a.contact_id, a.channel) for a in loaded.history if a.kind == "attempt"]
    assert (email.id, "email") in attempts and (f"{email.id}/fb", "sms") in attempts


def test_a_returned_letter_invalidates_the_postal_address(deployment: Deployment) -> None:
    address = PostalAddress(line1="RETURN 9 Nowhere Rd", city="Shanghai", postal_code="200000", country="CN")
    [letter] = [c for c in deployment.account("RT1", 60, address=address) if c.channel == "letter"]
    dispatch([letter], batch=1)
    eventually(lambda: "postal" in deployment.store.load("RT1").record.state.invalid_addresses, timeout=15)
    outcomes = [e.outcome for e in deployment.store.load("RT1").history if e.kind == "outcome"]
    assert "returned" in outcomes


def test_an_inbound_stop_in_chinese_opts_the_account_out_of_sms(deployment: Deployment) -> None:
    phone = "+8613812342222"
    deployment.account("ST1", 1, phone=phone)
    url = f"{deployment.api_url}/v1/webhooks/twilio/inbound-sms"
    params = {"MessageSid": "SMinbound1", "From": phone, "To": "+15005550006", "Body": "退订"}
    signature = RequestValidator("sandbox-auth-token").compute_signature(url, params)
    response = httpx.post(url, data=params, headers={"X-Twilio-Signature": signature})
    assert response.status_code == 200
    assert "sms" in deployment.store.load("ST1").record.state.opted_out
    request = AdhocContact(channel=Channel.SMS, template="reminder_sms", key="agent-1")
    decisions = deployment.runtime.engine.record_event("ST1", request).plan.decisions
    assert [(d.contact_id, d.verdict, d.rule) for d in decisions if "adhoc" in d.contact_id] == [
        ("ST1/adhoc/agent-1/0", "deny", "opted_out:sms")
    ]


def test_a_payment_mid_run_means_the_pending_contacts_are_never_sent(deployment: Deployment) -> None:
    phone = "+8613812343333"
    engine = deployment.runtime.engine
    held: list[Contact] = []
    engine.on_queued, dispatcher = held.extend, engine.on_queued  # hold them back: they are in flight
    pending = deployment.account("PM1", 2, phone=phone)
    engine.on_queued = dispatcher
    assert {c.channel for c in pending} == {"sms", "voice"}
    deployment.runtime.engine.record_event("PM1", Payment(amount=make_account().balance))
    dispatch(pending, batch=10)
    eventually(lambda: len([a for a in deployment.store.audit("PM1") if a["type"] == "last_look"]) == 2)
    assert all(deployment.status("PM1", c.id) is None for c in pending)
    assert deployment.texts_to(phone) == []
    calls = [r for r in deployment.sandboxes.twilio.state.calls() if r["form"].get("To") == phone]
    assert calls == []


def _twiml_for(deployment: Deployment, call_sid: str) -> str:
    fetched = [r for r in deployment.sandboxes.twilio.state.twiml_fetched() if r["call_sid"] == call_sid]
    assert len(fetched) == 1 and fetched[0]["status"] == 200, fetched
    return str(fetched[0]["twiml"])


def _call_sid(deployment: Deployment, account_id: str, contact_id: str) -> str:
    [sid] = [e.detail["provider_id"] for e in deployment.store.load(account_id).history
             if e.kind == "outcome" and e.contact_id == contact_id and e.outcome == "sent"]  # fmt: skip
    return sid


def test_a_machine_that_answers_hears_only_the_limited_content_voicemail(deployment: Deployment) -> None:
    phone = "+8613812340004"  # the sandbox answers numbers ending 0004 with a machine, after the beep
    [call] = [c for c in deployment.account("VM1", 2, phone=phone) if c.channel == "voice"]
    dispatch([call], batch=1)
    eventually(lambda: any(e.outcome == "voicemail" for e in deployment.store.load("VM1").history), timeout=15)
    twiml = _twiml_for(deployment, _call_sid(deployment, "VM1", call.id))
    assert twiml.count("请回电") == 2 and "<Pause" in twiml  # said twice, with a pause
    assert "5,000" not in twiml and "¥" not in twiml and "信用卡" not in twiml  # no debt for whoever plays it


def test_a_person_who_answers_hears_the_steps_message_in_their_language(deployment: Deployment) -> None:
    [call] = [c for c in deployment.account("HU1", 2, phone="+8613812347777") if c.channel == "voice"]
    dispatch([call], batch=1)
    eventually(lambda: any(e.outcome == "answered" for e in deployment.store.load("HU1").history), timeout=15)
    twiml = _twiml_for(deployment, _call_sid(deployment, "HU1", call.id))
    assert 'language="zh-CN"' in twiml and "5,000.00" in twiml and "<Pause" not in twiml
