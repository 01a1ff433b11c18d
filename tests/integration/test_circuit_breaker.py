"""A misconfigured provider is not a debtor outcome: through a real Celery worker, the real Redis and the
print-vendor sandbox answering 404 (a wrong DISPATCHER_PRINT_VENDOR_URL) for a while, then 200."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
import redis
from structlog.testing import capture_logs

from channels.base import ProviderMisconfigured
from channels.sandbox import Sandboxes
from dispatcher.core.clock import ManualClock
from dispatcher.core.models import Contact
from dispatcher.state.metrics import PROVIDER_MISCONFIGURED
from tests.conftest import make_account
from tests.worker_fixtures import eventually
from workers.circuit import CircuitBreaker
from workers.process_runtime import WorkerRuntime

pytestmark = pytest.mark.integration

LETTERS = 6
URL_SETTING = "DISPATCHER_PRINT_VENDOR_URL"


@pytest.fixture
def quick_breaker(runtime: WorkerRuntime) -> Iterator[CircuitBreaker]:
    """The runtime's breaker with short openings (0.3 s, doubling to 1 s), so the test sees several probes."""
    breaker = CircuitBreaker(runtime.engine.store.redis, first_open=0.3, max_open=1.0)
    runtime.deliverer.breaker = breaker
    breaker.succeeded("letter")
    yield breaker
    breaker.succeeded("letter")


def _letters(runtime: WorkerRuntime, clock: ManualClock, prefix: str) -> list[Contact]:
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
    worker_sandboxes: Sandboxes,
    clock: ManualClock,
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
        # Nothing failed, nothing counts against the caps: each letter is still queued, with no attempt (polled
        # for a moment between probes: a probe holds its letter's claim for the length of one request).
        eventually(lambda: all(_untouched(runtime, letter) for letter in letters), timeout=10)
        # The open circuit holds the sends: one probe per opening, not one request per letter per retry.
        assert refused_requests <= state.trips + 2
    finally:
        vendor.refusing = None
    eventually(lambda: all(_status(runtime, letter) == "sent" for letter in letters), timeout=20)
    created = _created(worker_sandboxes)[before_created:]
    sent_ids = sorted(str(letter["metadata"]["contact_id"]) for letter in created)  # type: ignore[index]
    assert sent_ids == sorted(letter.id for letter in letters)  # every letter once, none twice
    assert not quick_breaker.state("letter").is_open
    for letter in letters:
        history = runtime.engine.store.load(letter.account_id).history
        outcomes = [e.outcome for e in history if e.contact_id == letter.id]
        assert "failed" not in outcomes


def _untouched(runtime: WorkerRuntime, letter: Contact) -> bool:
    history = runtime.engine.store.load(letter.account_id).history
    touched = [e for e in history if e.kind in ("attempt", "outcome") and e.contact_id == letter.id]
    return _status(runtime, letter) == "queued" and not touched


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
