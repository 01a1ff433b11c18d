"""Outcome callbacks end to end: the real engine commits on the real Redis, the relay reads the audit streams,
the sender posts to a real local receiver that verifies each request with `standardwebhooks`. The retry
schedule runs on the manual clock; no test sleeps for it."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from channels.sandbox import Sandboxes
from config.settings import Settings, load_settings
from dispatcher.core.arrangements.events import ArrangementCancelled, ArrangementMade
from dispatcher.core.clock import ManualClock
from dispatcher.core.events import OptOut, Payment
from dispatcher.core.models import Channel
from dispatcher.core.privacy.personal_data import PERSONAL_FIELDS
from dispatcher.engine import Engine
from dispatcher.state.redis_keys import WEBHOOK_RUN
from dispatcher.state.store import Store
from dispatcher.state.webhook_endpoints import Endpoint
from dispatcher.webhook_relay import Relay
from dispatcher.webhook_sender import CallbackSender, callbacks_for
from tests.callback_fixtures import audit_event_ids, drain, record_activity
from tests.callback_receiver import Receiver
from tests.conftest import make_account
from tests.worker_fixtures import eventually
from workers.app import app
from workers.callbacks import deliver_callbacks
from workers.process_runtime import WorkerRuntime
from workers.scheduler import CallbacksPump

pytestmark = pytest.mark.integration
ACCOUNTS = [f"CB{i}" for i in range(6)]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver().start()
    yield running
    running.stop()


@pytest.fixture
def callbacks(store: Store, clock: ManualClock) -> Iterator[tuple[Relay, CallbackSender]]:
    settings = load_settings(webhook_allowed_hosts="127.0.0.1", webhook_timeout_seconds=10)
    relay, sender = callbacks_for(store, clock, settings)
    yield relay, sender
    sender.close()


def _endpoint(relay: Relay, receiver: Receiver, types: tuple[str, ...] = ()) -> Endpoint:
    endpoint, secret = relay.registry.create(receiver.url, types)
    receiver.secrets.append(secret)
    return endpoint


def test_every_event_arrives_signed_in_order_per_account_and_carries_no_personal_data(
    engine: Engine, callbacks: tuple[Relay, CallbackSender], receiver: Receiver
) -> None:
    relay, sender = callbacks
    _endpoint(relay, receiver)
    engine.upsert_many([make_account(account_id) for account_id in ACCOUNTS])
    record_activity(engine, ACCOUNTS)
    engine.record_event("CB0", Payment(amount=Decimal("4990.00")))  # paid in full: resolved
    drain(relay, sender)
    assert receiver.unverified == 0
    assert receiver.by_account() == audit_event_ids(engine.store)
    assert len(receiver.ids()) == len(set(receiver.ids()))
    assert receiver.types_of("CB1") == [
        "payment.recorded", "account.hold_started", "account.hold_ended", "account.opted_out",
    ]  # fmt: skip
    assert receiver.types_of("CB0")[-2:] == ["payment.recorded", "account.resolved"]
    payment = next(payload for _, payload in receiver.received if payload["type"] == "payment.recorded")
    assert payment["data"] == {"account_id": payment["data"]["account_id"], "amount": "10", "currency": None,
                               "reference": None}  # fmt: skip
    everything = json.dumps([payload for _, payload in receiver.received], ensure_ascii=False)
    for personal in ("王小明", "+8613800138000", "xiaoming@example.com", "Nanjing"):
        assert personal not in everything
    assert not PERSONAL_FIELDS & {key for _, payload in receiver.received for key in payload["data"]}


@pytest.mark.parametrize(("minutes", "rounds"), [(10, 6), (120, 1)], ids=["ten-minutes", "two-hours"])
def test_a_receiver_down_then_back_loses_nothing_and_keeps_each_accounts_order(
    engine: Engine, clock: ManualClock, callbacks: tuple[Relay, CallbackSender], receiver: Receiver, minutes: int,
    rounds: int,
) -> None:  # fmt: skip
    """Down ten minutes (the issue's must-show) and two hours (its fault list): a sending round every
    60/`rounds` seconds of the clock while it is down."""
    relay, sender = callbacks
    endpoint = _endpoint(relay, receiver)
    engine.upsert_many([make_account(account_id) for account_id in ACCOUNTS])
    record_activity(engine, ACCOUNTS[:3])
    drain(relay, sender)
    before = len(receiver.received)
    receiver.stop()
    failed_attempts = 0
    for minute in range(minutes):  # down, events keep coming, the sender keeps trying
        record_activity(engine, [ACCOUNTS[minute % len(ACCOUNTS)]], amount=str(minute + 1))
        for _ in range(rounds):
            failed_attempts += drain(relay, sender, rounds=1)
            clock.advance(timedelta(seconds=60 / rounds))
    assert len(receiver.received) == before
    # The breaker: a handful of failed attempts per probe, not one per account per round.
    assert 0 < failed_attempts <= minutes * rounds
    attempts = relay.outbox.attempts(endpoint.id, limit=5)
    assert attempts and all(a["verdict"] == "retry_scheduled" and a["status"] == "" for a in attempts)
    receiver.start()
    # Past the longest wait the schedule gives within the outage (+10% jitter): 30 min, or 2 h for two hours.
    clock.advance(timedelta(minutes=34) if minutes <= 30 else timedelta(hours=2, minutes=15))
    drain(relay, sender)
    for _ in range(3):  # on a loaded machine an answer may come after the timeout: its retry is a day away at most
        if receiver.by_account() == audit_event_ids(engine.store):
            break
        clock.advance(timedelta(days=1))
        drain(relay, sender)
    assert receiver.unverified == 0
    assert receiver.by_account() == audit_event_ids(engine.store)  # 0 lost, in order per account, each id once
    assert relay.registry.get(endpoint.id).failures == 0  # type: ignore[union-attr]


def test_410_disables_the_endpoint(engine: Engine, callbacks: tuple[Relay, CallbackSender], receiver: Receiver) -> None:
    relay, sender = callbacks
    endpoint = _endpoint(relay, receiver)
    engine.upsert_many([make_account("CB0")])
    record_activity(engine, ["CB0"])
    receiver.status = 410
    drain(relay, sender)
    found = relay.registry.get(endpoint.id)
    assert found is not None and not found.enabled and "410" in str(found.disabled_reason)
    assert receiver.hits == 1 and relay.outbox.attempts(endpoint.id)[0]["verdict"] == "endpoint_disabled"
    record_activity(engine, ["CB0"])
    assert drain(relay, sender) == 0 and receiver.hits == 1


@pytest.mark.parametrize("status", [429, 503])
def test_429_and_5xx_wait_what_retry_after_says(
    status: int, engine: Engine, clock: ManualClock, callbacks: tuple[Relay, CallbackSender], receiver: Receiver
) -> None:
    relay, sender = callbacks
    endpoint = _endpoint(relay, receiver)
    engine.upsert_many([make_account("CB0")])
    engine.record_event("CB0", Payment(amount=Decimal("10")))
    receiver.status, receiver.retry_after = status, "120"
    assert drain(relay, sender) == 1
    attempt = relay.outbox.attempts(endpoint.id)[0]
    assert attempt["status"] == str(status)
    assert float(attempt["next_attempt_at"]) == clock.now().timestamp() + 120  # not the schedule's 5 s
    receiver.status, receiver.retry_after = 204, None
    clock.advance(timedelta(seconds=119))
    assert drain(relay, sender) == 0 and receiver.hits == 1
    clock.advance(timedelta(seconds=1))
    assert drain(relay, sender) == 1 and len(receiver.received) == 1


def test_a_url_resolving_to_the_metadata_service_or_loopback_is_refused_at_send(
    engine: Engine, store: Store, clock: ManualClock, receiver: Receiver
) -> None:
    """Registered while the name pointed elsewhere; at send it resolves inside: nothing is sent."""
    pointing = {"address": "169.254.169.254"}

    def resolve(host: str, port: int, **_: Any) -> list[tuple[Any, ...]]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (pointing["address"], port))]

    settings = load_settings(webhook_allowed_hosts="")
    relay, sender = callbacks_for(store, clock, settings)
    sender.resolver = resolve
    endpoint, _ = relay.registry.create(f"http://hooks.bank.test:{receiver.port}/hooks")
    engine.upsert_many([make_account("CB0")])
    engine.record_event("CB0", Payment(amount=Decimal("10")))
    for address in ("169.254.169.254", "127.0.0.1"):
        pointing["address"] = address
        clock.advance(timedelta(hours=1))
        assert drain(relay, sender, rounds=1) == 1
        attempt = relay.outbox.attempts(endpoint.id)[0]
        assert attempt["verdict"] == "retry_scheduled" and f"resolves to {address}" in attempt["error"]
    assert receiver.hits == 0
    sender.close()


def test_a_sender_killed_mid_delivery_redelivers_under_the_same_webhook_id(
    engine: Engine, clock: ManualClock, callbacks: tuple[Relay, CallbackSender], receiver: Receiver
) -> None:
    relay, sender = callbacks
    _endpoint(relay, receiver)
    engine.upsert_many([make_account("CB0")])
    engine.record_event("CB0", Payment(amount=Decimal("10")))
    relay.run()

    class Killed(BaseException):
        pass

    def killed(*args: object, **kwargs: object) -> None:
        raise Killed  # the process dies after the POST, before the outbox hears of it

    real_finish, sender.outbox.finish = sender.outbox.finish, killed  # type: ignore[method-assign]
    with pytest.raises(Killed):
        sender.deliver_due()
    sender.outbox.finish = real_finish  # type: ignore[method-assign]
    assert drain(relay, sender) == 0  # leased: not yet
    clock.advance(timedelta(seconds=sender.policy.lease + 1))
    drain(relay, sender)
    assert len(receiver.received) == 2 and receiver.received[0][0] == receiver.received[1][0]
    assert receiver.by_account() == audit_event_ids(engine.store)


def test_a_secret_rotated_mid_retry_signs_with_both_for_a_day(
    engine: Engine, clock: ManualClock, callbacks: tuple[Relay, CallbackSender], receiver: Receiver
) -> None:
    relay, sender = callbacks
    endpoint = _endpoint(relay, receiver)
    old = receiver.secrets[0]
    engine.upsert_many([make_account("CB0")])
    engine.record_event("CB0", Payment(amount=Decimal("10")))
    receiver.status = 500
    drain(relay, sender)
    new = relay.registry.rotate(endpoint.id)
    assert new is not None
    receiver.status, receiver.secrets = 204, [new]  # the receiver has switched already
    clock.advance(timedelta(seconds=10))
    drain(relay, sender)
    assert len(receiver.received) == 1
    receiver.secrets = [old]  # one still on the old secret is served too, for 24 h
    engine.record_event("CB0", Payment(amount=Decimal("11")))
    drain(relay, sender)
    assert len(receiver.received) == 2
    clock.advance(timedelta(hours=24, seconds=1))
    engine.record_event("CB0", Payment(amount=Decimal("12")))
    drain(relay, sender, rounds=1)
    assert len(receiver.received) == 2 and receiver.unverified == 1


def test_an_arrangement_made_and_cancelled_is_called_back_with_ids_only(
    engine: Engine, callbacks: tuple[Relay, CallbackSender], receiver: Receiver
) -> None:
    relay, sender = callbacks
    _endpoint(relay, receiver, types=("arrangement.made", "arrangement.cancelled"))
    engine.upsert_many([make_account("CB0")])
    engine.record_event("CB0", ArrangementMade(arrangement_id="ARR-1", offer="instalment_3"))
    engine.record_event("CB0", ArrangementCancelled(arrangement_id="ARR-1"))
    drain(relay, sender)
    assert [payload for _, payload in receiver.received] == [
        {"type": "arrangement.made", "timestamp": "2026-03-02T02:00:00Z",
         "data": {"account_id": "CB0", "arrangement_id": "ARR-1", "offer": "instalment_3"}},
        {"type": "arrangement.cancelled", "timestamp": "2026-03-02T02:00:00Z",
         "data": {"account_id": "CB0", "arrangement_id": "ARR-1"}},
    ]  # fmt: skip


def test_a_receiver_slower_than_the_timeout_is_retried_on_the_schedule(
    engine: Engine, store: Store, clock: ManualClock, receiver: Receiver
) -> None:
    relay, sender = callbacks_for(
        store, clock, load_settings(webhook_allowed_hosts="127.0.0.1", webhook_timeout_seconds=0.3)
    )
    endpoint = _endpoint(relay, receiver)
    engine.upsert_many([make_account("CB0")])
    engine.record_event("CB0", Payment(amount=Decimal("10")))
    receiver.delay = 1.0  # answers after the sender has given up
    assert drain(relay, sender, rounds=1) == 1
    attempt = relay.outbox.attempts(endpoint.id)[0]
    assert attempt["error"] == "timeout" and attempt["verdict"] == "retry_scheduled"
    receiver.delay = 0.0
    clock.advance(timedelta(seconds=6))  # the schedule's first wait, 5 s (+10 %)
    drain(relay, sender)
    assert receiver.by_account() == audit_event_ids(engine.store)  # the late answer was not taken as delivered
    sender.close()


def test_an_endpoint_gets_only_the_types_it_asked_for(
    engine: Engine, callbacks: tuple[Relay, CallbackSender], receiver: Receiver
) -> None:
    relay, sender = callbacks
    _endpoint(relay, receiver, types=("payment.recorded",))
    engine.upsert_many([make_account("CB0")])
    record_activity(engine, ["CB0"])
    drain(relay, sender)
    assert [payload["type"] for _, payload in receiver.received] == ["payment.recorded"]


@pytest.fixture
def worker_settings(redis_url: str, worker_sandboxes: Sandboxes) -> Settings:
    """The workers' settings with a receiver on this machine allowed."""
    overrides = worker_sandboxes.settings_overrides()
    return load_settings(redis_url=redis_url, send_retries=3, webhook_allowed_hosts="127.0.0.1", **overrides)


def test_the_beat_task_on_a_real_celery_worker_relays_and_delivers(
    runtime: WorkerRuntime, celery_worker: object, receiver: Receiver
) -> None:
    relay, sender = callbacks_for(runtime.engine.store, runtime.engine.clock, runtime.settings)
    _endpoint(relay, receiver)
    runtime.engine.upsert_many([make_account("CB0")])
    runtime.engine.record_event("CB0", Payment(amount=Decimal("10")))
    runtime.engine.record_event("CB0", OptOut(channel=Channel.SMS))
    app.send_task("dispatcher.callbacks")  # what beat sends when there is work (the test below)
    wanted = ["payment.recorded", "account.opted_out"]
    eventually(lambda: set(wanted) <= set(receiver.types_of("CB0")), timeout=30)
    assert [found for found in receiver.types_of("CB0") if found in wanted] == wanted
    # The worker sent the account's first SMS meanwhile (contact.sent): whatever arrived is the stream's prefix.
    arrived, expected = receiver.by_account()["CB0"], audit_event_ids(runtime.engine.store)["CB0"]
    assert arrived == expected[: len(arrived)] and receiver.unverified == 0
    sender.close()


def test_beat_sends_the_callbacks_task_only_when_there_is_work(
    engine: Engine, store: Store, clock: ManualClock, callbacks: tuple[Relay, CallbackSender], receiver: Receiver
) -> None:
    relay, sender = callbacks
    sent: list[str] = []
    settings = load_settings(webhook_relay_interval_seconds=0.1)
    pump = CallbacksPump(store, clock, settings, lambda name, args, queue, expires: sent.append(name))
    engine.upsert_many([make_account("CB0")])
    pump._next = 0.0
    assert pump.run_once() is False  # no endpoint: nothing sent (an idle deployment stays idle)
    _endpoint(relay, receiver)
    pump._next = 0.0
    assert pump.run_once() is False  # an endpoint, nothing new since it was made
    engine.record_event("CB0", Payment(amount=Decimal("10")))
    pump._next = 0.0
    assert pump.run_once() is True and sent == ["dispatcher.callbacks"]  # a new audit entry
    assert pump.run_once() is False  # not again within the interval
    relay.run()
    receiver.status = 503
    sender.deliver_due()
    pump._next = 0.0
    assert pump.run_once() is False  # queued, waiting on the schedule
    clock.advance(timedelta(seconds=6))
    pump._next = 0.0
    assert pump.run_once() is True  # its retry is due


def test_one_callbacks_run_at_a_time_across_the_cluster(runtime: WorkerRuntime, receiver: Receiver) -> None:
    relay, sender = callbacks_for(runtime.engine.store, runtime.engine.clock, runtime.settings)
    _endpoint(relay, receiver)
    runtime.engine.upsert_many([make_account("CB0")])
    runtime.engine.record_event("CB0", Payment(amount=Decimal("10")))
    client = runtime.engine.store.redis
    client.set(WEBHOOK_RUN, "another run")
    assert deliver_callbacks() == {"queued": 0, "attempts": 0, "delivered": 0} and receiver.hits == 0
    client.delete(WEBHOOK_RUN)
    assert deliver_callbacks()["delivered"] >= 1 and receiver.types_of("CB0")[0] == "payment.recorded"
    assert client.get(WEBHOOK_RUN) is None  # released
    sender.close()
