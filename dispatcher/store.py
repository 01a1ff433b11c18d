"""The Redis store: accounts, their history and claims, the sharded wake-up schedule and the audit trail.

Key layout (each account's keys share the hash tag `{a:ID}`, each shard's `{s:N}`, so the layout holds
on a Redis Cluster):

    {a:ID}:acct      hash  v = version, d = AccountRecord JSON, r = releases (history entries removed)
    {a:ID}:hist      list  HistoryEntry JSON, append-only
    {a:ID}:claims    hash  contact id -> queued | sending | sent | failed | unknown
    {a:ID}:events    set   event ids already applied (a repeat is ignored)
    {p:PHONE}:accounts set  account ids with that phone number (the inbound STOP index; written by upserts)
    {a:ID}:voice     hash  contact id -> its call's TwiML scripts (human, machine); expires after a day
    {s:N}:wake       zset  account id -> next wake-up (epoch seconds)
    {s:N}:audit      stream  one entry per write, field e = JSON array of its events and decisions

Writes that must agree go through Lua scripts with an optimistic version check, so a planner holding a
stale view retries instead of overwriting. On a single Redis a commit is atomic across the account's, the
shard's and (for an upsert) the phone index's keys; on a Cluster those slots would be written in turn,
and the wake-up lease covers a crash in between (the phone index is a hint that lookups re-check).
"""

from __future__ import annotations

import json
import zlib
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import redis
from pydantic import TypeAdapter
from pydantic_core import to_json

from dispatcher.models import AccountRecord, HistoryEntry

CLAIM_QUEUED, CLAIM_SENDING, CLAIM_SENT, CLAIM_UNKNOWN = "queued", "sending", "sent", "unknown"

# ARGV[1] is the version read, or 'new': the writer did not read and assumes the account has no record and
# no history yet (a bulk import's first try); anything else there is a conflict, and it reads after all.
_COMMIT = """
local version = redis.call('HGET', KEYS[1], 'v') or '0'
local expected = ARGV[1]
if expected == 'new' then
  if version ~= '0' or redis.call('EXISTS', KEYS[2]) == 1 then return {-1} end
  expected = '0'
end
if version ~= expected then return {-1} end
if ARGV[5] ~= '' and redis.call('SADD', KEYS[6], ARGV[5]) == 0 then return {-2} end
local next_version = tonumber(version) + 1
redis.call('HSET', KEYS[1], 'v', next_version, 'd', ARGV[2])
local i = 7
local count = tonumber(ARGV[6])
for _ = 1, count do redis.call('RPUSH', KEYS[2], ARGV[i]); i = i + 1 end
local result = {next_version}
count = tonumber(ARGV[i]); i = i + 1
for _ = 1, count do
  -- new ids, and ids still queued (planned before but not yet claimed: their dispatch may have been lost)
  if redis.call('HSETNX', KEYS[3], ARGV[i], 'queued') == 1 or redis.call('HGET', KEYS[3], ARGV[i]) == 'queued' then
    table.insert(result, ARGV[i])
  end
  i = i + 1
end
if ARGV[i] ~= '' then redis.call('XADD', KEYS[5], '*', 'e', ARGV[i]) end
if ARGV[4] == '' then redis.call('ZREM', KEYS[4], ARGV[3]) else redis.call('ZADD', KEYS[4], ARGV[4], ARGV[3]) end
if KEYS[7] then redis.call('SADD', KEYS[7], ARGV[3]) end
return result
"""

_LEASE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, member in ipairs(due) do redis.call('ZADD', KEYS[1], ARGV[2], member) end
return due
"""

# queued (or never queued) -> sending, only while the account is at the version the last look saw;
# the attempt is written in the same step so the caps count it from this moment on.
_CLAIM = """
if (redis.call('HGET', KEYS[1], 'v') or '0') ~= ARGV[2] then return -1 end
local status = redis.call('HGET', KEYS[2], ARGV[1])
if status and status ~= 'queued' then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], 'sending')
redis.call('HINCRBY', KEYS[1], 'v', 1)
redis.call('RPUSH', KEYS[3], ARGV[3])
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[1])
return 1
"""

_SETTLE = """
local status = redis.call('HGET', KEYS[1], ARGV[1])
if status ~= ARGV[2] then return 0 end
if ARGV[3] == '' then redis.call('HDEL', KEYS[1], ARGV[1]) else redis.call('HSET', KEYS[1], ARGV[1], ARGV[3]) end
if ARGV[3] ~= 'sending' and ARGV[3] ~= 'unknown' then redis.call('ZREM', KEYS[2], ARGV[1]) end
return 1
"""


# A definite non-send (a rate limit, a refused connection) gives the claim back and takes its attempt out
# of the history, so neither the claim nor the caps remember a contact that never left.
_RELEASE = """
if redis.call('HGET', KEYS[2], ARGV[1]) ~= 'sending' then return 0 end
if ARGV[3] == '1' then redis.call('HDEL', KEYS[2], ARGV[1]) else redis.call('HSET', KEYS[2], ARGV[1], 'queued') end
redis.call('LREM', KEYS[3], -1, ARGV[2])
redis.call('HINCRBY', KEYS[1], 'v', 1)
redis.call('HINCRBY', KEYS[1], 'r', 1)
redis.call('ZREM', KEYS[4], ARGV[1])
return 1
"""


def _audit_payload(entries: Sequence[dict[str, object]]) -> bytes:
    """One stream entry per write: a JSON array of that write's audit entries (pydantic-core's fast encoder)."""
    return to_json(entries, fallback=str)


def account_key(account_id: str, part: str) -> str:
    return f"{{a:{account_id}}}:{part}"


def phone_key(phone: str) -> str:
    """The accounts of one phone number (see dispatcher.phone_index)."""
    return f"{{p:{phone}}}:accounts"


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
    queue: Sequence[str] = ()
    wake: datetime | None = None
    audit: Sequence[dict[str, object]] = ()
    event_id: str | None = None
    phone: str | None = None  # an upsert's phone number, added to the phone index in the same step


CONFLICT, DUPLICATE = -1, -2
NEW = "new"  # the version of an account assumed unknown (see _COMMIT)


_HISTORY = TypeAdapter(list[HistoryEntry])


class Store:
    """Reads and writes the layout above. `history_cache` > 0 keeps that many accounts' parsed history in
    memory and reads only what was appended since: history only grows, except when a release removes an
    attempt, which bumps `r` and makes the cache read the whole list again. Meant for a process that owns
    its Redis (the simulator), since a flushed-and-refilled Redis would not be noticed."""

    def __init__(self, client: redis.Redis, shards: int = 16, history_cache: int = 0):
        self.redis = client
        self.shards = shards
        self._history_cache: OrderedDict[str, tuple[str, tuple[HistoryEntry, ...]]] = OrderedDict()
        self._history_cache_size = history_cache
        self._commit = client.register_script(_COMMIT)
        self._lease = client.register_script(_LEASE)
        self._claim = client.register_script(_CLAIM)
        self._settle = client.register_script(_SETTLE)
        self._release = client.register_script(_RELEASE)

    @classmethod
    def from_url(cls, url: str, shards: int = 16, history_cache: int = 0) -> Store:
        return cls(redis.Redis.from_url(url, decode_responses=True), shards, history_cache)

    def shard_of(self, account_id: str) -> int:
        return zlib.crc32(account_id.encode()) % self.shards

    def wake_key(self, shard: int) -> str:
        return f"{{s:{shard}}}:wake"

    def audit_key(self, shard: int) -> str:
        return f"{{s:{shard}}}:audit"

    # Reading.
    def load_many(self, account_ids: Sequence[str]) -> list[Loaded]:
        pipe = self.redis.pipeline(transaction=False)
        known = [self._history_cache.get(account_id, ("", ())) for account_id in account_ids]
        for account_id, (_, cached) in zip(account_ids, known, strict=True):
            pipe.hmget(account_key(account_id, "acct"), "v", "d", "r")
            pipe.lrange(account_key(account_id, "hist"), len(cached), -1)
        replies = pipe.execute()
        loaded = []
        for index, account_id in enumerate(account_ids):
            (version, data, releases), appended = replies[2 * index], replies[2 * index + 1]
            record = AccountRecord.model_validate_json(data) if data else None
            cached_releases, cached = known[index]
            if cached and cached_releases != (releases or ""):
                # A release removed an entry since the cache was filled: the cached prefix is stale.
                cached, appended = (), self.redis.lrange(account_key(account_id, "hist"), 0, -1)
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

    def claims(self, account_id: str) -> dict[str, str]:
        return dict(self.redis.hgetall(account_key(account_id, "claims")))

    def claim_status(self, account_id: str, contact_id: str) -> str | None:
        return self.redis.hget(account_key(account_id, "claims"), contact_id)

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

    @staticmethod
    def _reply(reply: list[object]) -> list[str] | int:
        status = int(str(reply[0]))
        return status if status < 0 else [str(contact_id) for contact_id in reply[1:]]

    def _commit_keys(self, commit: Commit) -> list[str]:
        account_id = commit.loaded.account_id
        shard = self.shard_of(account_id)
        return [
            account_key(account_id, "acct"),
            account_key(account_id, "hist"),
            account_key(account_id, "claims"),
            self.wake_key(shard),
            self.audit_key(shard),
            account_key(account_id, "events"),
            *([phone_key(commit.phone)] if commit.phone else []),
        ]

    @staticmethod
    def _commit_args(commit: Commit) -> list[object]:
        args: list[object] = [
            commit.loaded.version,
            commit.record.model_dump_json(exclude_defaults=True),
            commit.loaded.account_id,
            "" if commit.wake is None else repr(epoch(commit.wake)),
            commit.event_id or "",
            len(commit.new_history),
        ]
        args += [entry.model_dump_json(exclude_defaults=True) for entry in commit.new_history]
        args += [len(commit.queue), *commit.queue, _audit_payload(commit.audit) if commit.audit else ""]
        return args

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

    def claim(self, account_id: str, contact_id: str, version: str, attempt: HistoryEntry) -> int:
        """1: this caller may send; 0: already claimed by someone; CONFLICT: state moved, look again.

        Called directly rather than through a pipeline: redis-py asks SCRIPT EXISTS before every pipeline
        that holds a script, a second round trip on the send path's hottest call."""
        return int(self._claim(*self._claim_call(account_id, contact_id, version, attempt)))

    def claim_many(self, claims: Sequence[tuple[str, str, str, HistoryEntry]]) -> list[int]:
        """claim() for each (account id, contact id, version read, attempt), in one round trip."""
        if not claims:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for claim in claims:
            keys, args = self._claim_call(*claim)
            self._claim(keys=keys, args=args, client=pipe)
        return [int(reply) for reply in pipe.execute()]

    def _claim_call(
        self, account_id: str, contact_id: str, version: str, attempt: HistoryEntry
    ) -> tuple[list[str], list[object]]:
        keys = [*self._claim_keys(account_id), self.inflight_key(self.shard_of(account_id))]
        args: list[object] = [
            contact_id, version, attempt.model_dump_json(exclude_defaults=True), repr(epoch(attempt.at)),
        ]  # fmt: skip
        return keys, args

    def settle(self, account_id: str, contact_id: str, expected: str, status: str | None) -> bool:
        """Move a claim from `expected` to `status` (None forgets it so a later plan may queue it again)."""
        return bool(self._settle(*self._settle_call(account_id, contact_id, expected, status)))

    def settle_many(
        self, moves: Sequence[tuple[str, str, str, str | None]], audit: Sequence[dict[str, object]] = ()
    ) -> list[bool]:
        """settle() for each (account id, contact id, expected, status), with their audit entries, in one
        round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for move in moves:
            keys, args = self._settle_call(*move)
            self._settle(keys=keys, args=args, client=pipe)
        self._queue_audit(pipe, audit)
        return [bool(reply) for reply in pipe.execute()[: len(moves)]]

    def release(self, account_id: str, contact_id: str, attempt: HistoryEntry, forget: bool) -> bool:
        """Undo a claim that did not send: back to queued (forget=False) or gone, for the planner to redo."""
        return bool(self._release(*self._release_call(account_id, contact_id, attempt, forget)))

    def release_many(
        self, releases: Sequence[tuple[str, str, HistoryEntry]], forget: bool, audit: Sequence[dict[str, object]] = ()
    ) -> list[bool]:
        """release() for each (account id, contact id, attempt), with their audit entries, in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for account_id, contact_id, attempt in releases:
            keys, args = self._release_call(account_id, contact_id, attempt, forget)
            self._release(keys=keys, args=args, client=pipe)
        self._queue_audit(pipe, audit)
        return [bool(reply) for reply in pipe.execute()[: len(releases)]]

    # Single calls go straight to the script, as claim() does: a pipeline would add SCRIPT EXISTS first.
    def _settle_call(
        self, account_id: str, contact_id: str, expected: str, status: str | None
    ) -> tuple[list[str], list[object]]:
        keys = [account_key(account_id, "claims"), self.inflight_key(self.shard_of(account_id))]
        return keys, [contact_id, expected, status or ""]

    def _release_call(
        self, account_id: str, contact_id: str, attempt: HistoryEntry, forget: bool
    ) -> tuple[list[str], list[object]]:
        keys = [*self._claim_keys(account_id), self.inflight_key(self.shard_of(account_id))]
        return keys, [contact_id, attempt.model_dump_json(exclude_defaults=True), "1" if forget else "0"]

    @staticmethod
    def _claim_keys(account_id: str) -> list[str]:
        return [account_key(account_id, "acct"), account_key(account_id, "claims"), account_key(account_id, "hist")]

    def inflight_key(self, shard: int) -> str:
        """Claims in doubt (sending or unknown) by the time they were claimed: what housekeeping settles."""
        return f"{{s:{shard}}}:inflight"

    def in_doubt_before(self, moment: datetime, limit: int = 1000) -> list[str]:
        found: list[str] = []
        for shard in range(self.shards):
            found += self.redis.zrangebyscore(self.inflight_key(shard), "-inf", epoch(moment), start=0, num=limit)
        return found

    def forget_in_doubt(self, account_id: str, contact_id: str) -> None:
        self.redis.zrem(self.inflight_key(self.shard_of(account_id)), contact_id)

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
        key = account_key(account_id, "voice")
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(key, contact_id, json.dumps(scripts, ensure_ascii=False))
        pipe.expire(key, ttl)
        pipe.execute()

    def voice_scripts(self, account_id: str, contact_id: str) -> dict[str, str] | None:
        stored = self.redis.hget(account_key(account_id, "voice"), contact_id)
        return None if stored is None else dict(json.loads(stored))

    def account_ids(self) -> Iterable[str]:
        for key in self.redis.scan_iter(match="{a:*}:acct", count=1000):
            yield key[3 : -len("}:acct")]

    def wake_no_later(self, account_id: str, moment: datetime) -> None:
        """Bring the account's wake-up forward to `moment` if it is later (or absent)."""
        key = self.wake_key(self.shard_of(account_id))
        self.redis.zadd(key, {account_id: epoch(moment)}, lt=True)
        self.redis.zadd(key, {account_id: epoch(moment)}, nx=True)

    def forget_wakeup(self, account_id: str) -> None:
        self.redis.zrem(self.wake_key(self.shard_of(account_id)), account_id)
