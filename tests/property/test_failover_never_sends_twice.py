"""Whatever the providers answer, a contact id is never accepted by two providers (nor twice by one).

Random answers from the two providers of an SMS route (accepted; down; a 5xx; a request that may have left and
timed out; the provider's own refusal; a misconfiguration that opens its circuit; the debtor's invalid number;
a deferral for that recipient), random picks between them, and several rounds in which every contact given
back to `queued` is delivered again: through the workers' own wiring, the real gate and claim ledger on the
real Redis. A provider counts as having taken a contact when it accepted it or when its answer was ambiguous
(it may have accepted it): either way no other provider may ever be asked for that contact.
"""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from channels import PROVIDERS
from channels.base import (
    ContactDeferred,
    OutboundMessage,
    PermanentDeliveryError,
    ProviderMisconfigured,
    ProviderRefused,
    Receipt,
    TransientDeliveryError,
)
from config.settings import load_settings
from dispatcher.core.clock import ManualClock
from dispatcher.core.models import ClaimStatus
from dispatcher.state.redis_server import EmbeddedRedis
from tests.conftest import make_account
from tests.provider_fixtures import BACKUP, backup_provider
from workers.process_runtime import build_runtime
from workers.queueing import dispatch

ANSWERS = ("accept", "down", "5xx", "ambiguous", "refused", "misconfigured", "invalid", "deferred")
MAY_HAVE_TAKEN = ("accept", "ambiguous")
ROUNDS = 4


class _Scripted:
    """A provider answering from a script (then accepting), noting every contact it took or may have taken."""

    def __init__(self, name: str, script: list[str], taken: dict[str, list[str]]) -> None:
        self.name, self.script, self.taken = name, list(script), taken

    def send(self, message: OutboundMessage) -> Receipt:
        answer = self.script.pop(0) if self.script else "accept"
        if answer in MAY_HAVE_TAKEN:
            self.taken[message.contact_id].append(self.name)
        if answer == "accept":
            return Receipt(f"{self.name}-{message.contact_id}", "queued", 1)
        raise {
            "down": TransientDeliveryError("connection refused"),
            "5xx": TransientDeliveryError("503 service unavailable"),
            "ambiguous": TransientDeliveryError("read timeout after the request left", ambiguous=True),
            "refused": ProviderRefused("region not enabled"),
            "misconfigured": ProviderMisconfigured("401", self.name, "DISPATCHER_TWILIO_AUTH_TOKEN"),
            "invalid": PermanentDeliveryError("invalid number", "invalid_address"),
            "deferred": ContactDeferred("per-number daily limit", retry_after=5.0),
        }[answer]

    def close(self) -> None:
        pass


@settings(max_examples=40, deadline=None)
@given(
    first=st.lists(st.sampled_from(ANSWERS), max_size=12),
    second=st.lists(st.sampled_from(ANSWERS), max_size=12),
    contacts=st.integers(min_value=1, max_value=4),
    seed=st.integers(min_value=0, max_value=2**16),
)
def test_no_contact_is_taken_by_two_providers_whatever_they_answer(
    redis_server: EmbeddedRedis, first: list[str], second: list[str], contacts: int, seed: int
) -> None:
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    PROVIDERS["sms", BACKUP] = backup_provider("http://127.0.0.1:9")  # its adapter is replaced below
    try:
        clock = ManualClock(datetime(2026, 3, 2, 2, 0, tzinfo=UTC))
        config = load_settings(redis_url=redis_server.url, routes={"sms": {"*": ["twilio", BACKUP]}})
        runtime = build_runtime(config, dispatch, clock=clock, retry_wait=0.0)
        runtime.engine.on_queued = lambda queued: None
        runtime.deliverer.router.draw = random.Random(seed).random
        taken: dict[str, list[str]] = defaultdict(list)
        runtime.deliverer.adapters["sms"] = _Scripted("twilio", first, taken)  # type: ignore[assignment]
        runtime.deliverer.adapters[f"sms.{BACKUP}"] = _Scripted(BACKUP, second, taken)  # type: ignore[assignment]
        due = clock.now().date() - timedelta(days=1)
        accounts = [make_account(f"PF{i}", phone=f"+86139{1000_0000 + i:08d}", due_date=due) for i in range(contacts)]
        queued = [c for r in runtime.engine.upsert_many(accounts) for c in r.queued if c.channel.value == "sms"]
        store = runtime.engine.store
        for _ in range(ROUNDS):  # what was given back to queued goes again, as the broker would hand it back
            again = [c for c in queued if store.claim_status(c.account_id, c.id) == ClaimStatus.QUEUED]
            if not again:
                break
            runtime.deliverer.deliver_many(again)
        assert {cid: providers for cid, providers in taken.items() if len(providers) > 1} == {}
        for contact in queued:  # what ended `sent` or in doubt was taken by the provider its last attempt names
            status = store.claim_status(contact.account_id, contact.id)
            history = store.load(contact.account_id).history
            went = [e.detail["provider"] for e in history if e.kind == "attempt" and e.contact_id == contact.id]
            if status in (ClaimStatus.SENT, ClaimStatus.UNKNOWN):
                assert went[-1:] == taken[contact.id]
    finally:
        PROVIDERS.pop(("sms", BACKUP), None)
        client.close()
