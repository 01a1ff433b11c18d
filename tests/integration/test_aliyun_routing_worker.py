"""Aliyun SMS under the China-first route, through a real Celery worker (threads pool) on the real Redis, against
the Aliyun and Twilio sandboxes: `DISPATCHER_ROUTES={"sms": {"CN": ["aliyun", "twilio"], "*": ["twilio"]}}`.

Aliyun rests at weight 100 and Twilio at 0 (so a Chinese text goes to Aliyun whenever Aliyun can take it), and
every failed request moves the weights (`provider_error_burst=1`), so "the weight did not move" means it.

- a Chinese mobile's text goes through Aliyun with its approved TemplateCode and parameters that are all strings
  (the provider's own compose, channels.aliyun_sms); a US number's through Twilio;
- an approved template withdrawn at Aliyun: misconfigured, Aliyun's circuit opens naming
  DISPATCHER_ALIYUN_TEMPLATES, the contact is not burned: it goes through Twilio, once;
- isv.BUSINESS_LIMIT_CONTROL: that contact waits (deferred by the provider), nothing sent anywhere, no failover,
  Aliyun's weight unchanged;
- Aliyun answering 503: every Chinese text goes through Twilio exactly once (the batches delivered twice).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import timedelta

import pytest
import redis

from channels.aliyun_sms import CHINA_FIRST_ROUTES
from channels.sandbox import Sandboxes
from channels.sandbox.aliyun import DEFAULT_VARIABLES
from dispatcher.core.clock import ManualClock
from dispatcher.core.models import ClaimStatus, Contact
from dispatcher.state.redis_keys import provider_failures_key, provider_weights_key
from tests.conftest import make_account
from tests.provider_fixtures import routed_settings, sends_by_contact
from tests.worker_fixtures import eventually
from workers.circuit import CircuitBreaker
from workers.process_runtime import WorkerRuntime, build_runtime, install_runtime
from workers.queueing import dispatch

pytestmark = pytest.mark.integration

RESTING = {"sms": {"aliyun": 100, "twilio": 0}}


@pytest.fixture
def runtime(redis_url: str, worker_sandboxes: Sandboxes, clock: ManualClock) -> Iterator[WorkerRuntime]:
    """The worker's runtime (what `celery_worker` runs) with the China-first route; the sandboxes' faults cleared."""
    settings = routed_settings(
        redis_url, worker_sandboxes, CHINA_FIRST_ROUTES, provider_weights=RESTING, provider_error_burst=1
    )
    built = build_runtime(settings, dispatch, clock=clock, retry_wait=0.01)
    install_runtime(built)
    yield built
    install_runtime(None)
    aliyun = worker_sandboxes.aliyun
    aliyun.faults.set(fail_503=0)
    aliyun.state.daily_limit_per_number = 50
    for code in settings.aliyun_templates["reminder_sms"].values():
        aliyun.state.templates.setdefault(code, DEFAULT_VARIABLES)


def queue_reminders(runtime: WorkerRuntime, clock: ManualClock, phones: Sequence[str], prefix: str) -> list[Contact]:
    """One day past due accounts with these numbers: their reminder SMS, queued (not yet handed to the worker)."""
    runtime.engine.on_queued = lambda contacts: None  # handed over by the test
    due = clock.now().date() - timedelta(days=1)
    accounts = [make_account(f"{prefix}{i}", phone=phone, due_date=due) for i, phone in enumerate(phones)]
    return [c for r in runtime.engine.upsert_many(accounts) for c in r.queued if c.channel.value == "sms"]


def aliyun_sends(sandboxes: Sandboxes) -> Counter[str]:
    """How many texts the Aliyun sandbox accepted per contact id (its OutId)."""
    return Counter(str(m["out_id"]) for m in sandboxes.aliyun.state.messages())


def providers_tried(runtime: WorkerRuntime, contact: Contact) -> list[str]:
    history = runtime.engine.store.load(contact.account_id).history
    return [str(e.detail["provider"]) for e in history if e.kind == "attempt" and e.contact_id == contact.id]


def weights(runtime: WorkerRuntime) -> dict[str, float]:
    return runtime.deliverer.router.weights("sms")


def sent(runtime: WorkerRuntime, contacts: Sequence[Contact]) -> bool:
    store = runtime.engine.store
    return all(store.claim_status(c.account_id, c.id) == ClaimStatus.SENT for c in contacts)


def mainland(index: int) -> str:
    return f"+86137{40000000 + 97 * index:08d}"


def test_a_chinese_mobile_goes_through_aliyun_with_its_template_a_us_number_through_twilio(
    runtime: WorkerRuntime, celery_worker: object, worker_sandboxes: Sandboxes, clock: ManualClock
) -> None:
    chinese = queue_reminders(runtime, clock, [mainland(i) for i in range(3)], "AR")
    american = queue_reminders(runtime, clock, ["+12125550147"], "AU")
    dispatch([*chinese, *american], 10)
    eventually(lambda: sent(runtime, [*chinese, *american]), 30)

    assert [providers_tried(runtime, c) for c in chinese] == [["aliyun"]] * 3
    assert providers_tried(runtime, american[0]) == ["twilio"]
    assert [aliyun_sends(worker_sandboxes)[c.id] for c in chinese] == [1, 1, 1]
    assert [sends_by_contact(worker_sandboxes.twilio)[c.id] for c in [*chinese, *american]] == [0, 0, 0, 1]
    code = runtime.settings.aliyun_templates["reminder_sms"]["zh-CN"]
    received = {m["out_id"]: m for m in worker_sandboxes.aliyun.state.messages()}
    for contact in chinese:
        message = received[contact.id]
        assert message["template_code"] == code
        params = message["params"]
        assert set(DEFAULT_VARIABLES) <= set(params) and all(isinstance(v, str) for v in params.values())
        assert params["account_ref"] == contact.account_id[-4:] and params["amount"] == "¥5,000.00"
    # What the worker sent is what the sandbox recorded: the TemplateParam JSON of strings, the +86 stripped.
    assert {m["phone"] for m in received.values() if m["out_id"] in {c.id for c in chinese}} == {
        mainland(i)[3:] for i in range(3)
    }
    assert weights(runtime) == {"twilio": 0.0, "aliyun": 100.0}


def test_a_template_withdrawn_at_aliyun_opens_its_circuit_and_the_contact_goes_through_twilio_once(
    runtime: WorkerRuntime, celery_worker: object, worker_sandboxes: Sandboxes, clock: ManualClock
) -> None:
    code = runtime.settings.aliyun_templates["reminder_sms"]["zh-CN"]
    worker_sandboxes.aliyun.state.remove_template(code)
    contacts = queue_reminders(runtime, clock, [mainland(10 + i) for i in range(4)], "AT")
    dispatch(contacts, 10)
    dispatch(contacts, 10)  # the same batch handed over again
    eventually(lambda: sent(runtime, contacts), 30)

    circuit = CircuitBreaker(runtime.engine.store.redis).state("sms.aliyun")
    assert circuit.is_open and circuit.setting == "DISPATCHER_ALIYUN_TEMPLATES"
    assert "isv.SMS_TEMPLATE_ILLEGAL" in circuit.reason
    assert sum(aliyun_sends(worker_sandboxes)[c.id] for c in contacts) == 0
    assert [sends_by_contact(worker_sandboxes.twilio)[c.id] for c in contacts] == [1] * 4  # not burned, sent once
    assert [providers_tried(runtime, c) for c in contacts] == [["twilio"]] * 4  # the attempts that stand
    # The first met the withdrawn template and failed over (its attempt given back, audited); the open circuit
    # kept the rest off Aliyun (the other batch, running at the same moment in another thread, may have met the
    # refusal once more before it opened).
    failed_over = [
        e for c in contacts for e in runtime.engine.store.audit(c.account_id) if e.get("reason") == "failover"
    ]
    refused = [m for m in worker_sandboxes.aliyun.state.log.read() if m["event"] == "message.refused"]
    ids = {c.id for c in contacts}
    assert [m["code"] for m in refused if m.get("out_id") in ids] == ["isv.SMS_TEMPLATE_ILLEGAL"] * len(failed_over)
    assert 1 <= len(failed_over) <= 2 and {e.get("provider") for e in failed_over} == {"aliyun"}, failed_over


def test_business_limit_control_defers_that_contact_only_no_failover_and_no_weight_move(
    runtime: WorkerRuntime, celery_worker: object, worker_sandboxes: Sandboxes, clock: ManualClock
) -> None:
    worker_sandboxes.aliyun.state.daily_limit_per_number = 0  # every number has had its texts today
    limited = queue_reminders(runtime, clock, [mainland(20)], "AL")
    dispatch(limited, 10)
    contact = limited[0]
    store = runtime.engine.store

    def deferred() -> bool:
        return any(e.get("reason") == "deferred_by_provider" for e in store.audit(contact.account_id))

    eventually(deferred, 30)
    refused = [m for m in worker_sandboxes.aliyun.state.log.read() if m.get("out_id") == contact.id]
    assert [m["code"] for m in refused] == ["isv.BUSINESS_LIMIT_CONTROL"]
    assert store.claim_status(contact.account_id, contact.id) != ClaimStatus.SENT
    assert sends_by_contact(worker_sandboxes.twilio)[contact.id] == 0  # no failover
    assert providers_tried(runtime, contact) == []  # its attempt given back: it waits unclaimed
    waits = [e for e in store.audit(contact.account_id) if e.get("type") == "contact"]
    assert [(e["provider"], e["status"], e["reason"]) for e in waits] == [
        ("aliyun", "not_sent", "deferred_by_provider")
    ]
    # It waits for midnight in Beijing (more than the minute a broker wait may last: on the schedule).
    wake = store.next_wakeup(contact.account_id)
    assert wake is not None and wake - clock.now() > timedelta(minutes=1)
    client = redis.Redis.from_url(runtime.settings.redis_url or "")
    assert client.hgetall(provider_weights_key("sms")) == {}  # never moved
    assert client.get(provider_failures_key("sms", "aliyun")) is None  # not even counted towards a burst
    assert weights(runtime) == {"twilio": 0.0, "aliyun": 100.0}
    assert not CircuitBreaker(store.redis).state("sms.aliyun").is_open

    # The limit is the number's: another number's text still goes through Aliyun.
    worker_sandboxes.aliyun.state.daily_limit_per_number = 50
    other = queue_reminders(runtime, clock, [mainland(21)], "AM")
    dispatch(other, 10)
    eventually(lambda: sent(runtime, other), 30)
    assert providers_tried(runtime, other[0]) == ["aliyun"]


def test_aliyun_answering_503_every_chinese_text_goes_through_twilio_exactly_once(
    runtime: WorkerRuntime, celery_worker: object, worker_sandboxes: Sandboxes, clock: ManualClock
) -> None:
    worker_sandboxes.aliyun.faults.set(fail_503=10_000)
    contacts = queue_reminders(runtime, clock, [mainland(30 + i) for i in range(12)], "AF")
    dispatch(contacts, 5)
    dispatch(contacts, 5)  # the broker hands the same batches over again
    eventually(lambda: sent(runtime, contacts), 30)

    assert sum(aliyun_sends(worker_sandboxes)[c.id] for c in contacts) == 0
    assert [sends_by_contact(worker_sandboxes.twilio)[c.id] for c in contacts] == [1] * 12  # 0 duplicates, 0 lost
    assert [providers_tried(runtime, c) for c in contacts] == [["twilio"]] * 12  # the attempts that stand
    failed_over = [
        e for c in contacts for e in runtime.engine.store.audit(c.account_id) if e.get("reason") == "failover"
    ]
    assert failed_over and {e["provider"] for e in failed_over} == {"aliyun"}  # each 503 was a definite non-send
    moved = weights(runtime)
    assert moved["aliyun"] == 90.0 and moved["twilio"] == 10.0  # one move: at most one per 5 minutes
    stored = redis.Redis.from_url(runtime.settings.redis_url or "").hgetall(provider_weights_key("sms"))
    assert {k.decode(): v.decode().split()[0] for k, v in stored.items()} == {"aliyun": "90", "twilio": "10"}


def test_the_weight_an_outage_lowered_tends_back_on_the_deployments_clock(
    runtime: WorkerRuntime, worker_sandboxes: Sandboxes, clock: ManualClock
) -> None:
    """The weights' steps (5 minutes between moves, 15 quiet before tending back) are read on the clock the
    workers run on, as the schedule is: the demo's and the chaos runs' accelerated clock, real time in production."""
    worker_sandboxes.aliyun.faults.set(fail_503=10_000)
    contacts = queue_reminders(runtime, clock, [mainland(50)], "AW")
    assert [d.result for d in runtime.deliverer.deliver_many(contacts)] == ["sent"]
    assert weights(runtime) == {"twilio": 10.0, "aliyun": 90.0}
    clock.advance(timedelta(minutes=14))
    assert weights(runtime) == {"twilio": 10.0, "aliyun": 90.0}  # quiet for 15 minutes first
    clock.advance(timedelta(minutes=1))
    assert weights(runtime) == {"twilio": 0.0, "aliyun": 100.0}  # then 10 a step, back to rest
