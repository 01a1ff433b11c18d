"""`dispatcher simulate`: the real planner, compliance policy and store on a manual clock.

Time jumps from one due moment to the next (the earliest wake-up or the next debtor response), so 120
days of a ladder take minutes, not months. Sends are simulated by a seeded outcome model; everything
else is the production code path: pump → last look and claim → end the claim → outcome event → re-plan.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

from config.providers import provider_of
from dispatcher.core.arrangements.events import ArrangementMade
from dispatcher.core.arrangements.terms import Instalment
from dispatcher.core.clock import ManualClock
from dispatcher.core.events import (
    AgentDisposition,
    Dispute,
    Event,
    EventRejected,
    OptOut,
    Outcome,
    Payment,
    PromiseToPay,
)
from dispatcher.core.models import Account, AccountRecord, Channel, ClaimStatus, Contact, OutcomeKind, zone
from dispatcher.core.routing import Routes, route_of
from dispatcher.debtor_model import Action, DebtorModel, DebtorParameters, stream
from dispatcher.engine import Engine, Result
from dispatcher.state.provider_health import RESTING

PUMP_LIMIT = 2000


class OutcomeModel(BaseModel):
    """Seeded behaviour of the providers; every rate can be overridden from a YAML file (`--model`). What the
    debtors do — answer a call, pay, promise, agree a plan, dispute, reply STOP — is the debtor model's
    (config/debtors.yaml, `--debtors`)."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    outcomes: dict[Channel, dict[OutcomeKind, float]] = Field(
        default_factory=lambda: {  # type: ignore[arg-type]  # validated into enums at load
            "sms": {"delivered": 0.93, "undelivered": 0.05, "invalid_address": 0.02},
            # The calls the network ends before they ring; the rest ring, and the debtor decides.
            "voice": {"invalid_address": 0.01},
            "email": {"delivered": 0.9, "bounced": 0.1},
            "letter": {"delivered": 0.92, "returned": 0.08},
            "agency": {"handed_off": 1.0},
            # A follower's template message: delivered, blocked (the debtor refused the account), or failed.
            "wechat": {"delivered": 0.95, "opted_out": 0.02, "undelivered": 0.03},
        },  # fmt: skip
        description="Per channel, the chance of each outcome of a send; for voice, of each ending before "
        "the call rings (at most 1 in all; the debtor model decides how the other calls end).",
    )


def load_model(path: Path | None) -> OutcomeModel:
    if path is None:
        return OutcomeModel.model_validate({})
    return OutcomeModel.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")) or {})


@dataclass
class Plans:
    """Instalment plans the debtors agreed: made, and at the end kept (every instalment due so far paid) or
    broken (one unpaid). Counted from what the debtors did: until the engine records arrangements, a plan
    reaches it as a promise to pay its first instalment and its instalments as payments."""

    made: int = 0
    dues: dict[str, tuple[date, ...]] = field(default_factory=dict)
    paid: Counter[str] = field(default_factory=Counter)
    collected: Decimal = Decimal(0)

    def kept_and_broken(self, today: date) -> tuple[int, int]:
        broken = sum(1 for account, dues in self.dues.items() if self.paid[account] < sum(d <= today for d in dues))
        return len(self.dues) - broken, broken


@dataclass
class Report:
    accounts: int
    days: int
    funnel: list[tuple[int, Counter[str]]] = field(default_factory=list)
    sends: Counter[tuple[str, str]] = field(default_factory=Counter)
    deferrals: Counter[str] = field(default_factory=Counter)
    denials: Counter[str] = field(default_factory=Counter)
    events: Counter[str] = field(default_factory=Counter)
    resolved: int = 0
    stage_seen: Counter[str] = field(default_factory=Counter)
    resolved_in: Counter[str] = field(default_factory=Counter)  # stage the account was in when paid off
    collected_in: dict[str, Decimal] = field(default_factory=dict)  # payments by the stage they came in
    collected_by_currency: dict[str, Decimal] = field(default_factory=dict)
    plans: Plans = field(default_factory=Plans)
    plans_kept: int = 0
    plans_broken: int = 0

    def cost(self, costs: dict[Channel, Decimal]) -> dict[str, Decimal]:
        by_channel: Counter[str] = Counter()
        for (channel, _), count in self.sends.items():
            by_channel[channel] += count
        return {channel: costs.get(Channel(channel), Decimal(0)) * n for channel, n in sorted(by_channel.items())}


# What a debtor has to have got from a channel to react to it: a call only when answered.
REACHED = {OutcomeKind.DELIVERED, OutcomeKind.ANSWERED, OutcomeKind.SENT}


def _still_owed(record: AccountRecord, action: Action) -> bool:
    """Whether the debtor's action still applies: nothing once paid off; once handed off to the agency, only
    a plan's instalments (the debtor keeps paying what they agreed; the agency's own collection is not
    simulated)."""
    status = record.state.status
    return status == "active" or (status == "handed_off" and action.kind == "pay" and action.offer is not None)


class Simulation:
    def __init__(
        self,
        engine: Engine,
        clock: ManualClock,
        model: OutcomeModel,
        seed: int,
        routes: Routes | None = None,
        weights: Mapping[str, Mapping[str, int]] | None = None,
        debtors: DebtorParameters | None = None,
    ):
        self.engine = engine
        self.clock = clock
        self.model = model
        self.seed = seed
        # DISPATCHER_ROUTES: each contact's provider is drawn from its route by resting weight (every provider
        # healthy). Every draw that two strategies could consume differently is the account's own, from a stream
        # per (seed, account id, purpose): the same debtor meets the same providers and outcomes however many
        # contacts the other accounts got (common random numbers, `simulate --compare`).
        self.routes, self.weights = routes or {}, weights or {}
        self.debtors = DebtorModel(debtors or DebtorParameters(), seed)
        self.accounts: dict[str, Account] = {}
        self.streams: dict[tuple[str, str], random.Random] = {}  # (account id, purpose): "provider", "route"
        self.responses: list[tuple[datetime, int, str, Action]] = []
        self.stage_of: dict[str, str] = {}
        self.note_of: dict[str, str] = {}
        self._sequence = 0

    def run(
        self,
        accounts: Sequence[Account],
        days: int,
        tick: Callable[[float], None] | None = None,
        arrivals: Sequence[tuple[datetime, Sequence[Account]]] = (),
    ) -> Report:
        """`accounts` come in at the start, each of `arrivals` (moment, accounts) when the clock reaches it: a
        book whose accounts fall due on different days keeps a steady number active."""
        pending = sorted(arrivals, key=lambda arrival: arrival[0], reverse=True)
        report = Report(len(accounts) + sum(len(batch) for _, batch in arrivals), days)
        start = self.clock.now()
        end = start + timedelta(days=days)
        self._upsert(accounts, report)
        next_week = start
        while True:
            now = self.clock.now()
            while pending and pending[-1][0] <= now:
                self._upsert(pending.pop()[1], report)
            if now >= next_week:
                report.funnel.append(((now - start).days // 7, self._funnel()))
                next_week += timedelta(days=7)
            self._deliver_responses(now, report)
            self._pump(report)
            wakeup = self.engine.store.earliest_wakeup()
            arrival = pending[-1][0] if pending else None
            upcoming = [t for t in (wakeup, self._next_response(), next_week, arrival) if t]
            following = min(upcoming)
            if following > end:
                break
            if tick is not None:
                tick(min(1.0, (following - start) / (end - start)))
            self.clock.set(max(following, now))
        if report.funnel[-1][0] != (end - start).days // 7:
            report.funnel.append(((end - start).days // 7, self._funnel()))
        report.resolved = sum(1 for note in self.note_of.values() if note == "resolved")
        report.plans_kept, report.plans_broken = report.plans.kept_and_broken(self.clock.now().date())
        return report

    def _upsert(self, accounts: Sequence[Account], report: Report) -> None:
        self.accounts.update((account.id, account) for account in accounts)
        for index in range(0, len(accounts), 1000):
            self._observe(self.engine.upsert_many(accounts[index : index + 1000]), report)

    def _pump(self, report: Report) -> None:
        store, now = self.engine.store, self.clock.now()
        while True:
            shards = [shard for shard, at in store.earliest_wakeups().items() if at <= now]
            due = store.lease_due(now, 300, PUMP_LIMIT, shards) if shards else []
            if not due:
                return
            results = self.engine.replan_many(due)
            self._observe(results, report)
            self._send_all([contact for result in results for contact in result.queued], report)

    def _send_all(self, contacts: list[Contact], report: Report) -> None:
        """Claim, 'send' and record outcomes a batch at a time."""
        while contacts:
            sent: list[tuple[Contact, OutcomeKind]] = []
            chosen = self._providers(contacts)
            for contact, claim in zip(contacts, self.engine.gate.claim_many(contacts, chosen), strict=True):
                if claim.verdict == "defer":
                    report.deferrals[(claim.rule or "?").split(":")[0]] += 1
                if claim.verdict == "send":
                    kind = self._outcome(contact)
                    self.engine.gate.end_claims([(contact, ClaimStatus.SENT, {})], chosen)
                    report.sends[(contact.channel.value, kind.value)] += 1
                    sent.append((contact, kind))
            events = [(c.account_id, Outcome(contact_id=c.id, outcome=k, channel=c.channel)) for c, k in sent]
            results = self.engine.record_events(events)
            self._observe(results, report)
            records = {result.account_id: result.record for result in results}
            for contact, kind in sent:
                record = records.get(contact.account_id)
                if record is not None:
                    self._debtor_reacts(contact, kind, record)
            contacts = []  # what the outcomes queued (fallbacks) woke its account: the pump offers it next

    def _providers(self, contacts: Sequence[Contact]) -> dict[str, str]:
        """The provider of each contact whose channel has routes: one of its route, by resting weight."""
        chosen: dict[str, str] = {}
        for contact in contacts:
            if contact.channel.value not in self.routes:
                continue
            record = self.engine.store.load(contact.account_id).record
            account = None if record is None else record.account
            route = route_of(self.routes, contact.channel, account, provider_of(contact.channel))
            rest = self.weights.get(contact.channel.value, {})
            weights = [rest.get(provider, RESTING) for provider in route]
            draw = self._stream(contact.account_id, "route")
            chosen[contact.id] = draw.choices(route, weights)[0] if sum(weights) else route[0]
        return chosen

    def _stream(self, account_id: str, purpose: str) -> random.Random:
        """The account's own stream for one purpose, made at its first draw."""
        rng = self.streams.get((account_id, purpose))
        if rng is None:
            rng = self.streams[account_id, purpose] = stream(self.seed, account_id, purpose)
        return rng

    def _outcome(self, contact: Contact) -> OutcomeKind:
        """The provider's side first; a call that rings ends as the debtor decides at their local hour."""
        rng = self._stream(contact.account_id, "provider")
        if contact.channel is not Channel.VOICE:
            return self._draw(contact.channel, rng)
        draw = rng.random()
        for kind, chance in self.model.outcomes.get(Channel.VOICE, {}).items():
            if draw < chance:
                return kind
            draw -= chance
        account = self.accounts.get(contact.account_id)
        hour = self.clock.now().astimezone(zone(account.timezone if account else "UTC")).hour
        return OutcomeKind(self.debtors.debtor(contact.account_id).call(hour))

    def _draw(self, channel: Channel, rng: random.Random) -> OutcomeKind:
        table = self.model.outcomes.get(channel)
        if not table:  # a registered channel the model has no rates for: accepted, nothing more known
            return OutcomeKind.SENT
        return rng.choices(list(table), weights=list(table.values()))[0]

    def _debtor_reacts(self, contact: Contact, kind: OutcomeKind, record: AccountRecord) -> None:
        if kind not in REACHED or record.state.status != "active":
            return
        account, now = record.account, self.clock.now()
        today = now.astimezone(zone(account.timezone)).date()
        owed = account.balance - record.state.paid
        debtor = self.debtors.debtor(contact.account_id)
        conversation = kind is OutcomeKind.ANSWERED
        for action in debtor.react(contact.channel, contact.stage, today, owed, account.minimum_payment, conversation):
            self._respond(now + action.after, contact.account_id, action)

    def _respond(self, at: datetime, account_id: str, action: Action) -> None:
        self._sequence += 1
        heapq.heappush(self.responses, (at, self._sequence, account_id, action))

    def _next_response(self) -> datetime | None:
        return self.responses[0][0] if self.responses else None

    def _deliver_responses(self, now: datetime, report: Report) -> None:
        while self.responses and self.responses[0][0] <= now:
            _, _, account_id, action = heapq.heappop(self.responses)
            record = self.engine.load(account_id).record
            if record is None or not _still_owed(record, action):
                continue
            event = self._event_of(action, record, report)
            if event is None:
                continue
            try:
                results = [self.engine.record_event(account_id, event)]
            except EventRejected as exc:
                report.events[f"{event.kind} refused ({exc.field})"] += 1
                continue
            report.events[event.kind] += 1
            if isinstance(event, Payment):
                stage = self.stage_of.get(account_id, "not yet due")
                report.collected_in[stage] = report.collected_in.get(stage, Decimal(0)) + event.amount
                currency = record.account.currency
                report.collected_by_currency[currency] = report.collected_by_currency.get(currency, 0) + event.amount
                if action.offer is not None:
                    report.plans.paid[account_id] += 1
                    report.plans.collected += event.amount
            self._observe(results, report)

    def _event_of(self, action: Action, record: AccountRecord, report: Report) -> Event | None:
        """The event the engine has for what the debtor did."""
        owed = record.account.balance - record.state.paid
        if action.kind == "pay":
            amount = min(action.amount or owed, owed)
            return Payment(amount=amount) if amount > 0 else None
        if action.kind == "promise" and action.due is not None:
            return PromiseToPay(amount=min(action.amount or owed, owed), due=action.due)
        if action.kind == "plan" and action.instalments:
            report.plans.made += 1
            report.plans.dues[record.account.id] = tuple(i.due for i in action.instalments)
            # The agreed plan as the bank's API records it; its instalments then come as payments.
            instalments = tuple(Instalment(due=i.due, amount=i.amount) for i in action.instalments)
            return ArrangementMade(
                arrangement_id=f"sim-{record.account.id}", instalments=instalments, currency=record.account.currency
            )
        if action.kind == "dispute":
            return Dispute(reason="the debtor disputes the debt")
        if action.kind == "stop":
            return OptOut(channel=Channel.SMS)  # the STOP reply's effect, as the inbound webhook records it
        if action.kind == "wrong_party":
            return AgentDisposition(disposition="wrong_number")
        return None

    def _observe(self, results: Sequence[Result], report: Report) -> None:
        for result in results:
            plan = result.plan
            if plan is None:
                continue
            note = plan.note or "active"
            if note == "resolved" and self.note_of.get(result.account_id) != "resolved":
                report.resolved_in[self.stage_of.get(result.account_id, "not yet due")] += 1
            if plan.stage is not None:
                if self.stage_of.get(result.account_id) != plan.stage:
                    report.stage_seen[plan.stage] += 1
                self.stage_of[result.account_id] = plan.stage
            self.note_of[result.account_id] = note
            for decision in plan.decisions:
                if decision.verdict == "defer":
                    report.deferrals[(decision.rule or "?").split(":")[0]] += 1
                elif decision.verdict == "deny":
                    report.denials[(decision.rule or "?").split(":")[0]] += 1

    def _funnel(self) -> Counter[str]:
        funnel: Counter[str] = Counter()
        for account_id, stage in self.stage_of.items():
            note = self.note_of.get(account_id, "active")
            funnel[note if note in ("resolved", "handed_off") else stage] += 1
        return funnel
