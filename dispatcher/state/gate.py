"""The send gate: the last look at compliance on fresh state, the atomic claim, and every way out of a claim.

    last look ─▶ claim ─▶ (the caller sends) ─▶ end: sent | failed | unknown
         │                                   └▶ release: back to queued, or forgotten for the planner
         └▶ not now: the queued claim is given back, the decision audited, the account woken at `until`

A contact id passes the gate once: the claim script refuses a second caller, and every path out of a
claim ends or releases it (dispatcher.state.claims draws the states).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from config.providers import provider_of
from dispatcher.core.arrangements.terms import ARRANGEMENT_STAGE, active_arrangement
from dispatcher.core.audit import contact_audit, decision_audit
from dispatcher.core.clock import Clock
from dispatcher.core.compliance import ContactLog, Ruling, evaluate
from dispatcher.core.experiments.arms import VariantSet
from dispatcher.core.models import AccountRecord, ClaimStatus, Contact, Decision, HistoryEntry, Verdict
from dispatcher.core.planner import NOT_PAST_DUE
from dispatcher.core.stages import ADHOC_STAGE, stage_index_at
from dispatcher.core.strategy import Strategy
from dispatcher.state.claims import ClaimMove, Stranded
from dispatcher.state.metrics import LAST_LOOK
from dispatcher.state.store import Loaded, Store, epoch

MAX_CLAIM_PASSES = 16


@dataclass(frozen=True, slots=True)
class ClaimResult:
    verdict: Verdict | Literal["claimed_elsewhere"]
    rule: str | None = None
    until: datetime | None = None
    record: AccountRecord | None = None
    attempt: HistoryEntry | None = None
    history: tuple[HistoryEntry, ...] = ()


class SendGate:
    """`variants`: the last look reads the rules of the account's own variant (its stages and compliance
    policy); without it, `strategy`'s for every account."""

    def __init__(self, store: Store, strategy: Strategy, clock: Clock, variants: VariantSet | None = None):
        self.store = store
        self.strategy = strategy
        self.clock = clock
        self.variants = variants

    def claim(self, contact: Contact, provider: str | None = None) -> ClaimResult:
        """Last look on fresh state, then the atomic claim: 'send' means this caller, and only it, sends
        (through `provider`, which its attempt names: by default the channel's own)."""
        return self.claim_many([contact], None if provider is None else {contact.id: provider})[0]

    def claim_many(self, contacts: Sequence[Contact], providers: Mapping[str, str] | None = None) -> list[ClaimResult]:
        """claim() for a batch: one read and one round of claims per pass; an account's second contact
        waits for the next pass, since the first claim moves the account's version. `providers`: contact id
        -> the provider chosen for it, where not the channel's own."""
        chosen = providers or {}
        results: dict[str, ClaimResult] = {}
        pending = list(contacts)
        for _ in range(MAX_CLAIM_PASSES):
            if not pending:
                return [results[contact.id] for contact in contacts]
            now = self.clock.now()
            loaded = {one.account_id: one for one in self.store.load_many(sorted({c.account_id for c in pending}))}
            claims: list[tuple[Contact, Loaded, HistoryEntry]] = []
            later: list[Contact] = []
            for contact in pending:
                if any(claimed.account_id == contact.account_id for claimed, _, _ in claims):
                    later.append(contact)
                    continue
                looked = self.look(loaded[contact.account_id], contact, now, chosen.get(contact.id))
                if isinstance(looked, ClaimResult):
                    results[contact.id] = looked
                else:
                    claims.append((contact, loaded[contact.account_id], looked))
            calls = [(c.account_id, c.id, c.channel.value, one.version, a) for c, one, a in claims]
            for (contact, account, attempt), reply in zip(claims, self.store.ledger.claim_many(calls), strict=True):
                claimed = _claimed(reply, account, attempt)
                if claimed is None:
                    later.append(contact)
                else:
                    results[contact.id] = claimed
            pending = later
        if pending:
            raise RuntimeError(f"contacts {[c.id for c in pending[:5]]}: the accounts kept changing; claim abandoned")
        return [results[contact.id] for contact in contacts]

    def look(
        self, account: Loaded, contact: Contact, now: datetime, provider: str | None = None
    ) -> ClaimResult | HistoryEntry:
        """The last look on the state as read: the attempt to claim with (naming `provider`, by default the
        channel's own), or why not (its claim given back)."""
        if account.record is None:
            return ClaimResult("deny", "unknown_account")
        ruling = self.last_look(account.record, account.history, contact, now)
        if ruling.verdict != "send":
            return self._not_now(contact, ruling, account.record, now)
        return _attempt(contact, now, provider)

    def claim_looked(self, account: Loaded, contact: Contact, attempt: HistoryEntry) -> ClaimResult | None:
        """The atomic claim after a last look that said send, against the version it read: None when the
        account moved since (look again: `claim` reads it afresh)."""
        reply = self.store.ledger.claim(contact.account_id, contact.id, contact.channel.value, account.version, attempt)
        return _claimed(reply, account, attempt)

    def _not_now(self, contact: Contact, ruling: Ruling, record: AccountRecord, now: datetime) -> ClaimResult:
        """The last look said no: give the queued claim back so the planner decides again, and say why."""
        self.store.ledger.move(contact.account_id, contact.id, contact.channel.value, ClaimStatus.QUEUED, None)
        decision = Decision(contact.id, contact.channel, ruling.verdict, ruling.rule, ruling.until)
        self.store.append_audit(contact.account_id, [decision_audit(contact.account_id, decision, now, "last_look")])
        LAST_LOOK.labels(contact.channel.value, ruling.verdict, ruling.rule or "").inc()
        if ruling.until is not None:
            self.store.wake_no_later(contact.account_id, ruling.until)
        return ClaimResult(ruling.verdict, ruling.rule, ruling.until, record)

    def last_look(
        self, record: AccountRecord, history: Sequence[HistoryEntry], contact: Contact, now: datetime
    ) -> Ruling:
        """The planner's own rules again, on the state as it is at the moment of sending."""
        account, state = record.account, record.state
        strategy = self.strategy if self.variants is None else self.variants.arm_of(record, account.id).strategy
        if state.status == "active" and not state.do_not_contact and not state.holds:
            kept = active_arrangement(state.arrangements)
            if contact.stage == ARRANGEMENT_STAGE and (kept is None or contact.step != kept.id):
                return Ruling("deny", "arrangement_ended")
            if kept is not None and contact.stage not in (ARRANGEMENT_STAGE, ADHOC_STAGE):
                return Ruling("deny", "arrangement")  # dunning waits while a plan is kept
            if contact.stage != ARRANGEMENT_STAGE:  # a reminder of the plan being kept: the policy decides
                if state.promise is not None:
                    return Ruling("deny", "promise_to_pay")
                index = stage_index_at(account, state, strategy, now)
                current = None if index is None else strategy.stages[index].name
                if contact.stage != current and contact.stage != ADHOC_STAGE:
                    return Ruling("deny", f"stage_changed:{current}")
                if index is None:  # an ad-hoc contact queued before a new due date put the account back
                    return Ruling("deny", NOT_PAST_DUE)
        policy = strategy.compliance
        lapses = contact.due_at + timedelta(hours=policy.pressure.adhoc_max_deferral_hours)
        if contact.stage == ADHOC_STAGE and now >= lapses:
            return Ruling("deny", "adhoc_lapsed")
        # Its own attempt (a redelivery after the claim) is not a reason to wait: the claim answers that.
        others = [e for e in history if e.kind != "attempt" or e.contact_id != contact.id]
        log = ContactLog.from_history(others, policy.pressure)
        return evaluate(contact.channel, account, state, log, now, policy, contact.due_at, contact.template)

    # The ways out of a claim.
    def end_claim(self, contact: Contact, status: ClaimStatus, detail: dict[str, str] | None = None) -> bool:
        """Record how a claimed send ended: 'sent', 'failed' (refused for good) or 'unknown' (ambiguous)."""
        return self.end_claims([(contact, status, detail or {})])[0]

    def end_claims(
        self, endings: Sequence[tuple[Contact, ClaimStatus, dict[str, str]]], providers: Mapping[str, str] | None = None
    ) -> list[bool]:
        """end_claim() for several contacts, in one round trip; `providers`: contact id -> the provider its
        attempt went to, where not the channel's own (the audit names it)."""
        if not endings:
            return []
        now = self.clock.now()
        moves: list[ClaimMove] = [
            (c.account_id, c.id, c.channel.value, ClaimStatus.SENDING, status) for c, status, _ in endings
        ]
        went = providers or {}
        audit = [
            contact_audit(contact, now, status, **_named(went.get(contact.id)), **detail)
            for contact, status, detail in endings
        ]
        return self.store.move_claims(moves, audit)

    def release(self, contact: Contact, attempt: HistoryEntry, reason: str | None, forget: bool = False) -> bool:
        """A claimed contact definitely did not leave: give the claim back and take its attempt off the caps.

        forget=False leaves it queued for the caller to re-queue; forget=True lets the planner redo it.
        reason=None audits nothing: the contact's wait is already on record."""
        return self.release_many([(contact, attempt)], reason, forget)[0]

    def release_many(
        self, claimed: Sequence[tuple[Contact, HistoryEntry]], reason: str | None, forget: bool = False
    ) -> list[bool]:
        """release() for several contacts, in one round trip."""
        if not claimed:
            return []
        now = self.clock.now()
        audit = [
            contact_audit(c, now, "not_sent", reason=reason, **_named(attempt.detail.get("provider")))
            for c, attempt in claimed
            if reason is not None
        ]
        releases = [(contact.account_id, contact.id, contact.channel.value, attempt) for contact, attempt in claimed]
        return self.store.release_many(releases, forget, audit)

    def waiting(self, contacts: Sequence[Contact], reason: str) -> None:
        """Audit contacts that start waiting unclaimed (a rate limit): once per wait, not per re-check."""
        now = self.clock.now()
        self.store.append_audit_many([contact_audit(contact, now, "not_sent", reason=reason) for contact in contacts])

    def requeued(self, contacts: Sequence[Contact]) -> None:
        """The contacts went back on the broker: the stranded sweep counts their wait from now."""
        self.store.ledger.dispatched([(c.account_id, c.id, c.channel.value) for c in contacts])

    def park(self, contacts: Sequence[Contact], moment: datetime, audited: Sequence[Contact] = ()) -> list[bool]:
        """Queued contacts that must wait unclaimed longer than the broker should hold them (an open circuit):
        their queued claims are forgotten and their accounts wake by `moment`, for the planner to queue them
        again; whether each was still queued (a contact another task claimed meanwhile is left alone).
        `audited`: those of them that start waiting now, audited as `not_sent` / `provider_unhealthy`."""
        store = self.store
        if audited:
            now = self.clock.now()
            store.append_audit_many([contact_audit(c, now, "not_sent", reason="provider_unhealthy") for c in audited])
        offers = [
            (Stranded(c.account_id, c.id, c.channel.value, 0.0), store.wake_key(store.shard_of(c.account_id)))
            for c in contacts
        ]
        return store.ledger.offer_again_many(offers, epoch(moment))

    def wake_now(self, account_ids: Sequence[str]) -> None:
        """The planner looks at these accounts at once (what an open circuit held is free to go)."""
        store, moment = self.store, epoch(self.clock.now())
        pipe = store.redis.pipeline(transaction=False)
        for account_id in account_ids:  # Store.wake_no_later's two steps, for every account in one round trip
            pipe.zadd(store.wake_key(store.shard_of(account_id)), {account_id: moment}, lt=True)
            pipe.zadd(store.wake_key(store.shard_of(account_id)), {account_id: moment}, nx=True)
        pipe.execute()

    def wake_no_later(self, account_id: str, moment: datetime) -> None:
        """A contact that must wait longer than the broker should hold it: the planner looks again by `moment`."""
        self.store.wake_no_later(account_id, moment)

    def stash_voice_scripts(self, account_id: str, contact_id: str, scripts: dict[str, str], ttl: int) -> None:
        """A call's TwiML scripts, kept before the call for the API to hand to Twilio when it connects."""
        self.store.stash_voice_scripts(account_id, contact_id, scripts, ttl)


def _claimed(reply: int, account: Loaded, attempt: HistoryEntry) -> ClaimResult | None:
    """What the claim script said: this caller sends (1), another already did (0), or None: look again."""
    if reply == 1:
        return ClaimResult("send", record=account.record, attempt=attempt, history=(*account.history, attempt))
    return ClaimResult("claimed_elsewhere") if reply == 0 else None


def _attempt(contact: Contact, now: datetime, provider: str | None = None) -> HistoryEntry:
    """The attempt the claim writes down, naming the provider it goes to (its end, the reconciler, the callbacks,
    the timeline and the audit read it there). Entries written before providers were named carry none."""
    went = provider or provider_of(contact.channel)
    return HistoryEntry(
        kind="attempt", at=now, contact_id=contact.id, channel=contact.channel,
        detail={"template": contact.template, "stage": contact.stage, "provider": went},
    )  # fmt: skip


def _named(provider: object) -> dict[str, str]:
    """The audit's `provider` field when the provider is known here (else the channel's own is named)."""
    return {} if provider is None else {"provider": str(provider)}
