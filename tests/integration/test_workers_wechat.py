"""WeChat through the workers' own wiring and the real deliverer, on the real Redis and the WeChat sandbox: an
account with an openid and consent gets the early stage's template message once, the message id is kept
for the push; an approved template withdrawn is a misconfiguration: the breaker opens naming the setting,
and the contact is not burned (no attempt, still queued)."""

# ruff: noqa: F811 - the fixtures imported from tests.worker_fixtures come back as test parameters

from __future__ import annotations

from datetime import timedelta

import pytest

from channels.sandbox import Sandboxes
from channels.wechat import client_msg_id
from config.settings import Settings
from dispatcher.core.clock import ManualClock
from dispatcher.core.models import ClaimStatus, Contact
from dispatcher.state.provider_state import ProviderState
from tests.conftest import make_account
from tests.worker_fixtures import runtime, worker_sandboxes, worker_settings  # noqa: F401
from workers.process_runtime import WorkerRuntime

pytestmark = pytest.mark.integration

OPENID = "oWorkerDebtor000000000000000"


def _wechat_contact(runtime: WorkerRuntime, clock: ManualClock, account_id: str, advance: bool = True) -> Contact:
    """An account 16 days past due (the early stage) reachable only on WeChat, planned at 12:00 in Shanghai."""
    if advance:
        clock.advance(timedelta(hours=2))  # the default clock is 10:00 in Shanghai; the wechat step's hour is 12
    runtime.engine.on_queued = lambda contacts: None  # the test delivers them itself
    account = make_account(
        account_id, phone=None, email=None, address=None, wechat_openid=OPENID, consent=["wechat"],
        due_date=clock.now().date() - timedelta(days=16),
    )  # fmt: skip
    queued = runtime.engine.upsert(account).queued
    assert [(c.channel, c.template) for c in queued] == [("wechat", "early_wechat")]
    return queued[0]


def test_a_debtor_with_an_openid_and_consent_gets_the_template_message_once(
    runtime: WorkerRuntime,
    worker_sandboxes: Sandboxes,
    clock: ManualClock,
) -> None:
    contact = _wechat_contact(runtime, clock, "WX1")
    assert [d.result for d in runtime.deliverer.deliver_many([contact])] == ["sent"]
    assert [d.result for d in runtime.deliverer.deliver_many([contact])] != ["sent"]  # a redelivered task
    sent = [m for m in worker_sandboxes.wechat.state.messages() if m["client_msg_id"] == client_msg_id(contact.id)]
    assert len(sent) == 1 and sent[0]["touser"] == OPENID
    assert runtime.engine.store.claim_status("WX1", contact.id) == "sent"
    # The push names only the message id: the webhook finds the contact through what the send kept.
    assert ProviderState(runtime.engine.store.redis, "wechat").contact_of_message(sent[0]["msgid"]) == contact.id


def test_a_withdrawn_template_opens_the_breaker_naming_the_setting_and_burns_no_contact(
    runtime: WorkerRuntime,
    worker_sandboxes: Sandboxes,
    worker_settings: Settings,
    clock: ManualClock,
) -> None:
    template_id = worker_settings.wechat_template_ids["early_wechat"]
    fields = worker_sandboxes.wechat.state.templates[template_id]
    worker_sandboxes.wechat.state.remove_template(template_id)
    try:
        contact = _wechat_contact(runtime, clock, "WX2")
        [delivery] = runtime.deliverer.deliver_many([contact])
    finally:
        worker_sandboxes.wechat.state.templates[template_id] = fields
    assert delivery.result == "circuit_open"
    state = runtime.deliverer.breaker.state("wechat")
    assert state.is_open and state.setting == "DISPATCHER_WECHAT_TEMPLATE_IDS"
    assert runtime.engine.store.claim_status("WX2", contact.id) in (None, ClaimStatus.QUEUED)  # not burned
    history = runtime.engine.store.load("WX2").history
    assert not [e for e in history if e.kind == "attempt" and e.contact_id == contact.id]
    runtime.deliverer.breaker.succeeded("wechat")  # the setting fixed: the rest of the session sends again


def test_a_token_expiring_mid_batch_is_refreshed_once_and_each_contact_sent_once(
    runtime: WorkerRuntime, worker_sandboxes: Sandboxes, clock: ManualClock
) -> None:
    contacts = [_wechat_contact(runtime, clock, f"WXB{n}", advance=n == 0) for n in range(6)]
    sandbox = worker_sandboxes.wechat.state
    before = len(sandbox.log.read())
    runtime.deliverer.deliver_many(contacts[:1])  # the workers' shared token, taken before the batch
    during = len(sandbox.log.read())
    sandbox.expire_tokens_after = 2  # WeChat's 7200 s end after the batch's second send
    deliveries = runtime.deliverer.deliver_many(contacts[1:])
    assert [d.result for d in deliveries] == ["sent"] * 5
    seen = sandbox.log.read()[before:]
    sent = [r["client_msg_id"] for r in seen if r["event"] == "message.sent"]
    assert sorted(sent) == sorted(client_msg_id(c.id) for c in contacts)  # each contact once
    refused = [r for r in seen if r["event"] == "message.refused"]
    assert [r["errcode"] for r in refused] == [42001]  # the one send that met the expired token, sent again
    refreshes = [r for r in sandbox.log.read()[during:] if r["event"] == "token.issued"]
    assert len(refreshes) == 1  # one refresh for the whole batch
