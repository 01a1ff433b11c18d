"""The engine: the imperative shell around the pure planner and event rules.

Every change to an account runs the same loop: load (record, version, history) → apply the change and
whatever time has produced (lapsed promises and holds) → plan → commit atomically against the version
read; a conflict means someone else wrote first, so the loop reads again. The same engine serves the
CLI, the simulator, the API and the workers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from dispatcher.clock import Clock
from dispatcher.compliance import ContactLog, Ruling, evaluate
from dispatcher.events import Event, EventRejected, Outcome, apply_event, lapsed_events
from dispatcher.models import Account, AccountRecord, AccountState, Contact, Decision, HistoryEntry, Plan
from dispatcher.planner import ADHOC_STAGE, FRESH_STATE, fresh_shape, plan, rebased, stage_index_at
from dispatcher.store import CONFLICT, DUPLICATE, Commit, Loaded, Store
from dispatcher.strategy import Strategy

MAX_CONFLICT_RETRIES = 16


class UnknownAccount(LookupError):
    def __init__(self, account_id: str):
        super().__init__(f"account_id: no account {account_id!r}; upsert it first")
        self.account_id = account_id


@dataclass(frozen=True, slots=True)
class Change:
    """What one mutation wants written before the plan: the new record and the facts to append."""

    record: AccountRecord
    entries: list[HistoryEntry] = field(default_factory=list)
    event_id: str | None = None
    phone: str | None = None  # an upsert's number, for the phone index (an inbound STOP finds the account)


@dataclass(frozen=True, slots=True)
class Result:
    account_id: str
    status: str  # "applied" | "unchanged" | "duplicate"
    plan: Plan | None = None
    queued: tuple[Contact, ...] = ()
    created: bool = False
    record: AccountRecord | None = None


@dataclass(frozen=True, slots=True)
class ClaimResult:
    verdict: str  # "send" | "defer" | "deny" | "claimed_elsewhere"
    rule: str | None = None
    until: datetime | None = None
    record: AccountRecord | None = None
    attempt: HistoryEntry | None = None
    history: tuple[HistoryEntry, ...] = ()


Mutator = Callable[[Loaded, datetime], Change | None]


class Engine:
    """`on_queued` receives the contacts an upsert or event queued (the workers send them to Celery); without
    it those accounts wake now, so the pump offers the contacts again within a second."""

    def __init__(
        self,
        store: Store,
        strategy: Strategy,
        clock: Clock,
        on_queued: Callable[[Sequence[Contact]], None] | None = None,
    ):
        self.store = store
        self.strategy = strategy
        self.clock = clock
        self.on_queued = on_queued
        self._created_share = 1.0  # of the last upsert batch: whether the next one may assume new accounts

    # Changes.
    def upsert_many(self, accounts: Sequence[Account]) -> list[Result]:
        by_id = {account.id: account for account in accounts}
        # While most upserts create accounts (an import), skip the read: a commit that assumes the account is
        # new fails as a conflict when it is not, and that account is read and retried like any other.
        assume_new = self._created_share >= 0.5
        results = self._run(
            list(by_id), lambda loaded, now: _upserted(loaded, by_id[loaded.account_id], now), True, assume_new
        )
        if results:
            self._created_share = sum(result.created for result in results) / len(results)
        return self._hand_over(results)

    def upsert(self, account: Account) -> Result:
        return self.upsert_many([account])[0]

    def record_event(self, account_id: str, event: Event) -> Result:
        results = self._run([account_id], lambda loaded, now: self._evented(loaded, [event], now), hand_over=True)
        return self._hand_over(results)[0]

    def record_events(self, events: Sequence[tuple[str, Event]]) -> list[Result]:
        """Several accounts' events in one read and one write; each account's events apply in order.
        Events carrying an event_id go one by one, so a duplicate never hides its neighbours."""
        grouped: dict[str, list[Event]] = {}
        for account_id, event in events:
            grouped.setdefault(account_id, []).append(event)
        batch = [account_id for account_id, group in grouped.items() if all(e.event_id is None for e in group)]
        results = self._run(
            batch, lambda loaded, now: self._evented(loaded, grouped[loaded.account_id], now), hand_over=True
        )
        self._hand_over(results)
        for account_id in grouped.keys() - set(batch):
            results += [self.record_event(account_id, event) for event in grouped[account_id]]
        return results

    def _hand_over(self, results: list[Result]) -> list[Result]:
        """Give what a change queued to on_queued; without one, the commit already woke those accounts now."""
        contacts = [contact for result in results for contact in result.queued]
        if contacts and self.on_queued is not None:
            self.on_queued(contacts)
        return results

    def replan_many(self, account_ids: Sequence[str]) -> list[Result]:
        return self._run(list(account_ids), _replanned)

    def pump(self, limit: int = 500, lease_seconds: int = 120) -> list[Contact]:
        """Lease the accounts whose wake-up is due, re-plan them, and return the contacts newly queued."""
        due = self.store.lease_due(self.clock.now(), lease_seconds, limit)
        return [contact for result in self.replan_many(due) for contact in result.queued]

    # The send path's two ends.
    def claim(self, contact: Contact) -> ClaimResult:
        """Last look on fresh state, then the atomic claim: 'send' means this caller, and only it, sends."""
        return self.claim_many([contact])[0]

    def claim_many(self, contacts: Sequence[Contact]) -> list[ClaimResult]:
        """claim() for a batch: one read and one round of claims per pass; an account's second contact
        waits for the next pass, since the first claim moves the account's version."""
        results: dict[str, ClaimResult] = {}
        pending = list(contacts)
        for _ in range(MAX_CONFLICT_RETRIES):
            if not pending:
                return [results[contact.id] for contact in contacts]
            now = self.clock.now()
            loaded = {one.account_id: one for one in self.store.load_many(sorted({c.account_id for c in pending}))}
            claims: list[tuple[Contact, Loaded, HistoryEntry]] = []
            later: list[Contact] = []
            for contact in pending:
                account = loaded[contact.account_id]
                if any(claimed.account_id == contact.account_id for claimed, _, _ in claims):
                    later.append(contact)
                    continue
                looked = self._look(account, contact, now)
                if isinstance(looked, ClaimResult):
                    results[contact.id] = looked
                else:
                    claims.append((contact, account, looked))
            replies = self.store.claim_many([(c.account_id, c.id, one.version, a) for c, one, a in claims])
            for (contact, account, attempt), reply in zip(claims, replies, strict=True):
                claimed = _claimed(reply, account, attempt)
                if claimed is None:
                    later.append(contact)
                else:
                    results[contact.id] = claimed
            pending = later
        if pending:
            raise RuntimeError(f"contacts {[c.id for c in pending[:5]]}: the accounts kept changing; claim abandoned")
        return [results[contact.id] for contact in contacts]

    def claim_each(self, contacts: Sequence[Contact]) -> Iterator[tuple[Contact, ClaimResult]]:
        """claim() for each contact in turn, lazily, so the caller sends one before claiming the next. The
        accounts are read once for the batch; one that moved since (or was just claimed) is read again."""
        loaded = {one.account_id: one for one in self.store.load_many(sorted({c.account_id for c in contacts}))}
        for contact in contacts:
            account = loaded.pop(contact.account_id, None)
            result = None if account is None else self._claim_on(account, contact, self.clock.now())
            yield contact, self.claim(contact) if result is None else result

    def _claim_on(self, account: Loaded, contact: Contact, now: datetime) -> ClaimResult | None:
        """Last look and claim against the state as read; None when the account moved since."""
        looked = self._look(account, contact, now)
        if isinstance(looked, ClaimResult):
            return looked
        return _claimed(self.store.claim(contact.account_id, contact.id, account.version, looked), account, looked)

    def _look(self, account: Loaded, contact: Contact, now: datetime) -> ClaimResult | HistoryEntry:
        """The last look on the state as read: the attempt to claim with, or why not (its claim given back)."""
        if account.record is None:
            return ClaimResult("deny", "unknown_account")
        ruling = self.last_look(account.record, account.history, contact, now)
        if ruling.verdict != "send":
            return self._not_now(contact, ruling, account.record, now)
        return _attempt(contact, now)

    def _not_now(self, contact: Contact, ruling: Ruling, record: AccountRecord, now: datetime) -> ClaimResult:
        """The last look said no: give the queued claim back so the planner decides again, and say why."""
        self.store.settle(contact.account_id, contact.id, "queued", None)
        self._audit_decision(contact, ruling, now)
        if ruling.until is not None:
            self.store.wake_no_later(contact.account_id, ruling.until)
        return ClaimResult(ruling.verdict, ruling.rule, ruling.until, record)

    def last_look(
        self, record: AccountRecord, history: Sequence[HistoryEntry], contact: Contact, now: datetime
    ) -> Ruling:
        """The planner's own rules again, on the state as it is at the moment of sending."""
        account, state = record.account, record.state
        if state.status == "active" and not state.do_not_contact and not state.holds:
            if state.promise is not None:
                return Ruling("deny", "promise_to_pay")
            index = stage_index_at(account, state, self.strategy, now)
            current = None if index is None else self.strategy.stages[index].name
            if contact.stage != current and contact.stage != ADHOC_STAGE:
                return Ruling("deny", f"stage_changed:{current}")
        log = ContactLog.from_history(history)
        return evaluate(contact.channel, account, state, log, now, self.strategy.compliance)

    def release(self, contact: Contact, attempt: HistoryEntry, reason: str, forget: bool = False) -> bool:
        """A claimed contact definitely did not leave: give the claim back and take its attempt off the caps.

        forget=False leaves it queued for the caller to retry soon; forget=True lets the planner redo it.
        """
        return self.release_many([(contact, attempt)], reason, forget)[0]

    def release_many(
        self, claimed: Sequence[tuple[Contact, HistoryEntry]], reason: str, forget: bool = False
    ) -> list[bool]:
        """release() for several contacts, in one round trip."""
        if not claimed:
            return []
        now = self.clock.now()
        audit = [_contact_audit(contact, now, "not_sent", reason=reason) for contact, _ in claimed]
        releases = [(contact.account_id, contact.id, attempt) for contact, attempt in claimed]
        return self.store.release_many(releases, forget, audit)

    def not_sent(self, contacts: Sequence[Contact], reason: str) -> None:
        """Audit contacts that were never claimed and wait to be tried again (a rate limit)."""
        now = self.clock.now()
        self.store.append_audit_many([_contact_audit(contact, now, "not_sent", reason=reason) for contact in contacts])

    def settle(self, contact: Contact, status: str, detail: dict[str, str] | None = None) -> bool:
        """Record how a claimed send ended: 'sent', 'failed' (refused for good) or 'unknown' (ambiguous)."""
        return self.settle_many([(contact, status, detail or {})])[0]

    def settle_many(self, endings: Sequence[tuple[Contact, str, dict[str, str]]]) -> list[bool]:
        """settle() for several contacts, in one round trip."""
        if not endings:
            return []
        now = self.clock.now()
        moves = [(contact.account_id, contact.id, "sending", status) for contact, status, _ in endings]
        audit = [_contact_audit(contact, now, status, **detail) for contact, status, detail in endings]
        return self.store.settle_many(moves, audit)

    def reconcile_in_doubt(self, before: datetime) -> int:
        """Claims still sending or unknown since `before` (a worker killed mid-call, a timeout after the
        request left) are taken as sent: never resent, and already counted by the caps."""
        settled = 0
        for contact_id in self.store.in_doubt_before(before):
            account_id = contact_id.split("/", 1)[0]
            status = self.store.claim_status(account_id, contact_id)
            if status in ("sending", "unknown") and self.store.settle(account_id, contact_id, status, "sent"):
                entry = {"at": self.clock.now(), "type": "contact", "account_id": account_id,
                         "contact_id": contact_id, "status": "sent", "reason": f"reconciled_{status}"}  # fmt: skip
                self.store.append_audit(account_id, [entry])
                settled += 1
            self.store.forget_in_doubt(account_id, contact_id)
        return settled

    # The loop.
    def _run(
        self, account_ids: list[str], mutate: Mutator, hand_over: bool = False, assume_new: bool = False
    ) -> list[Result]:
        """Load, change, plan and commit each account, again for those another writer got to first.

        hand_over: the change comes from outside the pump (an upsert, an event); with no on_queued to take
        its contacts, the commit wakes the account now so the pump offers them within a second."""
        wake_for_pump = hand_over and self.on_queued is None
        results: dict[str, Result] = {}
        pending = account_ids
        for _ in range(MAX_CONFLICT_RETRIES):
            if not pending:
                break
            now = self.clock.now()
            staged: list[tuple[Commit, Plan]] = []
            shapes: dict[tuple[object, ...], Plan] = {}  # fresh accounts of one shape share a plan (at one `now`)
            if assume_new:
                read, assume_new = [Loaded.assumed_new(account_id) for account_id in pending], False
            else:
                read = self.store.load_many(pending)
            for loaded in read:
                change = mutate(loaded, now)
                if change is None:
                    results[loaded.account_id] = Result(loaded.account_id, "unchanged", record=loaded.record)
                else:
                    staged.append(self._stage(loaded, change, now, shapes, wake_for_pump))
            replies = self.store.commit_many([commit for commit, _ in staged])
            pending = []
            for (commit, account_plan), reply in zip(staged, replies, strict=True):
                account_id = commit.loaded.account_id
                if reply == CONFLICT:
                    pending.append(account_id)
                elif reply == DUPLICATE:
                    results[account_id] = Result(account_id, "duplicate")
                else:
                    queued = tuple(c for c in account_plan.contacts if c.id in set(reply))  # type: ignore[arg-type]
                    created = commit.loaded.record is None
                    results[account_id] = Result(account_id, "applied", account_plan, queued, created, commit.record)
        if pending:
            raise RuntimeError(f"accounts kept changing under the planner: {pending[:5]}")
        return [results[account_id] for account_id in account_ids if account_id in results]

    def _stage(
        self, loaded: Loaded, change: Change, now: datetime, shapes: dict[tuple[object, ...], Plan], wake_now: bool
    ) -> tuple[Commit, Plan]:
        record, entries = change.record, list(change.entries)
        for event in lapsed_events(record, self.strategy, now):
            record = record.model_copy(update={"state": apply_event(record, event, self.strategy, now)})
            entries.append(HistoryEntry(kind="event", at=now, event=event.kind))
        history = (*loaded.history, *entries)
        shape = fresh_shape(record, history)
        if shape is not None and shape in shapes:
            account_plan = rebased(shapes[shape], record.account.id)
        else:
            account_plan = plan(record, history, self.strategy, now)
            if shape is not None:
                shapes[shape] = account_plan
        record = AccountRecord(
            account=record.account, state=record.state, stage=account_plan.stage, next_wakeup=account_plan.next_wakeup
        )
        audit = [_entry_audit(record.account.id, entry) for entry in entries]
        audit += [_decision_audit(record.account.id, d, now) for d in account_plan.decisions]
        wake = now if wake_now and account_plan.contacts else account_plan.next_wakeup
        commit = Commit(
            loaded, record, entries, [c.id for c in account_plan.contacts], wake, audit, change.event_id,
            change.phone,
        )  # fmt: skip
        return commit, account_plan

    def _evented(self, loaded: Loaded, events: Sequence[Event], now: datetime) -> Change:
        if loaded.record is None:
            raise UnknownAccount(loaded.account_id)
        record, history, entries = loaded.record, list(loaded.history), []
        for event in events:
            if isinstance(event, Outcome):
                event = _with_channel(event, history)
                entry = HistoryEntry(
                    kind="outcome", at=now, contact_id=event.contact_id, channel=event.channel,
                    outcome=event.outcome, detail=event.detail,
                )  # fmt: skip
            else:
                fields = event.model_dump(exclude={"kind", "event_id"}, exclude_none=True, mode="json")
                detail = {k: str(v) for k, v in fields.items()}
                entry = HistoryEntry(kind="event", at=now, event=event.kind, detail=detail)
            record = record.model_copy(update={"state": apply_event(record, event, self.strategy, now)})
            history.append(entry)
            entries.append(entry)
        return Change(record, entries, events[0].event_id if len(events) == 1 else None)

    def _audit_decision(self, contact: Contact, ruling: Ruling, now: datetime) -> None:
        decision = Decision(contact.id, contact.channel, ruling.verdict, ruling.rule, ruling.until)  # type: ignore[arg-type]
        self.store.append_audit(contact.account_id, [_decision_audit(contact.account_id, decision, now, "last_look")])


def _claimed(reply: int, account: Loaded, attempt: HistoryEntry) -> ClaimResult | None:
    """What the claim script said: this caller sends (1), another already did (0), or None: look again."""
    if reply == 1:
        return ClaimResult("send", record=account.record, attempt=attempt, history=(*account.history, attempt))
    return ClaimResult("claimed_elsewhere") if reply == 0 else None


def _attempt(contact: Contact, now: datetime) -> HistoryEntry:
    return HistoryEntry(
        kind="attempt", at=now, contact_id=contact.id, channel=contact.channel,
        detail={"template": contact.template, "stage": contact.stage},
    )  # fmt: skip


_RESOLVED_STATE = AccountState(status="resolved")  # frozen: safe to share


def _upserted(loaded: Loaded, account: Account, now: datetime) -> Change | None:
    previous = loaded.record
    if previous is not None and previous.account == account:
        return None
    if previous is None:
        state = _RESOLVED_STATE if account.balance <= Decimal("0") else FRESH_STATE
    elif previous.account.balance == account.balance:
        state = previous.state
    else:
        # The bank's balance is authoritative and already net of what was paid before it.
        before = previous.state
        resolved = account.balance <= Decimal("0")
        status = "resolved" if resolved else ("active" if before.status == "resolved" else before.status)
        state = before.model_copy(update={"paid": Decimal("0"), "status": status})
    kind = "account_created" if previous is None else "account_updated"
    entry = HistoryEntry(kind="event", at=now, event=kind, detail={"balance": str(account.balance)})
    record = AccountRecord(account=account, state=state)
    return Change(record, [entry], phone=account.phone)


def _replanned(loaded: Loaded, now: datetime) -> Change | None:
    return None if loaded.record is None else Change(loaded.record)


def _with_channel(event: Outcome, history: Sequence[HistoryEntry]) -> Outcome:
    if event.channel is not None:
        return event
    for entry in reversed(history):
        if entry.kind == "attempt" and entry.contact_id == event.contact_id:
            return event.model_copy(update={"channel": entry.channel})
    raise EventRejected("contact_id", f"no attempt {event.contact_id!r} on this account")


def _entry_audit(account_id: str, entry: HistoryEntry) -> dict[str, object]:
    audit: dict[str, object] = {"at": entry.at, "type": entry.kind, "account_id": account_id}
    audit.update(entry.model_dump(exclude={"kind", "at"}, exclude_defaults=True, mode="json"))
    return audit


def _contact_audit(contact: Contact, now: datetime, status: str, **detail: str) -> dict[str, object]:
    return {"at": now, "type": "contact", "account_id": contact.account_id, "contact_id": contact.id,
            "channel": contact.channel, "status": status, **detail}  # fmt: skip


def _decision_audit(account_id: str, decision: Decision, now: datetime, kind: str = "decision") -> dict[str, object]:
    return {
        "at": now,
        "type": kind,
        "account_id": account_id,
        "contact_id": decision.contact_id,
        "channel": decision.channel,
        "verdict": decision.verdict,
        "rule": decision.rule,
        "until": decision.until,
    }
