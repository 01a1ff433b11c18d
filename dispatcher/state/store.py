"""The Redis store: accounts, their history and claims, the sharded wake-up schedule and the audit trail.

The keys (an account's, hash-tagged with the account, and its shard's, hash-tagged with the shard, so the
layout holds on a Redis Cluster) are named by dispatcher.state.redis_keys, which says what each holds;
docs/architecture.md tabulates them. The record hash holds v = version, d = the AccountRecord JSON,
r = releases (history entries removed) and t = the last trim pass; the history list is append-only but for
releases and trims; a commit that would start afresh an account whose id is in its shard's moved set gets
MOVED instead.

Writes that must agree go through Lua scripts with an optimistic version check, so a planner holding a
stale view retries instead of overwriting. On a single Redis a commit is atomic across the account's, the
shard's and (for an upsert) the phone index's keys; on a Cluster those slots would be written in turn,
and the wake-up lease covers a crash in between (the phone index is a hint that lookups re-check).
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import redis
from pydantic import TypeAdapter
from pydantic_core import to_json

from dispatcher.core.models import AccountRecord, ClaimStatus, Contact, HistoryEntry
from dispatcher.state.claims import ClaimMove, ClaimStore, queued_member
from dispatcher.state.ranks import RANKS_TTL, StatusRanks
from dispatcher.state.redis_keys import (
    account_id_of,
    account_record_key,
    account_records_pattern,
    audit_key,
    claims_key,
    events_key,
    history_key,
    moved_key,
    phone_key,
    shard_layout,
    shard_of,
    voice_key,
    wake_key,
)
from dispatcher.state.store_scripts import COMMIT, LEASE, RESTORE, TRIM


def _audit_payload(entries: Sequence[dict[str, object]]) -> bytes:
    """One stream entry per write: a JSON array of that write's audit entries (pydantic-core's fast encoder)."""
    return to_json(entries, fallback=str)


def epoch(moment: datetime) -> float:
    return moment.timestamp()


@dataclass(frozen=True, slots=True)
class Loaded:
    """An account as read: its record (None if unknown), the version to commit against, its history."""

    account_id: str
    record: AccountRecord | None
    version: str
    history: tuple[HistoryEntry, ...]

    @classmethod
    def assumed_new(cls, account_id: str) -> Loaded:
        """An account taken to be unknown without reading it; its commit fails as a conflict if it exists."""
        return cls(account_id, None, NEW, ())


@dataclass(frozen=True, slots=True)
class Commit:
    """Everything one re-plan writes for one account, atomically."""

    loaded: Loaded
    record: AccountRecord
    new_history: Sequence[HistoryEntry] = ()
    queue: Sequence[Contact] = ()
    wake: datetime | None = None
    audit: Sequence[dict[str, object]] = ()
    event_id: str | None = None
    phone: str | None = None  # an upsert's phone number, added to the phone index in the same step
    event_lapses: bool = False  # the event id guards repeats for EVENT_WINDOW only (a provider callback's)


# MOVED: the commit would start afresh an account that left Redis for the record (store_scripts.COMMIT).
CONFLICT, DUPLICATE, MOVED = -1, -2, -3
# How long a provider callback's event id makes its repeat a no-op: providers retry within hours, and no
# provider sends a status for a contact this long after the last one (dispatcher.state.ranks.RANKS_TTL). An
# active account gets a few callbacks a day for as long as it is worked; the bank's own events are few
# and their ids stay while the account is in Redis.
EVENT_WINDOW = RANKS_TTL
NEW = "new"  # the version of an account assumed unknown (see store_scripts.COMMIT)


_HISTORY = TypeAdapter(list[HistoryEntry])


class Store:
    """Reads and writes the layout above. `history_cache` > 0 keeps that many accounts' parsed history in
    memory and reads only what was appended since: history only grows, except when a release removes an
    attempt, which bumps `r` and makes the cache read the whole list again. Meant for a process that owns
    its Redis (the simulator), since a flushed-and-refilled Redis would not be noticed."""

    def __init__(
        self, client: redis.Redis, shards: int = 16, history_cache: int = 0, wallclock: Callable[[], float] = time.time,
        broker: redis.Redis | None = None, claim_replicas: int = 0, claim_replica_timeout_ms: int = 200,
    ):  # fmt: skip
        layout = shard_layout()
        if layout is not None and layout != shards:
            raise ValueError(f"the account keys are tagged with {layout} shards, this store has {shards}")
        self.redis = client
        # The broker's Redis (kombu's queues, the dead letters): the state's unless DISPATCHER_BROKER_URL is set.
        self.broker = client if broker is None else broker
        self.shards = shards
        self.wallclock = wallclock
        self.ledger = ClaimStore(client, shards, wallclock, claim_replicas, claim_replica_timeout_ms)
        # With the shard layout the phone index is in another slot than the account's: a step of its own.
        self._phone_apart = layout is not None
        self.ranks = StatusRanks(client)
        self._history_cache: OrderedDict[str, tuple[str, tuple[HistoryEntry, ...]]] = OrderedDict()
        self._history_cache_size = history_cache
        self._commit = client.register_script(COMMIT)
        self._lease = client.register_script(LEASE)
        self._trim = client.register_script(TRIM)
        self._restore = client.register_script(RESTORE)
        self._moved_keys = [moved_key(shard) for shard in range(shards)]

    @classmethod
    def from_url(cls, url: str, shards: int = 16, history_cache: int = 0) -> Store:
        return cls(redis.Redis.from_url(url, decode_responses=True), shards, history_cache)

    def shard_of(self, account_id: str) -> int:  # these three: the key module's, with this store's shard count
        return shard_of(account_id, self.shards)

    def wake_key(self, shard: int) -> str:
        return wake_key(shard)

    def audit_key(self, shard: int) -> str:
        return audit_key(shard)

    # Reading.
    def load_many(self, account_ids: Sequence[str]) -> list[Loaded]:
        pipe = self.redis.pipeline(transaction=False)
        known = [self._history_cache.get(account_id, ("", ())) for account_id in account_ids]
        for account_id, (_, cached) in zip(account_ids, known, strict=True):
            pipe.hmget(account_record_key(account_id), "v", "d", "r")
            pipe.lrange(history_key(account_id), len(cached), -1)
        replies = pipe.execute()
        loaded = []
        for index, account_id in enumerate(account_ids):
            (version, data, releases), appended = replies[2 * index], replies[2 * index + 1]
            record = AccountRecord.model_validate_json(data) if data else None
            cached_releases, cached = known[index]
            if cached and cached_releases != (releases or ""):
                # A release removed an entry since the cache was filled: the cached prefix is stale.
                cached, appended = (), self.redis.lrange(history_key(account_id), 0, -1)
            history = cached + tuple(_HISTORY.validate_json("[" + ",".join(appended) + "]"))
            self._remember(account_id, releases or "", history)
            loaded.append(Loaded(account_id, record, version or "0", history))
        return loaded

    def _remember(self, account_id: str, releases: str, history: tuple[HistoryEntry, ...]) -> None:
        if self._history_cache_size <= 0:
            return
        self._history_cache[account_id] = (releases, history)
        self._history_cache.move_to_end(account_id)
        while len(self._history_cache) > self._history_cache_size:
            self._history_cache.popitem(last=False)

    def load(self, account_id: str) -> Loaded:
        return self.load_many([account_id])[0]

    def claims(self, account_id: str) -> dict[str, ClaimStatus]:
        return self.ledger.of(account_id)

    def claim_status(self, account_id: str, contact_id: str) -> ClaimStatus | None:
        return self.ledger.status(account_id, contact_id)

    def next_wakeup(self, account_id: str) -> datetime | None:
        score = self.redis.zscore(self.wake_key(self.shard_of(account_id)), account_id)
        return None if score is None else datetime.fromtimestamp(score, UTC)

    def audit(self, account_id: str | None = None) -> list[dict[str, object]]:
        """The audit trail, oldest first within a shard; one account's entries when given."""
        shards = [self.shard_of(account_id)] if account_id else range(self.shards)
        entries = []
        for shard in shards:
            for _, fields in self.redis.xrange(self.audit_key(shard)):
                for entry in json.loads(fields["e"]):
                    if account_id is None or entry.get("account_id") == account_id:
                        entries.append(entry)
        return entries

    # Writing.
    def commit_many(self, commits: Sequence[Commit]) -> list[list[str] | int]:
        """Apply each commit; per commit the ids to dispatch (new or still queued), or CONFLICT / DUPLICATE."""
        if not self._phone_apart:
            return self._commit_many(commits)
        # The phone index in its own slot: before the commit (a crash between leaves an entry lookups skip) and
        # after it (a lookup in between may have pruned the entry as stale before the commit landed).
        self._index_phones(commits)
        replies = self._commit_many(commits)
        self._index_phones(commits)
        return replies

    def _commit_many(self, commits: Sequence[Commit]) -> list[list[str] | int]:
        if len(commits) == 1:  # an API event: no pipeline, so no SCRIPT EXISTS round trip before it
            commit = commits[0]
            return [self._reply(self._commit(keys=self._commit_keys(commit), args=self._commit_args(commit)))]
        pipe = self.redis.pipeline(transaction=False)
        # EVALSHA straight onto the pipeline (Script.__call__ costs a few microseconds a call, and a bulk
        # import makes a million); registering the script keeps redis-py's reload after a Redis restart.
        pipe.scripts.add(self._commit)
        sha = self._commit.sha
        for commit in commits:
            keys = self._commit_keys(commit)
            pipe.execute_command("EVALSHA", sha, len(keys), *keys, *self._commit_args(commit))
        return [self._reply(reply) for reply in pipe.execute()]

    def _index_phones(self, commits: Sequence[Commit]) -> None:
        phones = [(commit.phone, commit.loaded.account_id) for commit in commits if commit.phone]
        if phones:
            pipe = self.redis.pipeline(transaction=False)
            for phone, account_id in phones:
                pipe.sadd(phone_key(phone), account_id)
            pipe.execute()

    @staticmethod
    def _reply(reply: list[object]) -> list[str] | int:
        status = int(str(reply[0]))
        return status if status < 0 else [str(contact_id) for contact_id in reply[1:]]

    def _commit_keys(self, commit: Commit) -> list[str]:
        account_id = commit.loaded.account_id
        shard = self.shard_of(account_id)
        return [
            account_record_key(account_id),
            history_key(account_id),
            claims_key(account_id),
            self.wake_key(shard),
            self.audit_key(shard),
            events_key(account_id),
            self.ledger.queued_key(shard),
            self._moved_keys[shard],
            *([phone_key(commit.phone)] if commit.phone and not self._phone_apart else []),
        ]

    def _commit_args(self, commit: Commit) -> list[object]:
        args: list[object] = [
            commit.loaded.version,
            commit.record.model_dump_json(exclude_defaults=True),
            commit.loaded.account_id,
            "" if commit.wake is None else repr(epoch(commit.wake)),
            commit.event_id or "",
            len(commit.new_history),
            repr(self.wallclock()) if commit.queue else "",
        ]
        args += [entry.model_dump_json(exclude_defaults=True) for entry in commit.new_history]
        args.append(len(commit.queue))
        for contact in commit.queue:
            args += [contact.id, queued_member(contact.channel.value, contact.id)]
        args.append(_audit_payload(commit.audit) if commit.audit else "")
        if commit.event_id:
            now = self.wallclock()
            args += [repr(now), repr(now + EVENT_WINDOW) if commit.event_lapses else "inf"]
        return args

    def moved(self, account_ids: Sequence[str]) -> set[str]:
        """Those of the accounts that left Redis for the record and were not restored since."""
        pipe = self.redis.pipeline(transaction=False)
        for account_id in account_ids:
            pipe.sismember(self._moved_keys[self.shard_of(account_id)], account_id)
        return {account_id for account_id, found in zip(account_ids, pipe.execute(), strict=True) if found}

    def restore(
        self,
        account_id: str,
        record: AccountRecord,
        version: int,
        history: Sequence[HistoryEntry],
        claims: dict[str, str],
        event_ids: dict[str, str] | None = None,
    ) -> bool:
        """Put a moved account back as it left (its id leaves the moved set in the same step), with the ids
        of the events it had applied (id -> lapse score); False when it is not moved (any more: another
        process restored it first)."""
        keys = [account_record_key(account_id), history_key(account_id), claims_key(account_id)]
        keys += [self._moved_keys[self.shard_of(account_id)], events_key(account_id)]
        args: list[object] = [account_id, version, record.model_dump_json(exclude_defaults=True), len(history)]
        args += [entry.model_dump_json(exclude_defaults=True) for entry in history]
        args += [len(claims), *(part for pair in claims.items() for part in pair)]
        args += [part for event_id, score in (event_ids or {}).items() for part in (score, event_id)]
        self._history_cache.pop(account_id, None)
        return bool(self._restore(keys=keys, args=args))

    def lease_due(
        self, now: datetime, lease_seconds: int, limit: int, shards: Iterable[int] | None = None
    ) -> list[str]:
        """Take up to `limit` due accounts per shard, hiding each for the lease; a crash loses none."""
        pipe = self.redis.pipeline(transaction=False)
        until = repr(epoch(now) + lease_seconds)
        for shard in range(self.shards) if shards is None else shards:
            self._lease(keys=[self.wake_key(shard)], args=[repr(epoch(now)), until, limit], client=pipe)
        return [member for due in pipe.execute() for member in due]

    def earliest_wakeups(self) -> dict[int, datetime]:
        """Per non-empty shard, its earliest wake-up."""
        pipe = self.redis.pipeline(transaction=False)
        for shard in range(self.shards):
            pipe.zrange(self.wake_key(shard), 0, 0, withscores=True)
        return {shard: datetime.fromtimestamp(items[0][1], UTC) for shard, items in enumerate(pipe.execute()) if items}

    def earliest_wakeup(self) -> datetime | None:
        return min(self.earliest_wakeups().values(), default=None)

    def move_claims(self, moves: Sequence[ClaimMove], audit: Sequence[dict[str, object]] = ()) -> list[bool]:
        """Move each claim (account id, contact id, channel, expected, status) only from its expected status,
        with the moves' audit entries, in one round trip (see dispatcher.state.claims)."""
        pipe = self.redis.pipeline(transaction=False)
        self.ledger.move_many(moves, pipe)
        self._queue_audit(pipe, audit)
        return [bool(reply) for reply in pipe.execute()[: len(moves)]]

    def release_many(
        self,
        releases: Sequence[tuple[str, str, str, HistoryEntry]],
        forget: bool,
        audit: Sequence[dict[str, object]] = (),
    ) -> list[bool]:
        """Give back each (account id, contact id, channel, attempt) that did not send, with audit entries."""
        pipe = self.redis.pipeline(transaction=False)
        self.ledger.release_many(releases, forget, pipe)
        self._queue_audit(pipe, audit)
        return [bool(reply) for reply in pipe.execute()[: len(releases)]]

    def append_audit(self, account_id: str, entries: Iterable[dict[str, object]]) -> None:
        batch = list(entries)
        if batch:
            self.redis.xadd(self.audit_key(self.shard_of(account_id)), {"e": _audit_payload(batch)})

    def append_audit_many(self, entries: Sequence[dict[str, object]]) -> None:
        """Entries of several accounts, each filed under its `account_id`'s shard, in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        self._queue_audit(pipe, entries)
        pipe.execute()

    def _queue_audit(self, pipe: redis.client.Pipeline, entries: Sequence[dict[str, object]]) -> None:
        """One stream entry per shard touched, each entry filed under its `account_id`'s shard."""
        by_shard: dict[int, list[dict[str, object]]] = {}
        for entry in entries:
            by_shard.setdefault(self.shard_of(str(entry["account_id"])), []).append(entry)
        for shard, batch in by_shard.items():
            pipe.xadd(self.audit_key(shard), {"e": _audit_payload(batch)})

    def stash_voice_scripts(self, account_id: str, contact_id: str, scripts: dict[str, str], ttl: int) -> None:
        """A call's TwiML scripts, for the API to hand to Twilio when the call connects (workers write them)."""
        key = voice_key(account_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(key, contact_id, json.dumps(scripts, ensure_ascii=False))
        pipe.expire(key, ttl)
        pipe.execute()

    def voice_scripts(self, account_id: str, contact_id: str) -> dict[str, str] | None:
        stored = self.redis.hget(voice_key(account_id), contact_id)
        return None if stored is None else dict(json.loads(stored))

    def account_ids(self) -> Iterable[str]:
        for key in self.redis.scan_iter(match=account_records_pattern(), count=1000):
            yield account_id_of(key)

    def wake_no_later(self, account_id: str, moment: datetime) -> None:
        """Bring the account's wake-up forward to `moment` if it is later (or absent)."""
        key = self.wake_key(self.shard_of(account_id))
        self.redis.zadd(key, {account_id: epoch(moment)}, lt=True)
        self.redis.zadd(key, {account_id: epoch(moment)}, nx=True)

    def trim_history(
        self,
        account_id: str,
        version: str,
        drop: Sequence[int],
        trim_pass: str,
        claims: Sequence[str] = (),
        record: AccountRecord | None = None,
    ) -> bool:
        """Take the entries at `drop` out of the account's history, and the `claims` (contact ids) out of its
        claims, and write `record` (the marks of the attempts dropped) as its next version, if it is still
        at `version`."""
        keys = [account_record_key(account_id), history_key(account_id), claims_key(account_id)]
        data = "" if record is None else record.model_dump_json(exclude_defaults=True)
        return bool(self._trim(keys=keys, args=[version, trim_pass, data, len(drop), *drop, *claims]))

    def last_trim(self, account_id: str) -> str | None:
        """The last trim pass applied to the account's history (see store_scripts.TRIM), if any."""
        found = self.redis.hget(account_record_key(account_id), "t")
        return None if found is None else str(found)
