"""The engine: the imperative shell around the pure planner and event rules.

Every change to an account runs the same loop: load (record, version, history) → apply the change and
whatever time has produced (lapsed promises and holds) → plan → commit atomically against the version
read; a conflict means someone else wrote first, so the loop reads again. The same engine serves the
CLI, the simulator, the API and the workers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from config.errors import ConfigurationError, NotFound
from dispatcher.core.arrangements.events import ended_entries, with_terms
from dispatcher.core.audit import decision_audit, entry_audit, variant_audit
from dispatcher.core.clock import Clock
from dispatcher.core.events import Event, EventRejected, Outcome, apply_event, event_detail, lapsed_events
from dispatcher.core.experiments.arms import Arm, VariantSet
from dispatcher.core.models import Account, AccountRecord, AccountState, Contact, HistoryEntry, Plan
from dispatcher.core.planner import FRESH_STATE, plan_shared
from dispatcher.core.strategy import Strategy
from dispatcher.core.webhook_events import lifecycle_audit
from dispatcher.state.active_set import ActiveSet
from dispatcher.state.gate import SendGate
from dispatcher.state.metrics import observe_commits
from dispatcher.state.store import CONFLICT, DUPLICATE, MOVED, Commit, Loaded, Store

MAX_CONFLICT_RETRIES = 16


class UnknownAccount(NotFound, LookupError):
    """No account has this id; upsert it first."""

    def __init__(self, account_id: str):
        super().__init__(f"account_id: no account {account_id!r}; upsert it first")
        self.account_id = account_id
        self.field = "account_id"


class RecordRequired(ConfigurationError, RuntimeError):
    """An account named again left Redis for the record, and this process has no record to reopen it from."""

    def __init__(self, account_ids: Sequence[str]):
        super().__init__(
            f"accounts {list(account_ids)[:5]} were moved to the record (PostgreSQL) and this process has none to "
            "reopen them from: set DISPATCHER_DATABASE_URL (refusing to start them afresh)"
        )
        self.account_ids = list(account_ids)


class Restorer(Protocol):
    """Puts accounts that left Redis for the record back as they left (dispatcher.record.closed)."""

    def __call__(self, account_ids: Sequence[str]) -> None: ...


@dataclass(frozen=True, slots=True)
class Change:
    """What one mutation wants written before the plan: the new record and the facts to append."""

    record: AccountRecord
    entries: list[HistoryEntry] = field(default_factory=list)
    event_id: str | None = None
    phone: str | None = None  # an upsert's number, for the phone index (an inbound STOP finds the account)
    event_lapses: bool = False  # a provider's outcome: its id guards repeats for the store's EVENT_WINDOW


@dataclass(frozen=True, slots=True)
class Result:
    account_id: str
    status: str  # "applied" | "unchanged" | "duplicate"
    plan: Plan | None = None
    queued: tuple[Contact, ...] = ()
    created: bool = False
    record: AccountRecord | None = None


Mutator = Callable[[Loaded, datetime], Change | None]


class Engine:
    """`on_queued` receives the contacts an upsert or event queued (the workers send them to Celery); without
    it those accounts wake now, so the pump offers the contacts again within a second. `restorer` reopens
    an account the archiver moved to the record when a change names it again; without one such a change
    raises RecordRequired, as an account must never start afresh under an id it had.

    `variants`: the strategies accounts are planned by (dispatcher.core.experiments.arms); without it, the one
    `strategy` as the champion. `active`: the active set in Redis this process must agree with before it
    plans (dispatcher.state.active_set); the wiring gives every process one."""

    def __init__(
        self,
        store: Store,
        strategy: Strategy,
        clock: Clock,
        on_queued: Callable[[Sequence[Contact]], None] | None = None,
        restorer: Restorer | None = None,
        variants: VariantSet | None = None,
        active: ActiveSet | None = None,
    ):
        self.store = store
        self.variants = variants or VariantSet.single(strategy)
        self.strategy = self.variants.champion.strategy  # what is not planned per account reads the champion's
        self.clock = clock
        self.on_queued = on_queued
        self.restorer = restorer
        self.active = active
        self.gate = SendGate(store, self.strategy, clock, self.variants)
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
        batch = [account_id for account_id, group in grouped.items() if all(e.dedup_key is None for e in group)]
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

    # The loop.
    def _run(
        self, account_ids: list[str], mutate: Mutator, hand_over: bool = False, assume_new: bool = False
    ) -> list[Result]:
        """Load, change, plan and commit each account, again for those another writer got to first.

        hand_over: the change comes from outside the pump (an upsert, an event); with no on_queued to take
        its contacts, the commit wakes the account now so the pump offers them within a second."""
        wake_for_pump = hand_over and self.on_queued is None
        if self.active is not None:
            self.active.check()  # VariantSetMismatch: never plan with a set the others do not have
        results: dict[str, Result] = {}
        pending = account_ids
        for _ in range(MAX_CONFLICT_RETRIES):
            if not pending:
                break
            now = self.clock.now()
            staged: list[tuple[Commit, Plan]] = []
            # Fresh accounts of one shape share a plan (at one `now`) within a group of arms that plan alike.
            shapes: dict[str, dict[tuple[object, ...], Plan]] = {}
            if assume_new:
                read, assume_new = [Loaded.assumed_new(account_id) for account_id in pending], False
            else:
                read = self.store.load_many(pending)
            moved: list[str] = []
            for loaded in read:
                try:
                    change = mutate(loaded, now)
                except UnknownAccount:  # an event's account may have moved to the record (rare: one look each)
                    if not self.store.moved([loaded.account_id]):
                        raise
                    moved.append(loaded.account_id)
                    continue
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
                elif reply == MOVED:
                    moved.append(account_id)
                elif reply == DUPLICATE:  # the reply still carries the account's state
                    results[account_id] = Result(account_id, "duplicate", record=commit.loaded.record)
                else:
                    queued = tuple(c for c in account_plan.contacts if c.id in set(reply))  # type: ignore[arg-type]
                    created = commit.loaded.record is None
                    results[account_id] = Result(account_id, "applied", account_plan, queued, created, commit.record)
            # Decisions, wake-up lag (a re-plan is the pump's) and account counts: one call per batch.
            written = [pair for pair, reply in zip(staged, replies, strict=True) if isinstance(reply, list)]
            observe_commits(self.store, written, now, due=mutate is _replanned)
            if moved:  # back into Redis as they left; the next round applies the change to them
                self._reopen(moved)
                pending += moved
        if pending:
            raise RuntimeError(f"accounts kept changing under the planner: {pending[:5]}")
        return [results[account_id] for account_id in account_ids if account_id in results]

    def load(self, account_id: str) -> Loaded:
        """The account as it stands, reopened from the record first if the archiver moved it there; a reader
        that decides on it (an ad-hoc request) must not take a moved account for an unknown one."""
        loaded = self.store.load(account_id)
        if loaded.record is None and self.store.moved([account_id]):
            self._reopen([account_id])
            loaded = self.store.load(account_id)
        return loaded

    def preview(self, loaded: Loaded, event: Event, now: datetime) -> Plan:
        """The plan recording `event` on the account as read would make, nothing written: what an ad-hoc
        request is judged by before it is recorded (dispatcher.adhoc), so the answer is the plan's own."""
        return self._stage(loaded, self._evented(loaded, [event], now), now, {}, wake_now=False)[1]

    def arm_of(self, loaded: Loaded) -> Arm:
        """The variant this account is planned by (a new account's by assignment)."""
        return self.variants.arm_of(loaded.record, loaded.account_id)

    def _reopen(self, account_ids: list[str]) -> None:
        if self.restorer is None:
            raise RecordRequired(account_ids)
        self.restorer(account_ids)

    def _stage(
        self,
        loaded: Loaded,
        change: Change,
        now: datetime,
        shapes: dict[str, dict[tuple[object, ...], Plan]],
        wake_now: bool,
    ) -> tuple[Commit, Plan]:
        record, entries = change.record, list(change.entries)
        arm, audit = self.arm_of(loaded), []
        if record.strategy_sha256 != arm.sha256 or record.variant != arm.name:  # its first plan, or a change
            audit.append(variant_audit(record, arm, now))
        strategy = arm.strategy
        for event in lapsed_events(record, strategy, now, (*loaded.history, *entries)):
            record = record.model_copy(update={"state": apply_event(record, event, strategy, now)})
            entries.append(HistoryEntry(kind="event", at=now, event=event.kind, detail=event_detail(event)))
        history = (*loaded.history, *entries)
        group = self.variants.plan_group(arm, record, now)
        account_plan = plan_shared(shapes.setdefault(group, {}), record, history, strategy, now)
        record = AccountRecord(
            account=record.account, state=record.state, stage=account_plan.stage, next_wakeup=account_plan.next_wakeup,
            trimmed=record.trimmed, variant=arm.name, strategy_sha256=arm.sha256,
        )  # fmt: skip
        audit += [entry_audit(record.account.id, entry) for entry in entries]
        # Stage, status and holds are not history entries: compared here, so the feed and the callbacks see them.
        audit += lifecycle_audit(record.account.id, loaded.record, record, now)
        audit += [decision_audit(record.account.id, d, now) for d in account_plan.decisions]
        wake = now if wake_now and account_plan.contacts else account_plan.next_wakeup
        commit = Commit(
            loaded, record, entries, account_plan.contacts, wake, audit, change.event_id,
            change.phone, change.event_lapses,
        )  # fmt: skip
        return commit, account_plan

    def _evented(self, loaded: Loaded, events: Sequence[Event], now: datetime) -> Change:
        if loaded.record is None:
            raise UnknownAccount(loaded.account_id)
        record, history, entries = loaded.record, list(loaded.history), []
        strategy = self.arm_of(loaded).strategy
        for event in events:
            if isinstance(event, Outcome):
                event = _with_channel(event, history)
                entry = HistoryEntry(
                    kind="outcome", at=now, contact_id=event.contact_id, channel=event.channel,
                    outcome=event.outcome, detail=event.detail,
                )  # fmt: skip
            else:
                entry = HistoryEntry(kind="event", at=now, event=event.kind, detail=event_detail(event))
            before = record.state
            record = record.model_copy(update={"state": apply_event(record, event, strategy, now)})
            entry = with_terms(entry, before, record.state)  # an arrangement made: its instalments as agreed
            ended = ended_entries(before, record.state, now)  # a plan kept or paid off: its own entry
            history += [entry, *ended]
            entries += [entry, *ended]
        if len(events) != 1:
            return Change(record, entries)
        return Change(record, entries, events[0].dedup_key, event_lapses=isinstance(events[0], Outcome))


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
    # What left the history stays attempted: a new due date may bring its stage back (record.lookback).
    if previous is None:
        record = AccountRecord(account=account, state=state)
    else:  # the account keeps its variant through the bank's updates
        record = AccountRecord(account=account, state=state, trimmed=previous.trimmed, variant=previous.variant,
                               strategy_sha256=previous.strategy_sha256)  # fmt: skip
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
