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
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

from config.providers import provider_of
from dispatcher.core.clock import ManualClock
from dispatcher.core.events import Event, Outcome, Payment, PromiseToPay
from dispatcher.core.models import Account, AccountRecord, Channel, ClaimStatus, Contact, OutcomeKind, zone
from dispatcher.core.routing import Routes, route_of
from dispatcher.engine import Engine, Result
from dispatcher.state.provider_health import RESTING

PUMP_LIMIT = 2000


class OutcomeModel(BaseModel):
    """Seeded behaviour of providers and debtors; every rate can be overridden from a YAML file."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    outcomes: dict[Channel, dict[OutcomeKind, float]] = Field(
        default_factory=lambda: {  # type: ignore[arg-type]  # validated into enums at load
            "sms": {"delivered": 0.93, "undelivered": 0.05, "invalid_address": 0.02},
            "voice": {
                "answered": 0.25,
                "no_answer": 0.48,
                "busy": 0.1,
                "voicemail": 0.14,
                "wrong_party": 0.02,
                "invalid_address": 0.01,
            },
            "email": {"delivered": 0.9, "bounced": 0.1},
            "letter": {"delivered": 0.92, "returned": 0.08},
            "agency": {"handed_off": 1.0},
            # A follower's template message: delivered, blocked (the debtor refused the account), or failed.
            "wechat": {"delivered": 0.95, "opted_out": 0.02, "undelivered": 0.03},
        },  # fmt: skip
        description="Per channel, the chance of each outcome of a send.",
    )
    pay_after_contact: dict[str, float] = Field(
        default_factory=lambda: {
            "reminder": 0.12,
            "second_notice": 0.07,
            "early": 0.04,
            "continuous": 0.03,
            "letter": 0.05,
        },  # fmt: skip
        description="Chance a delivered or answered contact in this stage is followed by payment in full.",
    )
    promise_after_answer: float = 0.3
    promise_kept: float = 0.6
    response_hours: tuple[float, float] = (1.0, 72.0)


def load_model(path: Path | None) -> OutcomeModel:
    if path is None:
        return OutcomeModel.model_validate({})
    return OutcomeModel.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")) or {})


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

    def cost(self, costs: dict[Channel, Decimal]) -> dict[str, Decimal]:
        by_channel: Counter[str] = Counter()
        for (channel, _), count in self.sends.items():
            by_channel[channel] += count
        return {channel: costs.get(Channel(channel), Decimal(0)) * n for channel, n in sorted(by_channel.items())}


class Simulation:
    def __init__(
        self,
        engine: Engine,
        clock: ManualClock,
        model: OutcomeModel,
        seed: int,
        routes: Routes | None = None,
        weights: Mapping[str, Mapping[str, int]] | None = None,
    ):
        self.engine = engine
        self.clock = clock
        self.model = model
        self.rng = random.Random(seed)
        # DISPATCHER_ROUTES: each contact's provider is drawn from its route by resting weight (every provider
        # healthy), from a draw of its own so the outcomes drawn stay those of a run without routes.
        self.routes, self.weights, self.route_rng = routes or {}, weights or {}, random.Random(seed)
        self.responses: list[tuple[datetime, int, str, Event]] = []
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
        return report

    def _upsert(self, accounts: Sequence[Account], report: Report) -> None:
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
                    kind = self._draw(contact.channel)
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
            chosen[contact.id] = self.route_rng.choices(route, weights)[0] if sum(weights) else route[0]
        return chosen

    def _draw(self, channel: Channel) -> OutcomeKind:
        table = self.model.outcomes.get(channel)
        if not table:  # a registered channel the model has no rates for: accepted, nothing more known
            return OutcomeKind.SENT
        return self.rng.choices(list(table), weights=list(table.values()))[0]

    def _debtor_reacts(self, contact: Contact, kind: OutcomeKind, record: AccountRecord) -> None:
        if kind not in (OutcomeKind.DELIVERED, OutcomeKind.ANSWERED):
            return
        if record.state.status != "active" or record.state.promise is not None:
            return
        owed = record.account.balance - record.state.paid
        now = self.clock.now()
        if kind is OutcomeKind.ANSWERED and self.rng.random() < self.model.promise_after_answer:
            due = now.astimezone(zone(record.account.timezone)).date() + timedelta(days=self.rng.randint(2, 10))
            self._respond(now + timedelta(minutes=5), contact.account_id, PromiseToPay(amount=owed, due=due))
            if self.rng.random() < self.model.promise_kept:
                pay_at = now + timedelta(days=self.rng.uniform(1, (due - now.date()).days + 0.5))
                self._respond(pay_at, contact.account_id, Payment(amount=owed))
        elif self.rng.random() < self.model.pay_after_contact.get(contact.stage, 0.0):
            delay = timedelta(hours=self.rng.uniform(*self.model.response_hours))
            self._respond(now + delay, contact.account_id, Payment(amount=owed))

    def _respond(self, at: datetime, account_id: str, event: Event) -> None:
        self._sequence += 1
        heapq.heappush(self.responses, (at, self._sequence, account_id, event))

    def _next_response(self) -> datetime | None:
        return self.responses[0][0] if self.responses else None

    def _deliver_responses(self, now: datetime, report: Report) -> None:
        while self.responses and self.responses[0][0] <= now:
            _, _, account_id, event = heapq.heappop(self.responses)
            report.events[event.kind] += 1
            self._observe([self.engine.record_event(account_id, event)], report)

    def _observe(self, results: Sequence[Result], report: Report) -> None:
        for result in results:
            plan = result.plan
            if plan is None:
                continue
            if plan.stage is not None:
                if self.stage_of.get(result.account_id) != plan.stage:
                    report.stage_seen[plan.stage] += 1
                self.stage_of[result.account_id] = plan.stage
            self.note_of[result.account_id] = plan.note or "active"
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
