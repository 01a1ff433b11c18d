"""The callback spool: a verified callback that met a Redis outage is kept on disk, in order, and replayed
once Redis answers — also by the next API process when the one that spooled it died."""

# ruff: noqa: F811 - the fixtures imported from tests.api_fixtures come back as test parameters

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import redis

from channels.signatures import EMAIL_SIGNATURE, LOB_SIGNATURE
from config.settings import Settings
from dispatcher.api import callback_spool, create_app
from dispatcher.api.app import ServerThread
from dispatcher.api.callback_spool import CallbackSpool
from dispatcher.claims import ClaimStatus
from dispatcher.clock import ManualClock
from dispatcher.engine import Engine
from dispatcher.redis_server import EmbeddedRedis
from dispatcher.store import Store
from dispatcher.strategy import Strategy
from tests.api_fixtures import Api, account_body, api, api_keys, api_settings  # noqa: F401
from tests.conftest import make_account
from tests.worker_fixtures import eventually

pytestmark = pytest.mark.integration


def test_a_spool_keeps_what_redis_refused_in_order_and_replays_it_when_redis_answers(tmp_path: Path) -> None:
    answered: list[str] = []
    away = {"now": True}

    def replay(record: dict[str, Any]) -> None:
        if away["now"]:
            raise redis.exceptions.ConnectionError("Connection refused")
        answered.append(record["n"])

    spool = CallbackSpool(tmp_path / "spool.ndjson", replay)
    # Written as append() writes, without starting its replayer, so the test drives the replays itself.
    spool.path.write_text("".join(json.dumps({"n": n}) + "\n" for n in ("1", "2", "3")))
    assert spool.replay_once() is False
    assert spool.pending() == 3
    away["now"] = False
    assert spool.replay_once() is True
    assert answered == ["1", "2", "3"]
    assert not spool.path.exists()


def test_a_spool_left_by_a_dead_api_process_is_replayed_by_the_next_one(api: Api) -> None:
    [contact] = api.engine.upsert(make_account("A1")).queued
    assert api.engine.gate.claim(contact).verdict == "send"
    api.engine.gate.end_claim(contact, ClaimStatus.SENT)
    left = api.settings.state_dir / "spool" / "callbacks.ndjson"
    left.parent.mkdir(parents=True, exist_ok=True)
    found = [{"contact_id": contact.id, "kind": "delivered", "provider_id": "SM9", "detail": {}}]
    record = {"kind": "outcomes", "channel": "sms", "rank": 3, "source": "twilio:delivered", "found": found}
    left.write_text(json.dumps(record) + "\n")
    create_app(api.engine, api.settings)  # the next process starts
    eventually(lambda: not left.exists(), timeout=10)
    outcomes = [e.outcome for e in api.store.load("A1").history if e.kind == "outcome"]
    assert "delivered" in outcomes


# --- while Redis is away: the answer the docs promise, for every callback that is spooled ---

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _documented_spooled_status() -> int:
    """The status docs/api.md's Webhooks section promises for a callback spooled while the store is away."""
    text = (DOCS / "api.md").read_text(encoding="utf-8")
    webhooks = text[text.index("\n## Webhooks") :]
    webhooks = webhooks[: webhooks.index("\n## ", 1)]
    found = re.search(r'answered \*\*(\d{3})\*\*\s+`\{"status": "spooled"', webhooks)
    assert found is not None, "docs/api.md, Webhooks: no answer given for a spooled callback"
    assert "webhooks answer 503" not in text and "webhooks included) answers **503**" not in text
    return int(found.group(1))


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "redis").start()  # AOF on: stopped and started again with its data
    yield server
    server.stop()


def test_while_redis_is_away_every_callback_gets_the_documented_success_and_is_recorded_later(
    own_redis: EmbeddedRedis, api_settings: Settings, strategy: Strategy, clock: ManualClock,
    api_keys: dict[str, tuple[str, str]],
) -> None:  # fmt: skip
    documented = _documented_spooled_status()
    assert 200 <= documented < 300  # a provider retries anything else, and the callback is safely kept
    assert f'answer: {documented} `{{"status": "spooled"}}`' in " ".join((callback_spool.__doc__ or "").split())
    store = Store.from_url(own_redis.url)
    engine = Engine(store, strategy, clock, on_queued=lambda contacts: None)
    with ServerThread(create_app(engine, api_settings)) as server, httpx.Client(base_url=server.url) as client:
        api = Api(server.url, client, api_keys, api_settings, engine, store, clock)
        assert api.put_account("A1", account_body()).status_code == 201
        for contact_id in ("A1/reminder/sms/0", "A1/reminder/call/0", "A1/letter/demand/0", "A1/early/email/0"):
            store.redis.hset("{a:A1}:claims", contact_id, "sent")  # as a worker's end_claim leaves it
        own_redis.stop()

        answers = {
            "message-status": api.twilio(_twilio("message-status", "A1/reminder/sms/0"),
                                         {"MessageSid": "SM1", "MessageStatus": "delivered"}),
            "call-status": api.twilio(_twilio("call-status", "A1/reminder/call/0"),
                                      {"CallSid": "CA1", "CallStatus": "busy"}),
            "print-vendor": _lob(api, "A1/letter/demand/0"),
            "email-bounce": _bounce(api, "A1/early/email/0"),
        }  # fmt: skip
        for name, answer in answers.items():
            assert (name, answer.status_code, answer.json()["status"]) == (name, documented, "spooled")
        stop = api.twilio("/v1/webhooks/twilio/inbound-sms", {"From": "+8613800138000", "Body": "STOP"})
        assert (stop.status_code, stop.headers["content-type"].split(";")[0]) == (documented, "text/xml")
        twiml = api.twilio(_twilio("voice-twiml", "A1/reminder/call/0"), {"CallSid": "CA1"})
        assert twiml.status_code == 503  # the one callback that needs the store to answer at all

        with EmbeddedRedis(own_redis.data_dir, port=own_redis.port):
            recorded = lambda: sorted(e.outcome.value for e in store.load("A1").history if e.outcome)  # noqa: E731
            eventually(lambda: len(recorded()) == 4, timeout=15)
            assert recorded() == ["bounced", "busy", "delivered", "returned"]
            assert "sms" in {channel.value for channel in store.load("A1").record.state.opted_out}


def _twilio(kind: str, contact_id: str) -> str:
    return f"/v1/webhooks/twilio/{kind}?contact_id={quote(contact_id, safe='')}"


def _lob(api: Api, contact_id: str) -> httpx.Response:
    letter = {"id": "ltr_1", "metadata": {"contact_id": contact_id, "account_id": "A1"}}
    body = json.dumps({"id": "evt_1", "event_type": {"id": "letter.returned_to_sender"}, "body": letter}).encode()
    secret, stamp = api.settings.print_vendor_webhook_secret.get_secret_value(), str(int(time.time()))
    headers = {"Lob-Signature": LOB_SIGNATURE.sign(secret, stamp, body), "Lob-Signature-Timestamp": stamp,
               "Content-Type": "application/json"}  # fmt: skip
    return api.client.post("/v1/webhooks/print-vendor", content=body, headers=headers)


def _bounce(api: Api, contact_id: str) -> httpx.Response:
    body = json.dumps({"id": "b1", "type": "hard", "contact_id": contact_id}).encode()
    secret = api.settings.email_webhook_secret.get_secret_value()
    headers = {**EMAIL_SIGNATURE.headers(secret, body, time.time()), "Content-Type": "application/json"}
    return api.client.post("/v1/webhooks/email-bounce", content=body, headers=headers)
