"""The failover through a real Celery worker (threads pool) on the real Redis: the channel's own provider (the
Twilio sandbox) answers 503 to everything, every contact reaches the debtor through the second provider of
its route (`twilio_backup`, tests/provider_fixtures.py), each exactly once, the same batch delivered twice
included. The pattern a chaos row can run with worker processes and an outage that ends."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from channels import ProviderSpec
from channels.sandbox import HttpSandbox, Sandboxes
from channels.sandbox.twilio_api import TwilioSandbox
from dispatcher.core.clock import ManualClock
from dispatcher.core.models import ClaimStatus
from tests import provider_fixtures
from tests.conftest import make_account
from tests.provider_fixtures import BACKUP, routed_settings, sends_by_contact
from tests.worker_fixtures import eventually
from workers.process_runtime import WorkerRuntime, build_runtime, install_runtime
from workers.queueing import dispatch

pytestmark = pytest.mark.integration

second_twilio = provider_fixtures.second_twilio
backup = provider_fixtures.backup


@pytest.fixture
def runtime(
    redis_url: str, worker_sandboxes: Sandboxes, clock: ManualClock, backup: ProviderSpec
) -> Iterator[WorkerRuntime]:
    """The worker's runtime (what `celery_worker` runs) with a route over both providers."""
    settings = routed_settings(redis_url, worker_sandboxes, {"sms": {"*": ["twilio", BACKUP]}})
    built = build_runtime(settings, dispatch, clock=clock, retry_wait=0.01)
    install_runtime(built)
    yield built
    install_runtime(None)
    worker_sandboxes.twilio.faults.set(fail_503=0)


def test_the_first_provider_down_every_contact_goes_through_the_second_once(
    runtime: WorkerRuntime, celery_worker: object, worker_sandboxes: Sandboxes,
    second_twilio: HttpSandbox[TwilioSandbox], clock: ManualClock,
) -> None:  # fmt: skip
    worker_sandboxes.twilio.faults.set(fail_503=10_000)
    runtime.engine.on_queued = lambda contacts: None  # handed to the worker below, twice
    due = clock.now().date() - timedelta(days=1)
    accounts = [make_account(f"FW{i}", phone=f"+86139{20000000 + 7 * i:08d}", due_date=due) for i in range(12)]
    contacts = [c for r in runtime.engine.upsert_many(accounts) for c in r.queued if c.channel.value == "sms"]
    dispatch(contacts, 5)
    dispatch(contacts, 5)  # the broker hands the same batches over again
    store = runtime.engine.store
    eventually(lambda: all(store.claim_status(c.account_id, c.id) == ClaimStatus.SENT for c in contacts), 30)
    taken = sends_by_contact(worker_sandboxes.twilio, second_twilio)
    assert [taken[c.id] for c in contacts] == [1] * len(contacts)  # 0 duplicates, 0 lost
    assert [sends_by_contact(second_twilio)[c.id] for c in contacts] == [1] * len(contacts)
    for contact in contacts:
        history = store.load(contact.account_id).history
        assert [e.detail["provider"] for e in history if e.kind == "attempt"] == [BACKUP]
