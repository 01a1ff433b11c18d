"""Each step of the send pipeline (workers/delivery.py) alone, on the real Redis: what it leaves in the claim
ledger and what it hands the next step. The whole pipeline is exercised by test_delivery_batches.py and the
worker tests; these pin each step's own promise."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from channels.base import (
    OutboundMessage,
    PermanentDeliveryError,
    ProviderMisconfigured,
    RateLimited,
    Receipt,
    TransientDeliveryError,
)
from dispatcher.core.clock import ManualClock
from dispatcher.core.models import ClaimStatus, Contact
from dispatcher.state.redis_keys import rate_window_key
from tests.conftest import make_account
from workers.delivery import Batch, One, breaker, claim, compose, last_look, limiter, send
from workers.limiter import Limit, RateLimiter, TokenRun
from workers.process_runtime import WorkerRuntime

pytestmark = pytest.mark.integration


class _Answers:
    """An SMS adapter whose provider answers with `reply` (a Receipt, or an error it raises)."""

    name = "sms"

    def __init__(self, reply: Receipt | Exception):
        self.reply, self.sent = reply, 0

    def send(self, message: OutboundMessage) -> Receipt:
        self.sent += 1
        if isinstance(self.reply, Exception):
            raise self.reply
        return self.reply

    def close(self) -> None:
        pass


def _queued(runtime: WorkerRuntime, clock: ManualClock, account_id: str) -> Contact:
    runtime.engine.on_queued = lambda contacts: None
    account = make_account(account_id, due_date=clock.now().date() - timedelta(days=1))
    (result,) = runtime.engine.upsert_many([account])
    return next(contact for contact in result.queued if contact.channel.value == "sms")


def _batch(runtime: WorkerRuntime, *contacts: Contact) -> Batch:
    loaded = runtime.engine.store.load_many(sorted({contact.account_id for contact in contacts}))
    batch = Batch({one.account_id: one for one in loaded})
    batch.pending.update(contact.channel.value for contact in contacts)
    return batch


def _status(runtime: WorkerRuntime, contact: Contact) -> ClaimStatus | None:
    return runtime.engine.store.ledger.status(contact.account_id, contact.id)


def _claimed(runtime: WorkerRuntime, clock: ManualClock, account_id: str) -> tuple[Batch, One]:
    contact = _queued(runtime, clock, account_id)
    batch, one = _batch(runtime, contact), One(contact, "twilio", "sms")
    assert breaker(runtime.deliverer, batch, one) is None
    assert last_look(runtime.deliverer, batch, one) is None and claim(runtime.deliverer, batch, one) is None
    return batch, one


def test_an_open_circuit_holds_the_contact_unclaimed_and_the_record_step_parks_it(
    runtime: WorkerRuntime, clock: ManualClock
) -> None:
    contact = _queued(runtime, clock, "B1")
    runtime.deliverer.breaker.trip(ProviderMisconfigured("401", "twilio", "DISPATCHER_TWILIO_AUTH_TOKEN"), "sms")
    batch = _batch(runtime, contact)
    held = breaker(runtime.deliverer, batch, One(contact, "twilio", "sms"))
    assert held is not None and held.result == "circuit_open"
    assert _status(runtime, contact) == ClaimStatus.QUEUED  # nothing claimed, no attempt written
    runtime.deliverer.record(batch)
    assert _status(runtime, contact) is None  # forgotten: the planner queues it again when the account wakes
    assert runtime.engine.store.redis.zscore(runtime.engine.store.wake_key(runtime.engine.store.shard_of("B1")), "B1")


def test_last_look_and_claim_let_one_caller_through(runtime: WorkerRuntime, clock: ManualClock) -> None:
    batch, one = _claimed(runtime, clock, "L1")
    assert one.attempt is not None and _status(runtime, one.contact) == ClaimStatus.SENDING
    again = One(one.contact, "twilio", "sms")
    second = _batch(runtime, one.contact)
    last_look(runtime.deliverer, second, again)
    refused = claim(runtime.deliverer, second, again)
    assert refused is not None and refused.result == "claimed_elsewhere"


def test_last_look_denies_a_contact_of_an_unknown_account(runtime: WorkerRuntime, clock: ManualClock) -> None:
    contact = _queued(runtime, clock, "L2")
    stranger = dataclasses.replace(contact, id=contact.id.replace("L2", "L9"), account_id="L9")
    batch, one = _batch(runtime, stranger), One(stranger, "twilio", "sms")
    last_look(runtime.deliverer, batch, one)
    denied = claim(runtime.deliverer, batch, one)
    assert denied is not None and (denied.result, denied.detail) == ("denied", "unknown_account")


def test_the_limiter_step_takes_a_token_per_request_and_holds_the_rest_of_the_batch(
    runtime: WorkerRuntime, clock: ManualClock
) -> None:
    runtime.deliverer.limiter = RateLimiter(runtime.settings.redis_url or "", {"sms": Limit(1.0)})
    batch, one = _claimed(runtime, clock, "R1")
    limiter(runtime.deliverer, batch, one)
    assert one.token is not None
    one.token()  # the first request of the second goes
    with pytest.raises(RateLimited):
        one.token()  # a retry needs a token of its own


def test_tokens_taken_ahead_are_used_only_within_their_share_of_the_guard(runtime: WorkerRuntime) -> None:
    limit = Limit(200.0)  # five tokens in a token's lifetime (a quarter of the 0.1 s guard)
    limits = RateLimiter(runtime.settings.redis_url or "", {"sms": limit})
    window = rate_window_key("sms", ("s",), limit.windows()[0][1])
    now = [100.0]
    run = TokenRun(limits, "sms", "s", now=lambda: now[0])

    def granted() -> int:
        return len(runtime.engine.store.redis.lrange(window, 0, -1))

    assert run.most == 5 and run.take(50) == 0.0
    assert granted() == 5  # one call granted five, stamped now
    assert [run.take(49) for _ in range(4)] == [0.0] * 4 and run.left == 0
    assert granted() == 5  # no call for those four
    assert run.take(45) == 0.0 and granted() == 10  # the next five, in one call
    now[0] += run.lifetime  # four of them outlive their share of the guard unused: dropped
    assert run.left == 4 and run.take(40) == 0.0
    assert granted() == 15 and run.left == 4  # a call for a fresh five, not one of the stale four


def test_a_template_that_cannot_render_gives_the_claim_back(runtime: WorkerRuntime, clock: ManualClock) -> None:
    batch, one = _claimed(runtime, clock, "C1")
    broken = One(dataclasses.replace(one.contact, template="no_such_template"), "twilio", "sms")
    broken.claim, broken.attempt = one.claim, one.attempt
    stopped = compose(runtime.deliverer, batch, broken)
    assert stopped is not None and stopped.result == "template_error" and batch.broken
    assert _status(runtime, one.contact) is None  # released and forgotten: the planner decides again


def test_compose_gives_the_channels_message(runtime: WorkerRuntime, clock: ManualClock) -> None:
    batch, one = _claimed(runtime, clock, "C2")
    assert compose(runtime.deliverer, batch, one) is None
    assert one.message is not None and one.message.contact_id == one.contact.id and one.message.text


@pytest.mark.parametrize(
    ("reply", "result", "status"),
    [
        (Receipt("SM1", "queued", 1), "sent", ClaimStatus.SENT),
        (PermanentDeliveryError("21211", "invalid_address"), "failed", ClaimStatus.FAILED),
        (TransientDeliveryError("read timeout", ambiguous=True), "unknown", ClaimStatus.UNKNOWN),
        (TransientDeliveryError("503"), "retry", ClaimStatus.QUEUED),
    ],
)
def test_send_then_record_end_the_claim_as_the_provider_answered(
    runtime: WorkerRuntime, clock: ManualClock, reply: Receipt | Exception, result: str, status: ClaimStatus
) -> None:
    runtime.deliverer.adapters = {**runtime.deliverer.adapters, "sms": _Answers(reply)}  # type: ignore[dict-item]
    batch, one = _claimed(runtime, clock, f"S{result}")
    limiter(runtime.deliverer, batch, one)
    compose(runtime.deliverer, batch, one)
    answered = send(runtime.deliverer, batch, one)
    assert answered.result == result
    assert _status(runtime, one.contact) == ClaimStatus.SENDING  # nothing written until the record step
    if one.ending is not None:  # what the runner notes of an ended claim for the record step
        batch.ended.append((one.contact, one.ending[0], one.ending[1]))
    runtime.deliverer.record(batch)
    assert _status(runtime, one.contact) == status


def test_a_misconfigured_provider_gives_the_claim_back_and_opens_its_circuit(
    runtime: WorkerRuntime, clock: ManualClock
) -> None:
    misconfigured = ProviderMisconfigured("401", "twilio", "DISPATCHER_TWILIO_AUTH_TOKEN")
    runtime.deliverer.adapters = {**runtime.deliverer.adapters, "sms": _Answers(misconfigured)}  # type: ignore[dict-item]
    batch, one = _claimed(runtime, clock, "M1")
    limiter(runtime.deliverer, batch, one)
    compose(runtime.deliverer, batch, one)
    assert send(runtime.deliverer, batch, one).result == "circuit_open"
    assert _status(runtime, one.contact) == ClaimStatus.QUEUED and batch.held["sms"] == [one.contact]
    assert runtime.deliverer.breaker.state("sms").is_open
