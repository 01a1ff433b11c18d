"""The engine on a real Redis with a manual clock: upserts, events, the pump, the claim and the audit trail."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from dispatcher import phone_index
from dispatcher.claims import ClaimStatus
from dispatcher.clock import ManualClock
from dispatcher.compliance import spread_offset
from dispatcher.engine import Engine, UnknownAccount
from dispatcher.events import AdhocContact, DoNotContact, EventRejected, Outcome, Payment, PromiseToPay
from dispatcher.models import Channel, Contact, OutcomeKind
from dispatcher.planner import plan
from dispatcher.redis_keys import events_key
from dispatcher.store import EVENT_WINDOW, Store
from dispatcher.strategy import Strategy
from tests.conftest import make_account

pytestmark = pytest.mark.integration

SHANGHAI = ZoneInfo("Asia/Shanghai")


def local(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), SHANGHAI).astimezone(UTC)


def queued_ids(contacts: tuple[Contact, ...] | list[Contact]) -> list[str]:
    return [contact.id for contact in contacts]


def send(engine: Engine, contact: Contact) -> None:
    """Claim and end the claim as a worker would after the provider accepted the contact."""
    assert engine.gate.claim(contact).verdict == "send"
    assert engine.gate.end_claim(contact, ClaimStatus.SENT) is True


def test_an_upserted_account_is_planned_at_once(engine: Engine, store: Store) -> None:
    result = engine.upsert(make_account())
    assert (result.status, result.plan is not None and result.plan.stage) == ("applied", "reminder")
    assert queued_ids(result.queued) == ["A1/reminder/sms/0"]
    assert store.claims("A1") == {"A1/reminder/sms/0": "queued"}
    assert store.next_wakeup("A1") == local(date(2026, 3, 3), 11)


def test_without_a_dispatcher_an_account_with_queued_contacts_wakes_now_for_the_pump(
    store: Store, strategy: Strategy, clock: ManualClock
) -> None:
    bare = Engine(store, strategy, clock)  # the API without Celery: the pump must pick the contact up
    [contact] = bare.upsert(make_account()).queued
    assert store.next_wakeup("A1") == clock.now()
    assert [c.id for c in bare.pump()] == [contact.id]
    assert store.next_wakeup("A1") == local(date(2026, 3, 3), 11)


def test_upserting_the_same_account_twice_changes_nothing_the_second_time(engine: Engine, store: Store) -> None:
    engine.upsert(make_account())
    version = store.load("A1").version
    second = engine.upsert(make_account())
    assert (second.status, second.queued) == ("unchanged", ())
    assert store.load("A1").version == version
    assert len(store.load("A1").history) == 1


def test_upserting_a_changed_account_records_an_update(engine: Engine, store: Store) -> None:
    engine.upsert(make_account())
    assert engine.upsert(make_account(name="王大明")).status == "applied"
    assert [entry.event for entry in store.load("A1").history] == ["account_created", "account_updated"]


def test_a_new_balance_from_the_bank_replaces_what_was_paid(engine: Engine, store: Store) -> None:
    engine.upsert(make_account())
    engine.record_event("A1", Payment(amount=Decimal("1000")))
    engine.upsert(make_account(balance=Decimal("4000.00")))
    record = store.load("A1").record
    assert record is not None and (record.state.paid, record.state.status) == (Decimal("0"), "active")


def test_an_account_upserted_with_nothing_owed_is_resolved_and_not_scheduled(engine: Engine, store: Store) -> None:
    result = engine.upsert(make_account(balance=Decimal("0")))
    assert result.queued == ()
    record = store.load("A1").record
    assert record is not None and record.state.status == "resolved"
    assert store.next_wakeup("A1") is None


def test_all_keys_carry_account_or_shard_hash_tags(engine: Engine, store: Store) -> None:
    for n in range(5):
        engine.upsert(make_account(f"K{n}"))
    engine.record_event("K0", Payment(amount=Decimal("1"), event_id="p-1"))
    for key in store.redis.keys("*"):
        tag = key[: key.index("}") + 1]
        assert tag.startswith(("{a:K", "{s:", "{p:+")) and key[len(tag)] == ":", key


def test_a_repeated_event_id_is_a_duplicate_and_applied_once(engine: Engine, store: Store) -> None:
    engine.upsert(make_account())
    first = engine.record_event("A1", Payment(amount=Decimal("100"), event_id="bank-7"))
    again = engine.record_event("A1", Payment(amount=Decimal("100"), event_id="bank-7"))
    assert (first.status, again.status) == ("applied", "duplicate")
    record = store.load("A1").record
    assert record is not None and record.state.paid == Decimal("100")
    assert [entry.event for entry in store.load("A1").history].count("payment") == 1


def test_a_providers_outcome_id_guards_repeats_for_the_window_and_a_banks_event_id_for_good(
    engine: Engine, store: Store
) -> None:
    contact = engine.upsert(make_account()).queued[0]
    engine.record_event("A1", Payment(amount=Decimal("100"), event_id="bank-7"))
    outcome = Outcome(contact_id=contact.id, outcome=OutcomeKind.DELIVERED, channel=contact.channel, event_id="cb-1")
    assert engine.record_event("A1", outcome).status == "applied"
    assert engine.record_event("A1", outcome).status == "duplicate"
    lapses = dict(store.redis.zrange(events_key("A1"), 0, -1, withscores=True))
    assert lapses["bank-7"] == float("inf")
    assert lapses["cb-1"] == pytest.approx(store.wallclock() + EVENT_WINDOW, abs=60)


def test_an_event_for_an_unknown_account_is_refused(engine: Engine) -> None:
    with pytest.raises(UnknownAccount) as caught:
        engine.record_event("ghost", Payment(amount=Decimal("1")))
    assert caught.value.account_id == "ghost"


def test_payment_in_full_mid_run_denies_the_queued_contact_at_its_claim(engine: Engine, store: Store) -> None:
    [contact] = engine.upsert(make_account()).queued
    paid = engine.record_event("A1", Payment(amount=Decimal("5000.00")))
    assert paid.plan is not None and paid.plan.note == "resolved"
    claim = engine.gate.claim(contact)
    assert (claim.verdict, claim.rule) == ("deny", "account_resolved")
    assert store.claims("A1") == {}
    assert [entry.kind for entry in store.load("A1").history] == ["event", "event"]  # no attempt
    assert store.next_wakeup("A1") is None
    assert engine.gate.claim(contact).verdict == "deny"  # redelivered: still never claimed
    last_looks = [e for e in store.audit("A1") if e["type"] == "last_look"]
    assert [(e["contact_id"], e["verdict"], e["rule"]) for e in last_looks] == [
        (contact.id, "deny", "account_resolved")
    ] * 2


def test_nothing_is_queued_after_do_not_contact(engine: Engine, store: Store, clock: ManualClock) -> None:
    [contact] = engine.upsert(make_account()).queued
    engine.record_event("A1", DoNotContact(reason="lawyer letter"))
    assert engine.gate.claim(contact).rule == "do_not_contact"
    clock.advance(timedelta(days=40))
    assert engine.pump() == []
    assert store.next_wakeup("A1") is None


def test_the_same_contact_claimed_twice_is_sent_once(engine: Engine, store: Store) -> None:
    [contact] = engine.upsert(make_account()).queued
    first, second = engine.gate.claim(contact), engine.gate.claim(contact)
    assert (first.verdict, second.verdict) == ("send", "claimed_elsewhere")
    attempts = [entry for entry in store.load("A1").history if entry.kind == "attempt"]
    assert [(a.contact_id, a.channel) for a in attempts] == [(contact.id, Channel.SMS)]


def test_a_sent_contact_redelivered_later_is_not_claimed_again(engine: Engine, store: Store) -> None:
    [contact] = engine.upsert(make_account()).queued
    send(engine, contact)
    assert store.claim_status("A1", contact.id) == "sent"
    assert engine.gate.claim(contact).verdict == "claimed_elsewhere"


def test_a_released_claim_is_queued_again_and_its_attempt_leaves_the_caps(engine: Engine, store: Store) -> None:
    [contact] = engine.upsert(make_account()).queued
    claim = engine.gate.claim(contact)
    assert claim.verdict == "send" and claim.attempt is not None
    assert engine.gate.release(contact, claim.attempt, "rate_limited") is True
    assert store.claim_status("A1", contact.id) == "queued"
    assert [entry.kind for entry in store.load("A1").history] == ["event"]  # the attempt is gone
    assert engine.gate.release(contact, claim.attempt, "rate_limited") is False  # no longer sending
    assert engine.gate.claim(contact).verdict == "send"
    audit = [(e["status"], e.get("reason")) for e in store.audit("A1") if e["type"] == "contact"]
    assert audit == [("not_sent", "rate_limited")] * 2


def test_a_released_and_forgotten_contact_is_queued_again_by_the_next_plan(engine: Engine, store: Store) -> None:
    [contact] = engine.upsert(make_account()).queued
    claim = engine.gate.claim(contact)
    assert claim.attempt is not None
    engine.gate.release(contact, claim.attempt, "connection_refused", forget=True)
    assert store.claims("A1") == {}
    assert queued_ids(engine.replan_many(["A1"])[0].queued) == [contact.id]


def test_a_contact_refused_for_good_ends_failed_and_never_queued_again(engine: Engine, store: Store) -> None:
    [contact] = engine.upsert(make_account()).queued
    engine.gate.claim(contact)
    assert engine.gate.end_claim(contact, ClaimStatus.FAILED) is True
    assert store.claim_status("A1", contact.id) == "failed"
    assert engine.replan_many(["A1"])[0].queued == ()
    assert engine.gate.claim(contact).verdict == "claimed_elsewhere"


def test_an_unknown_send_stays_in_doubt_and_is_never_resent(engine: Engine, store: Store, clock: ManualClock) -> None:
    [contact] = engine.upsert(make_account()).queued
    engine.gate.claim(contact)
    engine.gate.end_claim(contact, ClaimStatus.UNKNOWN)
    clock.advance(timedelta(days=1, hours=6))  # the afternoon: past any place in the morning's spread
    assert store.claim_status("A1", contact.id) == "unknown"
    assert [d.contact_id for d in store.ledger.in_doubt_before(store.wallclock() + 1)] == [contact.id]
    assert engine.gate.claim(contact).verdict == "claimed_elsewhere"
    engine.replan_many(["A1"])
    assert store.claim_status("A1", contact.id) == "unknown"  # only the reconciler's evidence moves it


def test_a_send_whose_worker_died_mid_call_is_never_resent_and_counts_against_the_caps(
    engine: Engine, store: Store, clock: ManualClock
) -> None:
    [contact] = engine.upsert(make_account()).queued
    assert engine.gate.claim(contact).verdict == "send"  # ... and the worker process is killed here
    assert engine.gate.claim(contact).verdict == "claimed_elsewhere"  # the redelivered task does nothing
    assert store.claim_status("A1", contact.id) == "sending"
    attempts = [e for e in store.load("A1").history if e.kind == "attempt"]
    assert [a.contact_id for a in attempts] == [contact.id]  # counted once against the caps


def test_an_ad_hoc_contact_is_planned_once_under_the_same_policy(
    engine: Engine, store: Store, clock: ManualClock
) -> None:
    [ladder] = engine.upsert(make_account()).queued
    send(engine, ladder)
    clock.advance(timedelta(hours=2))  # the spacing between two contacts
    request = AdhocContact(channel=Channel.SMS, template="reminder_sms", key="agent-7")
    [adhoc] = engine.record_event("A1", request).queued
    assert (adhoc.id, adhoc.stage, adhoc.channel) == ("A1/adhoc/agent-7/0", "adhoc", Channel.SMS)
    send(engine, adhoc)
    clock.advance(timedelta(hours=2))
    # A third text the same day is over the cap: the request waits for the next day, not refused.
    [again, second] = [engine.record_event("A1", AdhocContact(channel=Channel.SMS, template="reminder_sms", key=k))
                   for k in ("agent-7", "agent-8")]  # fmt: skip
    assert (again.queued, second.queued) == ((), ())
    deferred = [d for d in (second.plan.decisions if second.plan else ()) if d.contact_id == "A1/adhoc/agent-8/0"]
    assert [(d.verdict, d.rule) for d in deferred] == [("defer", "cap:sms:2/1d")]
    attempts = [e.contact_id for e in store.load("A1").history if e.kind == "attempt"]
    assert attempts == [ladder.id, adhoc.id]


def test_a_contact_whose_stage_has_passed_is_denied_at_its_claim(
    engine: Engine, store: Store, clock: ManualClock
) -> None:
    [contact] = engine.upsert(make_account()).queued
    clock.advance(timedelta(days=7))  # eight days past due: second notice
    claim = engine.gate.claim(contact)
    assert (claim.verdict, claim.rule) == ("deny", "stage_changed:second_notice")


def test_a_promise_made_after_queueing_denies_the_contact_at_its_claim(engine: Engine) -> None:
    [contact] = engine.upsert(make_account()).queued
    engine.record_event("A1", PromiseToPay(amount=Decimal("500"), due=date(2026, 3, 6)))
    assert engine.gate.claim(contact).rule == "promise_to_pay"


def test_a_claim_outside_the_window_defers_and_brings_the_wake_up_forward(
    engine: Engine, store: Store, clock: ManualClock
) -> None:
    [contact] = engine.upsert(make_account()).queued
    clock.set(local(date(2026, 3, 2), 21, 30))  # the worker picked it up late at night
    claim = engine.gate.claim(contact)
    # It waited for the night: it goes at the account's own place in the morning's spread, not at 08:00.
    morning = local(date(2026, 3, 3), 8) + spread_offset("A1", engine.strategy.compliance.pressure.spread_hours)
    assert (claim.verdict, claim.rule, claim.until) == ("defer", "window:sms", morning)
    assert store.claims("A1") == {}
    wake = store.next_wakeup("A1")
    assert wake is not None and wake <= morning  # no later than the text (the call of 11:00 may come first)
    clock.set(morning)
    assert queued_ids(engine.pump()) == [contact.id]


def test_the_audit_trail_holds_events_and_decisions_with_their_rules(engine: Engine, store: Store) -> None:
    account = make_account(extra_timezones=("Europe/London",))  # 10:00 Shanghai is 02:00 London
    engine.upsert(account)
    engine.record_event("A1", Payment(amount=Decimal("10"), event_id="p-1"))
    trail = store.audit("A1")
    events = [(e["type"], e.get("event")) for e in trail if e["type"] == "event"]
    assert events == [("event", "account_created"), ("event", "payment")]
    decisions = [(e["contact_id"], e["verdict"], e["rule"], e["until"]) for e in trail if e["type"] == "decision"]
    contact_id, verdict, rule, until = decisions[0]
    assert (contact_id, verdict, rule) == ("A1/reminder/sms/0", "defer", "window:sms")
    assert datetime.fromisoformat(str(until)) == datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
    assert all(e["account_id"] == "A1" for e in trail)


def test_an_outcome_without_a_channel_takes_the_attempts_and_falls_back(
    engine: Engine, store: Store, clock: ManualClock
) -> None:
    [sms] = engine.upsert(make_account()).queued
    send(engine, sms)
    clock.set(local(date(2026, 3, 3), 11))
    [call] = engine.pump()
    assert call.id == "A1/reminder/call/0"
    send(engine, call)
    result = engine.record_event("A1", Outcome(contact_id=call.id, outcome=OutcomeKind.NO_ANSWER))
    [fallback] = result.queued
    assert (fallback.id, fallback.channel, fallback.template) == (
        "A1/reminder/call/0/fb", Channel.SMS, "missed_call_sms"
    )  # fmt: skip
    outcome = [entry for entry in store.load("A1").history if entry.kind == "outcome"]
    assert [(o.contact_id, o.channel, o.outcome) for o in outcome] == [(call.id, Channel.VOICE, OutcomeKind.NO_ANSWER)]


def test_an_outcome_for_a_contact_never_attempted_is_refused(engine: Engine) -> None:
    engine.upsert(make_account())
    with pytest.raises(EventRejected) as caught:
        engine.record_event("A1", Outcome(contact_id="A1/reminder/call/0", outcome=OutcomeKind.ANSWERED))
    assert caught.value.field == "contact_id"


def test_a_crashed_pump_loses_no_wake_up_and_the_retry_queues_the_same_contacts(
    engine: Engine, store: Store, clock: ManualClock
) -> None:
    engine.upsert(make_account(due_date=date(2026, 3, 2)))  # due today: the first reminder is tomorrow
    wake = store.next_wakeup("A1")
    assert wake == local(date(2026, 3, 3), 10)
    clock.set(wake)
    loaded = store.load("A1")
    assert loaded.record is not None
    expected = queued_ids(list(plan(loaded.record, loaded.history, engine.strategy, clock.now()).contacts))
    assert expected == ["A1/reminder/sms/0"]

    assert store.lease_due(clock.now(), 120, 100) == ["A1"]  # ... and the planner dies here
    assert engine.pump(lease_seconds=120) == []  # hidden while leased
    assert store.next_wakeup("A1") == wake + timedelta(seconds=120)
    assert store.claims("A1") == {}

    clock.advance(timedelta(seconds=120))
    assert queued_ids(engine.pump(lease_seconds=120)) == expected
    assert store.next_wakeup("A1") == local(date(2026, 3, 4), 11)


def test_pumping_twice_at_the_same_moment_queues_nothing_new(engine: Engine, clock: ManualClock) -> None:
    engine.upsert(make_account(due_date=date(2026, 3, 2)))
    clock.set(local(date(2026, 3, 3), 10))
    assert queued_ids(engine.pump()) == ["A1/reminder/sms/0"]
    assert engine.pump() == []


def test_a_replan_offers_a_still_queued_contact_again_and_the_claim_keeps_it_to_one_send(
    engine: Engine, clock: ManualClock
) -> None:
    engine.upsert(make_account(due_date=date(2026, 3, 2)))
    clock.set(local(date(2026, 3, 3), 10))
    [first] = engine.pump()
    [again] = engine.replan_many(["A1"])[0].queued  # its dispatch may have been lost: offer it again
    assert again.id == first.id
    assert engine.gate.claim(first).verdict == "send"
    assert engine.gate.claim(again).verdict == "claimed_elsewhere"
    assert engine.replan_many(["A1"])[0].queued == ()


def test_a_broken_promise_escalates_the_account_when_it_lapses(
    engine: Engine, store: Store, clock: ManualClock
) -> None:
    [contact] = engine.upsert(make_account()).queued
    send(engine, contact)
    engine.record_event("A1", PromiseToPay(amount=Decimal("500"), due=date(2026, 3, 3)))
    end_of_grace = local(date(2026, 3, 6), 0)
    assert store.next_wakeup("A1") == end_of_grace
    clock.set(end_of_grace)
    assert engine.pump() == []  # midnight: the escalated stage's first text waits for 10:00
    record = store.load("A1").record
    assert record is not None and (record.stage, record.state.stage_floor) == ("second_notice", 1)
    assert "promise_broken" in [entry.event for entry in store.load("A1").history]
    clock.set(store.next_wakeup("A1") or end_of_grace)
    assert queued_ids(engine.pump()) == ["A1/second_notice/sms/0"]


def test_a_kept_promise_resumes_the_ladder_without_escalation(engine: Engine, store: Store, clock: ManualClock) -> None:
    engine.upsert(make_account())
    engine.record_event("A1", PromiseToPay(amount=Decimal("500"), due=date(2026, 3, 3)))
    engine.record_event("A1", Payment(amount=Decimal("500")))
    clock.set(local(date(2026, 3, 6), 0))
    engine.pump()
    record = store.load("A1").record
    assert record is not None and (record.stage, record.state.stage_floor, record.state.promise) == (
        "reminder", 0, None
    )  # fmt: skip
    assert "promise_kept" in [entry.event for entry in store.load("A1").history]


def test_the_ladder_runs_from_reminder_to_the_hand_off_and_then_stops(
    engine: Engine, store: Store, clock: ManualClock
) -> None:
    engine.upsert(make_account(due_date=date(2026, 3, 2)))
    sent: list[Contact] = []
    for _ in range(500):
        wake = store.earliest_wakeup()
        if wake is None:
            break
        clock.set(max(wake, clock.now()))
        for contact in engine.pump():
            send(engine, contact)
            sent.append(contact)
            if contact.channel is Channel.AGENCY:
                engine.record_event("A1", Outcome(contact_id=contact.id, outcome=OutcomeKind.HANDED_OFF))
    stages = list(dict.fromkeys(contact.stage for contact in sent))
    assert stages == ["reminder", "second_notice", "early", "continuous", "letter", "legal"]
    assert sent[-1].id == "A1/legal/handoff/0"
    assert len({contact.id for contact in sent}) == len(sent)
    assert store.earliest_wakeup() is None
    record = store.load("A1").record
    assert record is not None and record.state.status == "handed_off"
    clock.advance(timedelta(days=30))
    assert engine.pump() == []


def test_concurrent_events_on_one_account_are_all_applied(engine: Engine, store: Store) -> None:
    engine.upsert(make_account())
    barrier = threading.Barrier(8)

    def pay(n: int) -> str:
        barrier.wait()
        return engine.record_event("A1", Payment(amount=Decimal("10"), event_id=f"pay-{n}")).status

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(pay, range(8)))
    assert statuses == ["applied"] * 8
    record = store.load("A1").record
    assert record is not None and record.state.paid == Decimal("80")
    assert [entry.event for entry in store.load("A1").history].count("payment") == 8


def test_concurrent_claims_of_one_contact_let_exactly_one_worker_send(engine: Engine, store: Store) -> None:
    [contact] = engine.upsert(make_account()).queued
    barrier = threading.Barrier(8)

    def claim(_: int) -> str:
        barrier.wait()
        return engine.gate.claim(contact).verdict

    with ThreadPoolExecutor(max_workers=8) as pool:
        verdicts = sorted(pool.map(claim, range(8)))
    assert verdicts == ["claimed_elsewhere"] * 7 + ["send"]
    assert [entry.contact_id for entry in store.load("A1").history if entry.kind == "attempt"] == [contact.id]


def test_concurrent_claims_of_different_texts_never_break_the_daily_cap(
    engine: Engine, store: Store, clock: ManualClock
) -> None:
    engine.upsert(make_account())
    texts = [
        Contact(f"A1/adhoc/sms/{n}", "A1", Channel.SMS, "reminder_sms", "adhoc", "sms", clock.now()) for n in range(6)
    ]
    barrier = threading.Barrier(len(texts))

    def claim(contact: Contact) -> str:
        barrier.wait()
        return engine.gate.claim(contact).verdict

    with ThreadPoolExecutor(max_workers=len(texts)) as pool:
        verdicts = list(pool.map(claim, texts))
    # The upsert queued (but did not claim) the reminder text; the spacing lets one ad-hoc text through now.
    assert verdicts.count("send") == 1
    assert set(verdicts) == {"send", "defer"}
    attempts = [entry for entry in store.load("A1").history if entry.kind == "attempt"]
    assert len(attempts) == 1


def test_an_import_that_assumes_new_accounts_still_reads_the_ones_that_exist(engine: Engine, store: Store) -> None:
    first = engine.upsert_many([make_account("N1"), make_account("N2")])  # all new: the next batch skips the read
    send(engine, first[0].queued[0])
    history_before = store.load("N1").history
    # A history with no record (written by hand): the assumption fails there too, and the history is read.
    store.redis.rpush("{a:N9}:hist", '{"kind":"event","at":"2026-03-01T00:00:00Z","event":"account_created"}')

    results = engine.upsert_many(
        [make_account("N1", balance=Decimal("3000")), make_account("N2"), make_account("N3"), make_account("N9")]
    )

    assert [(r.account_id, r.status, r.created) for r in results] == [
        ("N1", "applied", False), ("N2", "unchanged", False), ("N3", "applied", True), ("N9", "applied", True),
    ]  # fmt: skip
    after = store.load("N1").history
    assert after[: len(history_before)] == history_before  # nothing lost, nothing written twice
    assert [e.event for e in after[len(history_before) :]] == ["account_updated"]
    assert store.claims("N1")[first[0].queued[0].id] == "sent"
    assert [e.event for e in store.load("N9").history] == ["account_created", "account_created"]
    # Read or assumed new, every upserted account is in its number's index, for an inbound STOP.
    assert phone_index.accounts_for(store, "+8613800138000") == ["N1", "N2", "N3", "N9"]
