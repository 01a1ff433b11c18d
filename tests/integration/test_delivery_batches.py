"""A send batch through the Deliverer on the real Redis and the Twilio sandbox over HTTP: tokens taken for
the batch at once, one claim just before each send, and what a worker dying mid-batch leaves behind."""

from __future__ import annotations

import dataclasses
import time
from datetime import timedelta

import pytest
import redis

from channels import REGISTRY, ChannelSpec
from channels.base import OutboundMessage, Receipt, pass_request_gate
from channels.render import TemplateContextError
from channels.sandbox import Sandboxes
from channels.spec import Draft, Stash
from config.settings import Settings
from dispatcher.core.clock import ManualClock
from dispatcher.core.models import Contact
from dispatcher.core.timeline import timeline
from tests.conftest import make_account
from workers.limiter import ARRIVAL_JITTER_GUARD, Limit, RateLimiter
from workers.process_runtime import WorkerRuntime, build_runtime
from workers.queueing import dispatch
from workers.reconcile import reconcile

pytestmark = pytest.mark.integration


class _WorkerDies(BaseException):
    """Stands in for SIGKILL: nothing after it in the task runs."""


class _DiesOnSend:
    """The real SMS adapter, except that the worker dies as the `fatal`-th message is about to go."""

    def __init__(self, real: object, fatal: int):
        self.real, self.fatal, self.calls, self.name = real, fatal, 0, "sms"

    def send(self, message: OutboundMessage) -> Receipt:
        self.calls += 1
        if self.calls == self.fatal:
            raise _WorkerDies
        return self.real.send(message)  # type: ignore[attr-defined]

    def close(self) -> None:
        pass


def _queued(runtime: WorkerRuntime, clock: ManualClock, prefix: str, count: int) -> list[Contact]:
    runtime.engine.on_queued = lambda contacts: None  # the test sends them itself
    accounts = [
        make_account(f"{prefix}{i}", phone=f"+86139{abs(hash(prefix)) % 1000:03d}{i:04d}7",
                     due_date=clock.now().date() - timedelta(days=1))
        for i in range(count)
    ]  # fmt: skip
    return [contact for result in runtime.engine.upsert_many(accounts) for contact in result.queued]


def _texts(sandboxes: Sandboxes, contact: Contact) -> int:
    return sum(1 for m in sandboxes.twilio.state.messages() if f"/{contact.id}" in m["form"].get("StatusCallback", ""))


def _sent_to(sandboxes: Sandboxes, runtime: WorkerRuntime, contact: Contact) -> int:
    account = runtime.engine.store.load(contact.account_id).record
    assert account is not None
    return sum(1 for m in sandboxes.twilio.state.messages() if m["form"].get("To") == account.account.phone)


def test_many_tokens_are_granted_up_to_each_window_and_the_rest_told_when(redis_url: str) -> None:
    limiter = RateLimiter(redis_url, {"sms": Limit(rate=10, burst=2)})  # <= 12 in a second, <= 100 in ten
    assert limiter.acquire_many(5, "sms", "s") == (5, 0.0)
    granted, wait = limiter.acquire_many(50, "sms", "s")
    assert granted == 7 and 0.0 < wait <= 1.0 + ARRIVAL_JITTER_GUARD
    assert limiter.acquire_many(3, "sms", "s")[0] == 0
    client = redis.Redis.from_url(redis_url)
    assert client.llen("{rl:sms:s}:1s") == 12 and client.llen("{rl:sms:s}:10s") == 12
    assert limiter.acquire_many(4, "letter", "x") == (4, 0.0)  # no limit configured for letters


def test_a_batch_past_its_tokens_sends_what_was_granted_and_leaves_the_rest_unclaimed(
    runtime: WorkerRuntime, worker_sandboxes: Sandboxes, clock: ManualClock
) -> None:
    contacts = _queued(runtime, clock, "TK", 5)
    limits = {"sms": Limit(rate=3)}
    runtime.deliverer.limiter = RateLimiter(runtime.settings.redis_url or "", limits)
    deliveries = runtime.deliverer.deliver_many(contacts)
    assert [d.result for d in deliveries] == ["sent"] * 3 + ["throttled"] * 2
    assert all(d.retry_in and 0.0 < d.retry_in <= 1.0 + ARRIVAL_JITTER_GUARD for d in deliveries[3:]), deliveries
    store = runtime.engine.store
    assert [store.claim_status(c.account_id, c.id) for c in contacts] == ["sent"] * 3 + ["queued"] * 2
    assert [a.get("reason") for a in store.audit(contacts[4].account_id) if a["type"] == "contact"] == ["rate_limited"]


def test_a_template_that_cannot_render_fails_loudly_after_the_rest_of_the_batch_is_sent(
    runtime: WorkerRuntime, worker_sandboxes: Sandboxes, clock: ManualClock
) -> None:
    good_before, bad, good_after = _queued(runtime, clock, "TP", 3)
    broken = dataclasses.replace(bad, template="no_such_template")
    with pytest.raises(TemplateContextError, match="no_such_template"):
        runtime.deliverer.deliver_many([good_before, broken, good_after])
    store = runtime.engine.store
    assert store.claim_status(good_before.account_id, good_before.id) == "sent"
    assert store.claim_status(good_after.account_id, good_after.id) == "sent"
    assert store.claim_status(bad.account_id, bad.id) is None  # given back: the planner may queue it again
    assert not [e for e in store.load(bad.account_id).history if e.kind == "attempt"]
    assert _sent_to(worker_sandboxes, runtime, bad) == 0


def test_a_worker_dying_mid_batch_leaves_one_claim_in_doubt_and_the_redelivered_batch_sends_the_rest_once(
    runtime: WorkerRuntime, worker_sandboxes: Sandboxes, clock: ManualClock
) -> None:
    contacts = _queued(runtime, clock, "KL", 6)
    real = runtime.deliverer.adapters["sms"]
    runtime.deliverer.adapters["sms"] = _DiesOnSend(real, fatal=3)  # type: ignore[assignment]
    with pytest.raises(_WorkerDies):
        runtime.deliverer.deliver_many(contacts)
    store = runtime.engine.store
    # Two went out with their claims not ended, the third was claimed and not sent; the last three were never claimed.
    assert [store.claim_status(c.account_id, c.id) for c in contacts] == ["sending"] * 3 + ["queued"] * 3

    runtime.deliverer.adapters["sms"] = real  # the broker hands the unacknowledged task to another worker
    redelivered = runtime.deliverer.deliver_many(contacts)
    assert [d.result for d in redelivered] == ["claimed_elsewhere"] * 3 + ["sent"] * 3
    assert [_sent_to(worker_sandboxes, runtime, c) for c in contacts] == [1, 1, 0, 1, 1, 1]

    # Once no task can still be sending them, the provider's own records decide: the two it has are sent,
    # the one it never saw is released for the planner, which sends it once.
    counts = reconcile(runtime, now=time.time() + 3600)
    assert counts == {"sent": 2, "released": 1}
    assert [store.claim_status(c.account_id, c.id) for c in contacts[:3]] == ["sent", "sent", None]
    [again] = [c for result in runtime.engine.replan_many([contacts[2].account_id]) for c in result.queued]
    assert runtime.deliverer.deliver_many([again])[0].result == "sent"
    assert [_sent_to(worker_sandboxes, runtime, c) for c in contacts] == [1] * 6
    reasons = [e.get("reason") for e in store.audit(contacts[2].account_id) if e["type"] == "contact"]
    assert "provider_has_none" in reasons


class _Loft:
    """A channel's adapter as its registry entry names it: keeps what it was asked to send."""

    name = "sms"
    sent: list[OutboundMessage] = []

    def __init__(self, settings: object, **options: object) -> None:
        pass

    def send(self, message: OutboundMessage) -> Receipt:
        pass_request_gate()  # where every adapter takes its rate-limit token
        self.sent.append(message)
        return Receipt(provider_id=f"loft-{len(self.sent)}", status="sent")

    def close(self) -> None:
        pass


def _rung(draft: Draft) -> OutboundMessage:
    return draft.message(local_day=draft.local_today.isoformat())


def _with_script(message: OutboundMessage, settings: object, stash: Stash) -> OutboundMessage:
    stash(message.account_id, message.contact_id, {"human": message.text}, 60)
    return dataclasses.replace(message, extra={**message.extra, "prepared": "yes"})


def test_the_deliverer_sends_a_channel_as_its_registry_entry_says(
    monkeypatch: pytest.MonkeyPatch, worker_settings: Settings, worker_sandboxes: Sandboxes, clock: ManualClock
) -> None:
    spec = ChannelSpec(name="sms", adapter=_Loft, compose=_rung, sender=lambda settings: "loft-7", prepare=_with_script)
    monkeypatch.setitem(REGISTRY, "sms", spec)
    monkeypatch.setattr(_Loft, "sent", [])
    runtime = build_runtime(worker_settings, dispatch, clock=clock, retry_wait=0.01)  # the workers' own wiring
    runtime.deliverer.limiter = RateLimiter(worker_settings.redis_url or "", {"sms": Limit(rate=100)})
    contacts = _queued(runtime, clock, "LF", 2)
    assert [d.result for d in runtime.deliverer.deliver_many(contacts)] == ["sent", "sent"]
    assert [m.contact_id for m in _Loft.sent] == [c.id for c in contacts]
    assert {m.extra["local_day"] for m in _Loft.sent} == {"2026-03-02"} and _Loft.sent[0].extra["prepared"] == "yes"
    store = runtime.engine.store
    assert store.voice_scripts(contacts[0].account_id, contacts[0].id) == {"human": _Loft.sent[0].text}
    assert redis.Redis.from_url(worker_settings.redis_url or "").llen("{rl:sms:loft-7}:1s") == 2
    assert _sent_to(worker_sandboxes, runtime, contacts[0]) == 0  # the registry's adapter, not Twilio


def test_a_send_names_twilio_on_its_attempt_its_audit_and_its_timeline(
    runtime: WorkerRuntime, worker_sandboxes: Sandboxes, clock: ManualClock
) -> None:
    [contact] = _queued(runtime, clock, "PV", 1)
    assert [d.result for d in runtime.deliverer.deliver_many([contact])] == ["sent"]
    assert _sent_to(worker_sandboxes, runtime, contact) == 1
    store = runtime.engine.store
    loaded = store.load(contact.account_id)
    [attempt] = [e for e in loaded.history if e.kind == "attempt"]
    assert attempt.detail["provider"] == "twilio"
    [ended] = [a for a in store.audit(contact.account_id) if a["type"] == "contact" and a["status"] == "sent"]
    assert ended["provider"] == "twilio" and ended["channel"] == "sms"
    assert loaded.record is not None
    [row] = [row for row in timeline(loaded.record, loaded.history) if row["kind"] == "attempt"]
    assert row["provider"] == "twilio" and row["contact_id"] == contact.id
    # The rate limit stays keyed by the channel: its state in Redis is where it always was.
    keys = {key.decode() for key in redis.Redis.from_url(runtime.settings.redis_url or "").keys("{rl:*")}
    assert any(key.startswith("{rl:sms:") for key in keys) and not any("twilio" in key for key in keys), keys
