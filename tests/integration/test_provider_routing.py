"""Providers under a channel, through the real parts: the worker's own wiring (build_runtime) on the real Redis,
the real Twilio SMS adapter, and two Twilio sandboxes: the channel's own provider (`twilio`) and a test-only
second one (`twilio_backup`, tests/provider_fixtures.py). What is shown: a contact goes where its country's
route says; a definite non-send fails over to the next provider and nothing is sent twice; a send that may
have left is never resent through the other provider and is reconciled through its own; an open circuit
gets no traffic; the debtor's own errors never fail over; a deferral neither fails over nor moves a weight."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import timedelta
from typing import Any

import pytest
import redis
from pydantic import SecretStr

from channels.base import ContactDeferred, OutboundMessage, Receipt
from channels.sandbox import HttpSandbox, Sandboxes
from channels.sandbox.twilio_api import TwilioSandbox
from channels.sms import SmsAdapter
from config.settings import SettingsError
from dispatcher.core.clock import ManualClock
from dispatcher.core.models import ClaimStatus, Contact
from dispatcher.core.timeline import timeline
from dispatcher.state.provider_health import RESTING
from tests import provider_fixtures
from tests.conftest import make_account
from tests.provider_fixtures import BACKUP, routed_settings, sends_by_contact
from workers.process_runtime import WorkerRuntime, build_runtime
from workers.queueing import dispatch
from workers.reconcile import reconcile

pytestmark = pytest.mark.integration

# The shared fixtures, bound here so pytest finds them (no conftest or plugin needed).
second_twilio = provider_fixtures.second_twilio
backup = provider_fixtures.backup

BOTH = {"sms": {"*": ["twilio", BACKUP]}}  # the channel's own provider first, the backup after it


@pytest.fixture
def routed(
    redis_url: str, worker_sandboxes: Sandboxes, clock: ManualClock, backup: object
) -> Iterator[Callable[..., WorkerRuntime]]:
    """A worker runtime (the workers' own wiring) with the routes given; its draw picks the first provider
    of equal weight, so which one is tried first is known."""

    def make(routes: Mapping[str, Mapping[str, Sequence[str]]], **more: Any) -> WorkerRuntime:
        runtime = build_runtime(routed_settings(redis_url, worker_sandboxes, routes, **more), dispatch, clock=clock,
                                retry_wait=0.01)  # fmt: skip
        runtime.engine.on_queued = lambda contacts: None
        runtime.deliverer.router.draw = lambda: 0.0
        return runtime

    yield make
    worker_sandboxes.twilio.faults.set(fail_503=0, accept_then_hang=0)
    worker_sandboxes.twilio.state.closed_prefixes = ()


def _sms(runtime: WorkerRuntime, clock: ManualClock, phones: Mapping[str, str]) -> list[Contact]:
    """The reminder SMS of new accounts (account id -> phone), queued and not dispatched."""
    due = clock.now().date() - timedelta(days=1)
    accounts = [make_account(account_id, phone=phone, due_date=due) for account_id, phone in phones.items()]
    queued = [c for result in runtime.engine.upsert_many(accounts) for c in result.queued]
    return [contact for contact in queued if contact.channel.value == "sms"]


def _attempts(runtime: WorkerRuntime, contact: Contact) -> list[str]:
    history = runtime.engine.store.load(contact.account_id).history
    return [e.detail["provider"] for e in history if e.kind == "attempt" and e.contact_id == contact.id]


def _audit(runtime: WorkerRuntime, contact: Contact, status: str) -> list[dict[str, Any]]:
    entries = runtime.engine.store.audit(contact.account_id)
    return [a for a in entries if a["type"] == "contact" and a["contact_id"] == contact.id and a["status"] == status]


def _sent(contacts: Sequence[Contact], *sandboxes: HttpSandbox[TwilioSandbox]) -> list[int]:
    """How often the sandboxes together accepted each of `contacts` (the sandboxes serve the whole module)."""
    counted = sends_by_contact(*sandboxes)
    return [counted[contact.id] for contact in contacts]


def _numbers(prefix: str, count: int, country: str = "+86139") -> dict[str, str]:
    return {f"{prefix}{i}": f"{country}{1000_0000 + 17 * i:08d}" for i in range(count)}


def test_each_contact_goes_through_the_provider_its_countrys_route_names(
    routed: Callable[..., WorkerRuntime], worker_sandboxes: Sandboxes, second_twilio: HttpSandbox[TwilioSandbox],
    clock: ManualClock,
) -> None:  # fmt: skip
    runtime = routed({"sms": {"CN": [BACKUP], "*": ["twilio"]}})
    chinese, american = _sms(runtime, clock, {"RC1": "+8613912340007", "RU1": "+12125550123"})
    assert [d.result for d in runtime.deliverer.deliver_many([chinese, american])] == ["sent", "sent"]
    assert _sent([chinese, american], second_twilio) == [1, 0]  # the +86 number went to the backup only
    assert _sent([chinese, american], worker_sandboxes.twilio) == [0, 1]
    assert (_attempts(runtime, chinese), _attempts(runtime, american)) == ([BACKUP], ["twilio"])
    assert [a["provider"] for a in _audit(runtime, chinese, "sent")] == [BACKUP]  # the attempt's end names it
    loaded = runtime.engine.store.load(chinese.account_id)
    assert loaded.record is not None
    assert [row["provider"] for row in timeline(loaded.record, loaded.history) if row["kind"] == "attempt"] == [BACKUP]
    # Each provider's rate limit is its own: the backup's windows are keyed by its key, the channel's stay.
    keys = set(runtime.engine.store.redis.keys("{rl:*"))
    assert any(key.startswith(f"{{rl:sms.{BACKUP}:") for key in keys) and any(k.startswith("{rl:sms:") for k in keys)


@pytest.mark.parametrize("fault", ["503", "connection refused"])
def test_a_provider_that_is_down_fails_over_to_the_next_and_nothing_is_sent_twice(
    routed: Callable[..., WorkerRuntime], worker_sandboxes: Sandboxes, second_twilio: HttpSandbox[TwilioSandbox],
    clock: ManualClock, fault: str,
) -> None:  # fmt: skip
    runtime = routed(BOTH)
    if fault == "503":
        worker_sandboxes.twilio.faults.set(fail_503=1000)
    else:
        with socket.socket() as probe:  # a port nothing listens on: the connection is refused, nothing left
            probe.bind(("127.0.0.1", 0))
            closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
        refused = runtime.settings.model_copy(update={"twilio_api_base_url": closed})
        runtime.deliverer.adapters["sms"] = SmsAdapter(refused)
    contacts = _sms(runtime, clock, _numbers(f"RD{len(fault)}", 6))
    assert [d.result for d in runtime.deliverer.deliver_many(contacts)] == ["sent"] * 6
    assert _sent(contacts, worker_sandboxes.twilio, second_twilio) == [1] * 6  # each once, in all
    assert _sent(contacts, second_twilio) == [1] * 6  # through the backup
    store = runtime.engine.store
    assert {store.claim_status(c.account_id, c.id) for c in contacts} == {ClaimStatus.SENT}
    for contact in contacts:
        assert _attempts(runtime, contact) == [BACKUP]  # the released attempt left the caps: one attempt
        [failover] = _audit(runtime, contact, "not_sent")
        assert (failover["reason"], failover["provider"]) == ("failover", "twilio")
        assert [a["provider"] for a in _audit(runtime, contact, "sent")] == [BACKUP]


def test_a_send_that_may_have_left_stays_in_doubt_and_is_reconciled_through_its_own_provider_only(
    routed: Callable[..., WorkerRuntime], worker_sandboxes: Sandboxes, second_twilio: HttpSandbox[TwilioSandbox],
    clock: ManualClock,
) -> None:  # fmt: skip
    runtime = routed(BOTH)
    runtime.deliverer.adapters["sms"] = SmsAdapter(runtime.settings, timeout=0.5)  # the client gives up first
    worker_sandboxes.twilio.faults.set(accept_then_hang=2, accept_hang_seconds=2.0)  # accepted, then no answer
    contacts = _sms(runtime, clock, _numbers("RT", 2))
    assert [d.result for d in runtime.deliverer.deliver_many(contacts)] == ["unknown", "unknown"]
    asked_before = second_twilio.request_count
    assert _sent(contacts, second_twilio) == [0, 0]  # never resent through the other provider
    assert [_attempts(runtime, c) for c in contacts] == [["twilio"], ["twilio"]]
    assert reconcile(runtime, now=time.time() + 3600) == {"sent": 2}  # Twilio's own list has them
    assert second_twilio.request_count == asked_before  # the other provider was not even asked
    for contact in contacts:
        assert runtime.engine.store.claim_status(contact.account_id, contact.id) == ClaimStatus.SENT
        [reconciled] = _audit(runtime, contact, "sent")
        assert (reconciled["reason"], reconciled["provider"]) == ("reconciled_unknown", "twilio")
    assert _sent(contacts, worker_sandboxes.twilio, second_twilio) == [1, 1]


def test_a_provider_whose_circuit_is_open_gets_no_traffic(
    routed: Callable[..., WorkerRuntime], worker_sandboxes: Sandboxes, second_twilio: HttpSandbox[TwilioSandbox],
    clock: ManualClock,
) -> None:  # fmt: skip
    runtime = routed(BOTH)
    wrong = runtime.settings.model_copy(update={"twilio_auth_token": SecretStr("not-the-token")})
    runtime.deliverer.adapters["sms"] = SmsAdapter(wrong)  # Twilio answers 401: misconfigured, its circuit opens
    before = worker_sandboxes.twilio.request_count
    contacts = _sms(runtime, clock, _numbers("RB", 4))
    assert [d.result for d in runtime.deliverer.deliver_many(contacts)] == ["sent"] * 4
    assert worker_sandboxes.twilio.request_count - before == 1  # the first contact's request, then nothing
    assert runtime.deliverer.breaker.state("sms").is_open
    assert _sent(contacts, second_twilio) == [1] * 4
    assert [_attempts(runtime, c) for c in contacts] == [[BACKUP]] * 4
    # Another batch while it is still open: nothing reaches it, not even a first request.
    more = _sms(runtime, clock, _numbers("RB9", 3))
    assert [d.result for d in runtime.deliverer.deliver_many(more)] == ["sent"] * 3
    assert worker_sandboxes.twilio.request_count - before == 1
    assert not any(_audit(runtime, c, "not_sent") for c in more)  # chosen around it, not failed over


def test_the_debtors_own_refusal_never_fails_over_the_providers_own_does(
    routed: Callable[..., WorkerRuntime], worker_sandboxes: Sandboxes, second_twilio: HttpSandbox[TwilioSandbox],
    clock: ManualClock,
) -> None:  # fmt: skip
    runtime = routed(BOTH)
    invalid, opted_out = _sms(runtime, clock, {"RI1": "+8613912340005", "RI2": "+8613912340006"})
    assert [d.result for d in runtime.deliverer.deliver_many([invalid, opted_out])] == ["failed", "failed"]
    assert _sent([invalid, opted_out], second_twilio) == [0, 0]  # the debtor's own: no failover
    assert [_attempts(runtime, c) for c in (invalid, opted_out)] == [["twilio"], ["twilio"]]
    worker_sandboxes.twilio.state.closed_prefixes = ("+86",)  # Twilio's account may not send to China (21408)
    [refused] = _sms(runtime, clock, {"RI3": "+8613912340008"})
    assert [d.result for d in runtime.deliverer.deliver_many([refused])] == ["sent"]
    assert _sent([refused], second_twilio) == [1] and _attempts(runtime, refused) == [BACKUP]


class _Deferring(SmsAdapter):
    """The real adapter, whose provider refuses one recipient for today (a per-number daily limit)."""

    def send(self, message: OutboundMessage) -> Receipt:
        if message.to == "+8613912340009":
            raise ContactDeferred("per-number daily limit", retry_after=3600.0)
        return super().send(message)


def test_a_deferral_for_one_recipient_neither_fails_over_nor_moves_a_weight(
    routed: Callable[..., WorkerRuntime], second_twilio: HttpSandbox[TwilioSandbox], clock: ManualClock
) -> None:
    runtime = routed(BOTH, provider_error_burst=1)  # a single failure would be a burst
    runtime.deliverer.adapters["sms"] = _Deferring(runtime.settings)
    [limited] = _sms(runtime, clock, {"RL1": "+8613912340009"})
    [delivery] = runtime.deliverer.deliver_many([limited])
    assert (delivery.result, delivery.retry_in) == ("retry_later", 3600.0)  # an hour: on the schedule
    assert _sent([limited], second_twilio) == [0]
    assert runtime.engine.store.claim_status(limited.account_id, limited.id) is None  # forgotten: replanned
    assert [a["reason"] for a in _audit(runtime, limited, "not_sent")] == ["deferred_by_provider"]
    assert runtime.deliverer.router.weights("sms") == {"twilio": RESTING, BACKUP: RESTING}
    client = redis.Redis.from_url(runtime.settings.redis_url or "")
    assert client.keys("{pw:*") == []  # nothing counted, nothing moved


def test_a_burst_of_failures_in_the_pipeline_moves_the_shared_weights_once(
    routed: Callable[..., WorkerRuntime], worker_sandboxes: Sandboxes, second_twilio: HttpSandbox[TwilioSandbox],
    clock: ManualClock,
) -> None:  # fmt: skip
    runtime = routed(BOTH, provider_error_burst=2)
    worker_sandboxes.twilio.faults.set(fail_503=1000)
    contacts = _sms(runtime, clock, _numbers("RW", 6))
    assert [d.result for d in runtime.deliverer.deliver_many(contacts)] == ["sent"] * 6  # each via the backup
    assert runtime.deliverer.router.weights("sms") == {"twilio": RESTING - 10, BACKUP: RESTING + 10}  # once
    other_worker = routed(BOTH, provider_error_burst=2)  # another process reads the same weights
    assert other_worker.deliverer.router.weights("sms") == {"twilio": RESTING - 10, BACKUP: RESTING + 10}


def test_a_worker_refuses_to_start_with_a_route_to_a_provider_it_cannot_build(
    redis_url: str, worker_sandboxes: Sandboxes, clock: ManualClock
) -> None:
    settings = routed_settings(redis_url, worker_sandboxes, {"sms": {"CN": ["sinch", "twilio"]}})
    with pytest.raises(
        SettingsError, match=r"DISPATCHER_ROUTES: sms has no provider 'sinch' \(providers of sms: aliyun, twilio"
    ):
        build_runtime(settings, dispatch, clock=clock)
