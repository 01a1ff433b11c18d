"""A misconfigured provider is not a debtor outcome: through a real Celery worker, beat's pump, the real
Redis and the print-vendor sandbox answering 404 (a wrong DISPATCHER_PRINT_VENDOR_URL) for a while, then 200.
The letters the open circuit holds wait on the schedule, not on the broker."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import redis
from structlog.testing import capture_logs

from channels.base import ProviderMisconfigured
from channels.sandbox import Sandboxes
from dispatcher.core.clock import AcceleratedClock, Clock
from dispatcher.core.models import Contact
from dispatcher.state.metrics import PROVIDER_MISCONFIGURED
from dispatcher.wiring import clock_from
from tests.conftest import make_account
from tests.worker_fixtures import eventually
from workers.circuit import CircuitBreaker, held_key, probe_open_circuits
from workers.process_runtime import WorkerRuntime

pytestmark = pytest.mark.integration

LETTERS = 6
URL_SETTING = "DISPATCHER_PRINT_VENDOR_URL"


@pytest.fixture
def clock() -> AcceleratedClock:
    """Real time from 10:00 in Shanghai: letters parked on the schedule come due as the openings end."""
    return AcceleratedClock(datetime(2026, 3, 2, 2, 0, tzinfo=UTC), 1.0)


@pytest.fixture
def quick_breaker(runtime: WorkerRuntime) -> Iterator[CircuitBreaker]:
    """The runtime's breaker with short openings (0.3 s, doubling to 1 s), so the test sees several probes."""
    breaker = CircuitBreaker(runtime.engine.store.redis, first_open=0.3, max_open=1.0)
    runtime.deliverer.breaker = breaker
    breaker.succeeded("letter")
    yield breaker
    breaker.succeeded("letter")


def _letters(runtime: WorkerRuntime, clock: Clock, prefix: str) -> list[Contact]:
    """Accounts at the formal-letter stage; the upsert queues (and dispatches) their letters at once."""
    due = clock.now().date() - timedelta(days=60)
    letters = []
    for n in range(LETTERS):
        result = runtime.engine.upsert(make_account(f"{prefix}{n}", due_date=due, phone=f"+86139000{n:05d}"))
        letters += [contact for contact in result.queued if contact.channel == "letter"]
    return letters


def _created(sandboxes: Sandboxes) -> list[dict[str, object]]:
    return [r["letter"] for r in sandboxes.print_vendor.state.log.read() if r["event"] == "letter.created"]


def _status(runtime: WorkerRuntime, contact: Contact) -> str | None:
    return runtime.engine.store.claim_status(contact.account_id, contact.id)


def test_a_404_from_the_print_vendor_fails_no_letter_and_each_goes_once_when_fixed(
    runtime: WorkerRuntime,
    celery_worker: object,
    beat_pump: object,
    worker_sandboxes: Sandboxes,
    clock: Clock,
    quick_breaker: CircuitBreaker,
) -> None:
    vendor = worker_sandboxes.print_vendor.state
    before_created = len(_created(worker_sandboxes))
    metric_before = PROVIDER_MISCONFIGURED.labels("letter", URL_SETTING)._value.get()
    vendor.refusing = 404
    try:
        with capture_logs() as logs:
            letters = _letters(runtime, clock, "CB")
            assert len(letters) == LETTERS
            eventually(lambda: quick_breaker.state("letter").trips >= 3, timeout=20)  # opened, probed, re-opened
            refused_requests = vendor.faults.request_count
        state = quick_breaker.state("letter")
        assert state.is_open and state.setting == URL_SETTING
        errors = [e for e in logs if e.get("event") == "provider.misconfigured"]
        assert errors and all(e["log_level"] == "error" and e["setting"] == URL_SETTING for e in errors)
        # One count per opening; the breaker may open once more while the test reads (it keeps probing).
        counted = PROVIDER_MISCONFIGURED.labels("letter", URL_SETTING)._value.get() - metric_before
        assert state.trips <= counted <= quick_breaker.state("letter").trips
        # Nothing failed, nothing counts against the caps: each letter is parked or queued, with no attempt
        # (polled for a moment between probes: a probe holds its letter's claim for the length of one request),
        # and none waits as a delayed message in the broker's hands, where a stopped worker would leave it.
        # Parked: every account in the circuit's held set. Polled together with the above: between openings a
        # probe takes the held set back (the pump queues its letters again) until the next opening parks them.
        client = runtime.engine.store.redis
        accounts = {letter.account_id for letter in letters}
        eventually(
            lambda: (
                all(_untouched(runtime, letter) for letter in letters)
                and client.smembers(held_key("letter")) >= accounts
            ),
            timeout=20,
        )
        eventually(lambda: not _on_the_broker(client, letters), timeout=10)
        # The open circuit holds the sends: one probe per opening, not one request per letter per retry.
        assert refused_requests <= state.trips + 2
    finally:
        vendor.refusing = None
    eventually(lambda: all(_status(runtime, letter) == "sent" for letter in letters), timeout=20)
    created = _created(worker_sandboxes)[before_created:]
    sent_ids = sorted(str(letter["metadata"]["contact_id"]) for letter in created)  # type: ignore[index]
    assert sent_ids == sorted(letter.id for letter in letters)  # every letter once, none twice
    assert not quick_breaker.state("letter").is_open
    assert not runtime.engine.store.redis.exists(held_key("letter"))  # the probe that closed it woke them all
    for letter in letters:
        history = runtime.engine.store.load(letter.account_id).history
        outcomes = [e.outcome for e in history if e.contact_id == letter.id]
        assert "failed" not in outcomes


def _untouched(runtime: WorkerRuntime, letter: Contact) -> bool:
    history = runtime.engine.store.load(letter.account_id).history
    touched = [e for e in history if e.kind in ("attempt", "outcome") and e.contact_id == letter.id]
    return _status(runtime, letter) in (None, "queued") and not touched  # parked, or queued again by the pump


def _on_the_broker(client: redis.Redis, letters: list[Contact]) -> list[str]:
    """Letters named by a delayed message (one with an ETA) on the letter queue or in the broker's `unacked`
    hash (delivered to a worker, which holds it until its ETA)."""
    envelopes = [json.loads(raw) for raw in client.lrange("letter", 0, -1)]
    envelopes += [json.loads(raw)[0] for raw in client.hvals("unacked")]
    delayed = [base64.b64decode(e["body"]).decode() for e in envelopes if (e.get("headers") or {}).get("eta")]
    return [letter.id for letter in letters if any(letter.id in body for body in delayed)]


def test_the_breaker_opens_longer_each_time_and_one_caller_probes(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    now = [1000.0]
    breaker = CircuitBreaker(client, first_open=5, max_open=12, now=lambda: now[0])
    breaker.succeeded("agency")
    exc = ProviderMisconfigured("agency 401", "agency", "DISPATCHER_AGENCY_API_KEY")
    assert breaker.admit("agency").wait == 0
    assert breaker.trip(exc) == 5
    assert breaker.admit("agency").wait == pytest.approx(5)
    now[0] += 5.01
    first, second = breaker.admit("agency"), breaker.admit("agency")
    assert (first.wait, first.probe) == (0, True)  # this caller probes
    assert second.wait > 0 and not second.probe  # the others wait while it does
    assert breaker.trip(exc) == 10  # misconfigured again: twice as long
    assert breaker.trip(exc) == 12  # up to the cap
    breaker.succeeded("agency")
    assert not breaker.state("agency").is_open and breaker.admit("agency").wait == 0
    client.close()


def test_a_starting_worker_ends_an_opening_at_once_and_wakes_the_accounts_it_held(
    runtime: WorkerRuntime, clock: Clock
) -> None:
    store = runtime.engine.store
    breaker = CircuitBreaker(store.redis, first_open=300)
    breaker.succeeded("letter")
    breaker.trip(ProviderMisconfigured("print vendor 404", "letter", URL_SETTING))
    assert breaker.hold("letter", ["H1", "H2"]) == {"H1", "H2"}
    assert breaker.hold("letter", ["H2", "H3"]) == {"H3"}  # H2 is held already: its wait is audited once
    assert breaker.admit("letter").wait > 290
    assert probe_open_circuits(runtime.settings, ["sms", "letter"]) == 3  # what a worker does as it starts
    now = clock_from(runtime.settings).now()  # the deployment's clock, as the settings name it
    for account in ("H1", "H2", "H3"):
        assert store.next_wakeup(account) == pytest.approx(now, abs=timedelta(seconds=2))
    assert breaker.admit("letter").probe  # the next caller probes; the setting may have been fixed
    assert not store.redis.exists(held_key("letter"))
    assert probe_open_circuits(runtime.settings, ["letter"]) == 0  # the probe is taken: nothing held, no change
    breaker.succeeded("letter")
    assert probe_open_circuits(runtime.settings, ["letter"]) == 0 and not breaker.state("letter").is_open
