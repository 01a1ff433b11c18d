"""Properties of re-planning: random accounts, random events and random clock jumps, driven through the real
engine on the real Redis (and, faster, through the pure planner alone).

Whatever happens, every send must be one the rules allow, judged independently of the policy's code: inside its
window in every zone of the debtor, under every rolling cap, outside the quiet period, with consent, not opted
out, not held, not under a promise, to a valid address, and never after payment in full, do-not-contact or the
hand-off; no contact id is sent twice; planning is deterministic; a crash between lease and plan loses nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import redis
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.core.clock import ManualClock
from dispatcher.core.events import (
    Dispute,
    DisputeResolved,
    DoNotContact,
    Event,
    Hardship,
    OptIn,
    OptOut,
    Outcome,
    Payment,
    PromiseToPay,
)
from dispatcher.core.models import (
    ADDRESS_OF_CHANNEL,
    Account,
    AccountRecord,
    AccountState,
    AddressKind,
    Channel,
    ClaimStatus,
    Contact,
    ContactRef,
    HistoryEntry,
    OutcomeKind,
)
from dispatcher.core.planner import plan
from dispatcher.core.strategy import HolidayRule, Strategy
from dispatcher.engine import Engine, Result
from dispatcher.state.redis_server import EmbeddedRedis
from dispatcher.state.store import Store
from tests.conftest import make_account
from tests.property.test_compliance_invariants import (
    POLICY,
    STRATEGY,
    ZONES,
    allowed_independently,
    in_quiet_period,
    in_window,
    on_holiday,
    over_cap,
)

START = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
LEASE = 120
WITH_HOLIDAYS = STRATEGY.model_copy(
    update={"compliance": POLICY.model_copy(update={"holidays": HolidayRule(enabled=True)})}
)

# What a provider or the debtor may answer to a contact of each channel.
OUTCOMES: dict[Channel, tuple[OutcomeKind, ...]] = {
    Channel.SMS: (OutcomeKind.DELIVERED, OutcomeKind.UNDELIVERED, OutcomeKind.INVALID_ADDRESS, OutcomeKind.OPTED_OUT),
    Channel.VOICE: (OutcomeKind.ANSWERED, OutcomeKind.NO_ANSWER, OutcomeKind.BUSY, OutcomeKind.VOICEMAIL,
                    OutcomeKind.WRONG_PARTY),
    Channel.EMAIL: (OutcomeKind.DELIVERED, OutcomeKind.BOUNCED),
    Channel.LETTER: (OutcomeKind.DELIVERED, OutcomeKind.RETURNED),
    Channel.AGENCY: (OutcomeKind.HANDED_OFF,),
    Channel.WECHAT: (OutcomeKind.DELIVERED, OutcomeKind.UNDELIVERED, OutcomeKind.OPTED_OUT,
                     OutcomeKind.INVALID_ADDRESS),
}  # fmt: skip
# Outcomes that invalidate the address in the default ladder (wrong party: every call step says so).
INVALIDATING = {OutcomeKind.INVALID_ADDRESS, OutcomeKind.BOUNCED, OutcomeKind.RETURNED}


def local_midnight(day: date, zone_name: str) -> datetime:
    return datetime.combine(day, time(0, 0), ZoneInfo(zone_name)).astimezone(UTC)


# Generators.
@st.composite
def debtors(draw: st.DrawFn) -> Account:
    main = draw(st.sampled_from(ZONES))
    extra = draw(st.lists(st.sampled_from([z for z in ZONES if z != main]), max_size=1, unique=True))
    days_late = draw(st.integers(min_value=-3, max_value=95))
    consent = draw(st.one_of(st.just(frozenset(Channel)), st.frozensets(st.sampled_from(list(Channel)))))
    return make_account(
        "P1",
        timezone=main,
        extra_timezones=tuple(extra),
        due_date=START.date() - timedelta(days=days_late),
        consent=consent,
        email=draw(st.sampled_from(["p1@example.com", None])),
        wechat_openid=draw(st.sampled_from(["oP1Debtor0000000000000000000", None])),
    )


channels = st.sampled_from([Channel.SMS, Channel.VOICE, Channel.EMAIL, Channel.LETTER])
index = st.integers(min_value=0, max_value=10_000)
ACTION_ARGS: dict[str, st.SearchStrategy[tuple[Any, ...]]] = {
    "wake": st.just(()),
    "advance": st.tuples(st.integers(min_value=1, max_value=72)),  # hours
    "outcome": st.tuples(index, index),
    "payment": st.tuples(st.integers(min_value=5, max_value=40)),  # percent of the balance
    "promise": st.tuples(st.integers(min_value=0, max_value=10)),  # days ahead
    "dispute": st.just(()),
    "dispute_resolved": st.just(()),
    "hardship": st.tuples(st.integers(min_value=1, max_value=10)),  # days
    "opt_out": st.tuples(channels),
    "opt_in": st.tuples(channels),
    "crash": st.just(()),
    "redeliver": st.tuples(index),
}
# Weights by repetition: time passing and outcomes are common, business events rarer.
ACTION_KINDS = (
    ["wake"] * 6
    + ["advance"] * 3
    + ["outcome"] * 5
    + [k for k in ACTION_ARGS if k not in ("wake", "advance", "outcome")]
)
action = st.sampled_from(ACTION_KINDS).flatmap(lambda kind: ACTION_ARGS[kind].map(lambda args: (kind, *args)))
# At most one event that ends all contact, at a random point of the run (most runs have none).
endings = st.sampled_from([None, None, None, "payment_in_full", "do_not_contact"])
Action = tuple[Any, ...]


# The test's own record of what happened, to judge the sends by.
@dataclass
class Period:
    """A span in which nothing (or nothing on one channel) may be sent: from a step, until a step or a time."""

    start_step: int
    end_step: int | None = None
    end_time: datetime | None = None

    def covers(self, step: int, at: datetime) -> bool:
        return (
            step > self.start_step
            and (self.end_step is None or step < self.end_step)
            and (self.end_time is None or at < self.end_time)
        )


@dataclass
class Sent:
    contact: Contact
    at: datetime
    step: int


@dataclass
class Ledger:
    account: Account
    step: int = 0
    sends: list[Sent] = field(default_factory=list)
    conversations: list[tuple[int, datetime]] = field(default_factory=list)
    stopped: list[tuple[int, str]] = field(default_factory=list)
    paid: Decimal = Decimal("0")
    opt_outs: dict[Channel, list[Period]] = field(default_factory=dict)
    holds: dict[str, list[Period]] = field(default_factory=dict)
    promises: list[Period] = field(default_factory=list)
    invalid: dict[AddressKind, int] = field(default_factory=dict)

    def tick(self) -> int:
        self.step += 1
        return self.step

    def open(self, periods: list[Period], end_time: datetime | None = None) -> None:
        self.close(periods)
        periods.append(Period(self.tick(), end_time=end_time))

    def close(self, periods: list[Period]) -> None:
        for period in periods:
            if period.end_step is None:
                period.end_step = self.tick()


class Driver:
    """Runs one random scenario through the engine, claiming every queued contact as a worker would."""

    def __init__(self, engine: Engine, store: Store, clock: ManualClock, account: Account, send_results: Sequence[str]):
        self.engine, self.store, self.clock = engine, store, clock
        self.send_results = send_results  # how each claimed send ends, in turn
        self.claimed = 0
        self.ledger = Ledger(account)
        self.pending: list[Contact] = []

    @property
    def account_id(self) -> str:
        return self.ledger.account.id

    def now(self) -> datetime:
        return self.clock.now()

    def event(self, event: Event) -> Result:
        result = self.engine.record_event(self.account_id, event)
        self.pending += result.queued
        return result

    def pump(self) -> None:
        self.pending += self.engine.pump(lease_seconds=LEASE)
        self.check_plan_is_deterministic()

    def claim_pending(self) -> None:
        pending, self.pending = self.pending, []
        for contact in pending:
            claim = self.engine.gate.claim(contact)
            if claim.verdict != "send":
                continue
            assert claim.attempt is not None
            result = self.send_results[self.claimed % len(self.send_results)]
            self.claimed += 1
            if result == "release":  # a definite non-send: the worker tries again on its next round
                assert self.engine.gate.release(contact, claim.attempt, "rate_limited")
                self.pending.append(contact)
            elif result == "forget":  # a definite non-send left to the planner to redo
                assert self.engine.gate.release(contact, claim.attempt, "connection_refused", forget=True)
            else:
                self.ledger.sends.append(Sent(contact, self.now(), self.ledger.tick()))
                assert self.engine.gate.end_claim(contact, ClaimStatus(result))

    def check_plan_is_deterministic(self) -> None:
        loaded = self.store.load(self.account_id)
        assert loaded.record is not None
        first = plan(loaded.record, loaded.history, self.engine.strategy, self.now())
        second = plan(loaded.record, loaded.history, self.engine.strategy, self.now())
        assert first == second

    def run(self, scenario: Scenario) -> None:
        self.pending += self.engine.upsert(self.ledger.account).queued
        self.claim_pending()
        for act, late in zip(scenario.actions, scenario.claim_late, strict=True):
            self.act(act)
            self.pump()
            if not late:
                self.claim_pending()
        self.claim_pending()
        if scenario.resolve_disputes and any(p.end_step is None for p in self.ledger.holds.get("dispute", [])):
            self.act(("dispute_resolved",))
        self.run_out(START + timedelta(days=scenario.horizon_days))

    def run_out(self, horizon: datetime) -> None:
        """Follow the schedule to the horizon, answering every hand-off."""
        for _ in range(3000):
            wake = self.store.earliest_wakeup()
            if wake is None or wake > horizon:
                return
            self.clock.set(max(wake, self.now()))
            self.pump()
            handoffs = [c for c in self.pending if c.channel is Channel.AGENCY]
            self.claim_pending()
            for contact in handoffs:
                if any(sent.contact.id == contact.id for sent in self.ledger.sends):
                    self.outcome(contact, OutcomeKind.HANDED_OFF)
        raise AssertionError("the schedule never reached the horizon: a wake-up keeps recurring at the same time")

    def act(self, act: Action) -> None:
        kind, *args = act
        ledger, now = self.ledger, self.now()
        balance = ledger.account.balance
        if kind == "wake":
            wake = self.store.earliest_wakeup()
            self.clock.set(max(wake, now) if wake is not None else now + timedelta(days=1))
        elif kind == "advance":
            self.clock.advance(timedelta(hours=args[0]))
        elif kind in ("payment", "payment_in_full"):
            amount = balance if kind == "payment_in_full" else (balance * args[0] / 100).quantize(Decimal("0.01"))
            self.event(Payment(amount=amount))
            ledger.paid += amount
            if ledger.paid >= balance:
                ledger.stopped.append((ledger.tick(), "payment_in_full"))
        elif kind == "promise":
            zone_name = ledger.account.timezone
            due = now.astimezone(ZoneInfo(zone_name)).date() + timedelta(days=args[0])
            self.event(PromiseToPay(amount=Decimal("100"), due=due))
            grace = self.engine.strategy.events.promise_to_pay.grace_days
            ledger.open(ledger.promises, local_midnight(due + timedelta(days=grace + 1), zone_name))
        elif kind == "dispute":
            self.event(Dispute())
            if not any(p.end_step is None for p in ledger.holds.get("dispute", [])):
                ledger.open(ledger.holds.setdefault("dispute", []))
        elif kind == "dispute_resolved":
            self.event(DisputeResolved())
            ledger.close(ledger.holds.get("dispute", []))
        elif kind == "hardship":
            zone_name = ledger.account.timezone
            until = now.astimezone(ZoneInfo(zone_name)).date() + timedelta(days=args[0])
            self.event(Hardship(days=args[0]))
            ledger.open(ledger.holds.setdefault("hardship", []), local_midnight(until, zone_name))
        elif kind == "opt_out":
            self.event(OptOut(channel=args[0]))
            if not any(p.end_step is None for p in ledger.opt_outs.get(args[0], [])):
                ledger.open(ledger.opt_outs.setdefault(args[0], []))
        elif kind == "opt_in":
            self.event(OptIn(channel=args[0]))
            ledger.close(ledger.opt_outs.get(args[0], []))
        elif kind == "do_not_contact":
            self.event(DoNotContact())
            ledger.stopped.append((ledger.tick(), "do_not_contact"))
        elif kind == "outcome" and ledger.sends:
            contact = ledger.sends[args[0] % len(ledger.sends)].contact
            choices = OUTCOMES[contact.channel]
            self.outcome(contact, choices[args[1] % len(choices)])
        elif kind == "crash":
            self.crash()
        elif kind == "redeliver" and ledger.sends:
            contact = ledger.sends[args[0] % len(ledger.sends)].contact
            assert self.engine.gate.claim(contact).verdict != "send", f"{contact.id} claimed twice"

    def outcome(self, contact: Contact, kind: OutcomeKind) -> None:
        ledger = self.ledger
        self.event(Outcome(contact_id=contact.id, outcome=kind))
        step = ledger.tick()
        if kind is OutcomeKind.ANSWERED:
            ledger.conversations.append((step, self.now()))
        elif kind is OutcomeKind.HANDED_OFF:
            ledger.stopped.append((step, "handed_off"))
        elif kind is OutcomeKind.OPTED_OUT and not any(
            p.end_step is None for p in ledger.opt_outs.get(contact.channel, [])
        ):
            ledger.open(ledger.opt_outs.setdefault(contact.channel, []))
        invalidates = kind in INVALIDATING or (kind is OutcomeKind.WRONG_PARTY and contact.channel is Channel.VOICE)
        address = ADDRESS_OF_CHANNEL[contact.channel]
        if invalidates and address is not None:
            ledger.invalid.setdefault(address, step)

    def crash(self) -> None:
        """A planner leases the due accounts and dies before committing its plans."""
        now = self.now()
        leased = self.store.lease_due(now, LEASE, 1000)
        if self.account_id in leased:
            assert self.store.next_wakeup(self.account_id) == now + timedelta(seconds=LEASE)
            version = self.store.load(self.account_id).version
            self.clock.advance(timedelta(seconds=LEASE - 1))
            assert self.account_id not in self.store.lease_due(self.clock.now(), LEASE, 1000)
            self.clock.advance(timedelta(seconds=1))
            self.pump()
            assert self.store.load(self.account_id).version != version, "the leased account was never re-planned"


def check_sends(ledger: Ledger, strategy: Strategy) -> None:
    """Judge every send by the rules, independently of the policy's code."""
    account, policy = ledger.account, strategy.compliance
    ids = [sent.contact.id for sent in ledger.sends]
    assert len(ids) == len(set(ids)), "a contact id was sent twice"
    by_channel: dict[Channel, list[datetime]] = {}
    for sent in ledger.sends:
        contact, at, step = sent.contact, sent.at, sent.step
        channel = contact.channel
        where = f"{contact.id} at {at.isoformat()}"
        assert ContactRef.parse(contact.id) is not None and contact.account_id == account.id
        assert in_window(channel, account, at, policy), f"outside the {channel} window: {where}"
        assert not on_holiday(channel, account, at, policy), f"on a holiday: {where}"
        earlier = by_channel.setdefault(channel, [])
        assert not over_cap(channel, earlier, at, policy), f"over the {channel} cap: {where}"
        earlier.append(at)
        talks = [talked for talk_step, talked in ledger.conversations if talk_step < step]
        assert not in_quiet_period(channel, account, talks, at, policy), f"in the quiet period: {where}"
        assert not policy.needs_consent(channel) or channel in account.consent, f"without consent: {where}"
        assert account.address_for(channel) is not None, f"without an address: {where}"
        for stop_step, why in ledger.stopped:
            assert step < stop_step, f"after {why}: {where}"
        for period in ledger.opt_outs.get(channel, []):
            assert not period.covers(step, at), f"while opted out: {where}"
        for reason, periods in ledger.holds.items():
            assert not any(p.covers(step, at) for p in periods), f"during a {reason} hold: {where}"
        assert not any(p.covers(step, at) for p in ledger.promises), f"under a promise to pay: {where}"
        address = ADDRESS_OF_CHANNEL[channel]
        invalid_since = ledger.invalid.get(address) if address is not None else None
        assert invalid_since is None or step < invalid_since, f"to an invalidated {address}: {where}"


@dataclass(frozen=True)
class Scenario:
    account: Account
    actions: list[Action]
    claim_late: list[bool]  # per action: leave the queued contacts for a worker that comes later
    horizon_days: int
    holidays: bool
    resolve_disputes: bool
    send_results: list[str]


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    actions = draw(st.lists(action, min_size=5, max_size=30))
    ending = draw(endings)
    if ending is not None:
        actions.insert(draw(st.integers(min_value=0, max_value=len(actions))), (ending,))
    return Scenario(
        account=draw(debtors()),
        actions=actions,
        claim_late=draw(st.lists(st.booleans(), min_size=len(actions), max_size=len(actions))),
        horizon_days=draw(st.integers(min_value=40, max_value=120)),
        holidays=draw(st.booleans()),
        resolve_disputes=draw(st.booleans()),
        send_results=draw(
            st.lists(st.sampled_from(["sent", "sent", "sent", "unknown", "release", "forget"]), min_size=1, max_size=8)
        ),  # fmt: skip
    )


@settings(max_examples=50, deadline=None)
@given(scenario=scenarios())
def test_every_send_in_a_random_run_obeys_the_rules(redis_server: EmbeddedRedis, scenario: Scenario) -> None:
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    client.flushall()
    try:
        store = Store(client, shards=4)
        strategy = WITH_HOLIDAYS if scenario.holidays else STRATEGY
        clock = ManualClock(START)
        driver = Driver(Engine(store, strategy, clock), store, clock, scenario.account, scenario.send_results)
        driver.run(scenario)
        check_sends(driver.ledger, strategy)
        if driver.ledger.stopped:
            assert store.earliest_wakeup() is None, "an account that may no longer be contacted is still scheduled"
    finally:
        client.close()


# The planner alone, no Redis: fast and many examples.
ladder_ids = st.sampled_from(
    [f"P1/{stage.name}/{step.name}" for stage in STRATEGY.stages for step in stage.steps]
).flatmap(
    lambda prefix: st.builds(lambda n, fb: f"{prefix}/{n}" + ("/fb" if fb else ""), st.integers(0, 4), st.booleans())
)


@st.composite
def histories(draw: st.DrawFn, now: datetime) -> list[HistoryEntry]:
    entries = []
    for _ in range(draw(st.integers(min_value=0, max_value=12))):
        contact_id = draw(ladder_ids)
        ref = ContactRef.parse(contact_id)
        assert ref is not None
        step = STRATEGY.step(ref.stage, ref.step)
        assert step is not None
        at = now - timedelta(minutes=draw(st.integers(min_value=1, max_value=20 * 24 * 60)))
        entries.append(HistoryEntry(kind="attempt", at=at, contact_id=contact_id, channel=step.channel))
        if draw(st.booleans()):
            kind = draw(st.sampled_from(OUTCOMES[step.channel]))
            entries.append(HistoryEntry(kind="outcome", at=at + timedelta(minutes=2), contact_id=contact_id,
                                        channel=step.channel, outcome=kind))  # fmt: skip
    return sorted(entries, key=lambda entry: entry.at)


@st.composite
def planning_inputs(draw: st.DrawFn) -> tuple[AccountRecord, list[HistoryEntry], datetime]:
    account = draw(debtors())
    now = START + timedelta(minutes=draw(st.integers(min_value=0, max_value=60 * 24 * 60)))
    state = AccountState(
        opted_out=draw(st.frozensets(st.sampled_from(list(Channel)), max_size=2)),
        invalid_addresses=draw(st.frozensets(st.sampled_from(list(AddressKind)), max_size=1)),
    )
    return AccountRecord(account=account, state=state), draw(histories(now)), now


@settings(max_examples=300, deadline=None)
@given(planning_inputs())
def test_a_plan_is_deterministic_and_every_contact_in_it_may_be_sent_now(
    inputs: tuple[AccountRecord, list[HistoryEntry], datetime],
) -> None:
    record, history, now = inputs
    account, state = record.account, record.state
    result = plan(record, history, STRATEGY, now)
    assert result == plan(record, history, STRATEGY, now)
    assert result.next_wakeup is None or result.next_wakeup > now
    attempted = {entry.contact_id for entry in history if entry.kind == "attempt"}
    ids = [contact.id for contact in result.contacts]
    assert len(ids) == len(set(ids)) and not attempted & set(ids)
    sent: dict[Channel, list[datetime]] = {}
    for entry in history:
        if entry.kind == "attempt" and entry.channel is not None:
            sent.setdefault(entry.channel, []).append(entry.at)
    talks = [e.at for e in history if e.kind == "outcome" and e.outcome is OutcomeKind.ANSWERED]
    for contact in result.contacts:
        ref = ContactRef.parse(contact.id)
        assert ref is not None and (ref.account_id, ref.stage) == (account.id, result.stage)
        assert contact.due_at <= now
        assert contact.channel not in state.opted_out
        assert ADDRESS_OF_CHANNEL[contact.channel] not in state.invalid_addresses
        assert allowed_independently(contact.channel, account, sent.get(contact.channel, []), talks, now)
        sent.setdefault(contact.channel, []).append(now)
    sent_now = [HistoryEntry(kind="attempt", at=now, contact_id=c.id, channel=c.channel) for c in result.contacts]
    again = plan(record, [*history, *sent_now], STRATEGY, now)
    assert not {c.id for c in again.contacts} & set(ids), "a contact sent now was planned again"
