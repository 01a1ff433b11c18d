"""Reading the record: an account's archived history and decisions, and per-day counts.

What the API, `dispatcher account show` and the reports call to see past Redis: an account that left
Redis is read from its last closure; one still in Redis has its older closures (if the bank reopened it)
put in front of what Redis holds. History entries trimmed from Redis while the account was live
(history_entries, dispatcher.record.history) go back in their places, newest pass first, into the list
they were trimmed from. The same entry in both places (a move interrupted between the commit and the
delete) is shown once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from psycopg_pool import ConnectionPool

from dispatcher.core.models import AccountRecord, HistoryEntry
from dispatcher.state.store import Loaded, Store

DECISION_TYPES = ("decision", "last_look", "contact")


@dataclass(frozen=True, slots=True)
class Closure:
    """An account as it was when it left Redis."""

    record: AccountRecord
    history: tuple[HistoryEntry, ...]
    claims: dict[str, str]
    closed_at: datetime
    pseudonymised: bool
    archived_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class TrimPass:
    """The entries one trim pass took out of an account's Redis list: (entries kept ahead of it, entry)."""

    at: datetime
    entries: tuple[tuple[int, HistoryEntry], ...]
    claims: dict[str, str]  # the ended claims that left Redis with their attempts


class RecordReader:
    def __init__(self, pool: ConnectionPool):
        self.pool = pool

    def closures(self, account_id: str) -> list[Closure]:
        """The account's closures, oldest first."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT record, history, claims, closed_at, pseudonymised_at IS NOT NULL, archived_at "
                "FROM closed_accounts WHERE account_id = %s ORDER BY closed_at",
                (account_id,),
            ).fetchall()
        return [
            Closure(
                AccountRecord.model_validate(record),
                tuple(HistoryEntry.model_validate(e) for e in history),
                dict(claims),
                closed_at,
                pseudonymised,
                archived_at,
            )  # fmt: skip
            for record, history, claims, closed_at, pseudonymised, archived_at in rows
        ]

    def trim_passes(self, account_id: str) -> list[TrimPass]:
        """The account's trim passes, oldest first."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT trimmed_at, kept_before, entry, claim FROM history_entries WHERE account_id = %s "
                "ORDER BY trimmed_at, position",
                (account_id,),
            ).fetchall()
        passes: dict[datetime, TrimPass] = {}
        for trimmed_at, kept_before, entry, claim in rows:
            found = passes.setdefault(trimmed_at, TrimPass(trimmed_at, (), {}))
            history = HistoryEntry.model_validate(entry)
            passes[trimmed_at] = TrimPass(trimmed_at, (*found.entries, (kept_before, history)), found.claims)
            if claim is not None and history.contact_id:
                found.claims[history.contact_id] = claim
        return list(passes.values())

    def decisions(self, account_id: str, since: datetime | None = None) -> list[dict[str, Any]]:
        """The account's archived compliance decisions, last looks and send statuses, oldest first."""
        query = "SELECT entry FROM audit_entries WHERE account_id = %s AND type = ANY(%s)"
        params: list[object] = [account_id, list(DECISION_TYPES)]
        if since is not None:
            query += " AND at >= %s"
            params.append(since)
        with self.pool.connection() as conn:
            rows = conn.execute(query + " ORDER BY at, stream_ms, stream_seq, position", params).fetchall()
        return [row[0] for row in rows]

    def day_counts(self, day: date) -> dict[tuple[str, str], int]:
        """(type, channel or '') → audit entries on that UTC day: the per-day report's numbers."""
        start = datetime.combine(day, time(0), tzinfo=UTC)
        end = start + timedelta(days=1)
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT type, coalesce(channel, ''), count(*) FROM audit_entries "
                "WHERE at >= %s AND at < %s GROUP BY 1, 2",
                (start, end),
            ).fetchall()
        return {(kind, channel): count for kind, channel, count in rows}


def merged_history(*parts: Sequence[HistoryEntry]) -> tuple[HistoryEntry, ...]:
    """Histories in order, each entry once (the same JSON in two parts is one entry)."""
    seen: set[str] = set()
    merged = []
    for part in parts:
        for entry in part:
            key = entry.model_dump_json()
            if key not in seen:
                seen.add(key)
                merged.append(entry)
    return tuple(merged)


@dataclass(frozen=True, slots=True)
class AccountView:
    """An account read from wherever it is: Redis (live) or the record (closed and moved)."""

    record: AccountRecord
    history: tuple[HistoryEntry, ...]
    claims: Mapping[str, str]  # contact id -> its ClaimStatus
    next_wakeup: datetime | None
    archived: bool


def restored(kept: Sequence[HistoryEntry], passes: Sequence[TrimPass]) -> list[HistoryEntry]:
    """The list before `passes` (oldest first) trimmed it: each pass's entries back in their places."""
    history = list(kept)
    for one in reversed(passes):
        rebuilt: list[HistoryEntry] = []
        pending = list(one.entries)
        for index, entry in enumerate(history):
            while pending and pending[0][0] <= index:
                rebuilt.append(pending.pop(0)[1])
            rebuilt.append(entry)
        history = rebuilt + [entry for _, entry in pending]
    return history


@dataclass(frozen=True, slots=True)
class Whole:
    """An account's closures, its whole history and the ended claims that left Redis with it."""

    closures: list[Closure]
    history: tuple[HistoryEntry, ...]
    claims: dict[str, str]


def whole_history(
    reader: RecordReader | None, account_id: str, live: Sequence[HistoryEntry], last_trim: str | None = None
) -> Whole:
    """The account's closures and its whole history: each closure's and the live list with what trim passes
    took out of them (`last_trim`, the last pass the live list says it had: later rows never applied)."""
    if reader is None:
        return Whole([], tuple(live), {})
    closures = reader.closures(account_id)
    passes = reader.trim_passes(account_id)
    parts: list[Sequence[HistoryEntry]] = []
    claims: dict[str, str] = {}
    since: datetime | None = None
    for closure in closures:
        until = closure.archived_at
        mine = [p for p in passes if (since is None or p.at > since) and (until is None or p.at <= until)]
        parts.append(restored(closure.history, mine))
        claims.update(c for p in mine for c in p.claims.items())
        since = until
    mine = []  # with no pass named in Redis the live list was never trimmed: rows there never applied
    if last_trim is not None:
        limit = datetime.fromisoformat(last_trim)
        mine = [p for p in passes if (since is None or p.at > since) and p.at <= limit]
    parts.append(restored(live, mine))
    claims.update(c for p in mine for c in p.claims.items())
    return Whole(closures, merged_history(*parts), claims)


def read_account(store: Store, reader: RecordReader | None, account_id: str) -> AccountView | None:
    """The account with its whole history, live part from Redis and archived part from PostgreSQL."""
    loaded: Loaded = store.load(account_id)
    last_trim = store.last_trim(account_id) if loaded.record is not None else None
    whole = whole_history(reader, account_id, loaded.history, last_trim)
    closures, history = whole.closures, whole.history
    if loaded.record is not None:
        claims = {**whole.claims, **store.claims(account_id)}
        return AccountView(loaded.record, history, claims, store.next_wakeup(account_id), False)
    if not closures:
        return None
    last = closures[-1]
    return AccountView(last.record, history, {**whole.claims, **last.claims}, None, True)
