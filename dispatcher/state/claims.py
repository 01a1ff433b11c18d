"""The claim ledger: one small state machine per contact id, and the two indexes that keep it honest.

    (none) ──planned──▶ queued ──claim──▶ sending ──▶ sent | failed        (evidence: the provider accepted
                          ▲                  │                               or refused it)
                          └────release───────┤ (a definite non-send: 429, refused connection, provider
                                             │  says it has no such request)
                                             └──▶ unknown   (ambiguous: the request may have left; only the
                                                             provider's word turns it into sent or released)

Its keys (dispatcher.state.redis_keys): the claims hash of each account, and per shard three indexes: queued
contacts by the wall-clock time of their last dispatch (the stranded sweep finds a queued contact whose
message was lost: a killed pump, an acked failure), claims in doubt by the time of their claim (the
reconciler asks the provider about them once no task can still be sending them), and claims found
unanswerable (in doubt for good: a provider that cannot be asked, e.g. SMTP; counted against the caps,
never called sent). A forgotten claim leaves a let-go mark on its account for a day.

The indexes hold wall-clock times (not the domain clock, which the demo accelerates): they measure how long
a message has really been waiting or a request could really still be in flight.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import redis
import structlog

from dispatcher.core.models import ClaimStatus, HistoryEntry, account_of
from dispatcher.state.redis_keys import (
    account_record_key,
    claims_key,
    history_key,
    inflight_key,
    let_go_key,
    queued_key,
    shard_of,
    unverified_key,
)
from dispatcher.state.topology.cluster import client_is_cluster

log = structlog.get_logger("dispatcher.state.claims")

# A move between statuses: (account id, contact id, channel, expected status, new status or None to forget).
ClaimMove = tuple[str, str, str, ClaimStatus, ClaimStatus | None]

# queued (or never queued) -> sending, only while the account is at the version the last look saw; the
# attempt is written in the same step so the caps count it from this moment on.
_CLAIM = """
if (redis.call('HGET', KEYS[1], 'v') or '0') ~= ARGV[2] then return -1 end
local status = redis.call('HGET', KEYS[2], ARGV[1])
if status and status ~= 'queued' then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], 'sending')
redis.call('HINCRBY', KEYS[1], 'v', 1)
redis.call('RPUSH', KEYS[3], ARGV[3])
redis.call('ZADD', KEYS[4], ARGV[4], ARGV[1])
redis.call('ZREM', KEYS[5], ARGV[5])
return 1
"""

# expected -> status ('' forgets the claim); a claim that leaves doubt leaves the in-doubt indexes.
_MOVE = """
local status = redis.call('HGET', KEYS[1], ARGV[1])
if status ~= ARGV[2] then return 0 end
if ARGV[3] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('HSET', KEYS[5], ARGV[1], ARGV[5])
  redis.call('EXPIRE', KEYS[5], ARGV[6])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
end
if ARGV[3] ~= 'sending' and ARGV[3] ~= 'unknown' then
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[4], ARGV[1])
end
if ARGV[2] == 'queued' then redis.call('ZREM', KEYS[3], ARGV[4]) end
return 1
"""

# A definite non-send gives the claim back and takes its attempt out of the history, so neither the claim
# nor the caps remember a contact that never left. Back to queued (its message is re-queued by the caller)
# or forgotten, for the planner to decide again.
_RELEASE = """
local status = redis.call('HGET', KEYS[2], ARGV[1])
if status ~= 'sending' and status ~= 'unknown' then return 0 end
if ARGV[3] == '1' then
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('HSET', KEYS[7], ARGV[1], ARGV[5])
  redis.call('EXPIRE', KEYS[7], ARGV[6])
else
  redis.call('HSET', KEYS[2], ARGV[1], 'queued')
  redis.call('ZADD', KEYS[5], ARGV[5], ARGV[4])
end
redis.call('LREM', KEYS[3], -1, ARGV[2])
redis.call('HINCRBY', KEYS[1], 'v', 1)
redis.call('HINCRBY', KEYS[1], 'r', 1)
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[6], ARGV[1])
return 1
"""

# A stranded queued contact: forget its claim and wake its account now, so the planner queues it again
# (or not, if it is no longer due). Whatever old message may still turn up finds the claim gate.
_OFFER_AGAIN = """
redis.call('ZREM', KEYS[2], ARGV[2])
if redis.call('HGET', KEYS[1], ARGV[1]) ~= 'queued' then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[4], ARGV[1], ARGV[5])
redis.call('EXPIRE', KEYS[4], ARGV[6])
redis.call('ZADD', KEYS[3], 'LT', ARGV[4], ARGV[3])
redis.call('ZADD', KEYS[3], 'NX', ARGV[4], ARGV[3])
return 1
"""


# Contacts whose claim was forgotten lately (redis_keys.let_go_key: contact id -> wall time): a send task that
# turns up for one afterwards is a stale duplicate of its dispatch, skipped quietly; one for a contact never
# claimed is not. How long a forgotten claim is remembered: longer than any send task waits on its queue.
LET_GO_TTL = 86_400


def queued_member(channel: str, contact_id: str) -> str:
    return f"{channel} {contact_id}"


@dataclass(frozen=True, slots=True)
class Stranded:
    """A queued contact whose last dispatch is older than the sweep's bound."""

    account_id: str
    contact_id: str
    channel: str
    dispatched_at: float


@dataclass(frozen=True, slots=True)
class InDoubt:
    account_id: str
    contact_id: str
    claimed_at: float  # wall clock


class ClaimStore:
    """Reads and moves claims; every move keeps the indexes above in step, in the same script."""

    def __init__(
        self,
        client: redis.Redis,
        shards: int,
        wallclock: Callable[[], float] = time.time,
        replicas: int = 0,
        replica_timeout_ms: int = 200,
    ):
        self.redis = client
        self.shards = shards
        self.wallclock = wallclock
        # Replicas that must hold a claim before the caller may send (WAIT): replication is asynchronous, so a
        # claim acknowledged by a primary that then dies could vanish with it and the contact be sent again.
        self.replicas = replicas
        self.replica_timeout_ms = replica_timeout_ms
        self.unreplicated = 0  # claims whose replicas did not answer in time (sent anyway; logged)
        self._claim = client.register_script(_CLAIM)
        self._move = client.register_script(_MOVE)
        self._release = client.register_script(_RELEASE)
        self._offer_again = client.register_script(_OFFER_AGAIN)

    def shard_of(self, account_id: str) -> int:
        return shard_of(account_id, self.shards)

    def queued_key(self, shard: int) -> str:
        return queued_key(shard)

    def inflight_key(self, shard: int) -> str:
        return inflight_key(shard)

    def unverified_key(self, shard: int) -> str:
        return unverified_key(shard)

    # Reading.
    def of(self, account_id: str) -> dict[str, ClaimStatus]:
        return {
            contact_id: ClaimStatus(status) for contact_id, status in self.redis.hgetall(claims_key(account_id)).items()
        }

    def status(self, account_id: str, contact_id: str) -> ClaimStatus | None:
        status = self.redis.hget(claims_key(account_id), contact_id)
        return None if status is None else ClaimStatus(status)

    # Claiming.
    def claim(self, account_id: str, contact_id: str, channel: str, version: str, attempt: HistoryEntry) -> int:
        """1: this caller may send; 0: already claimed by someone; -1: state moved, look again.

        Called directly rather than through a pipeline: redis-py asks SCRIPT EXISTS before every pipeline
        that holds a script, a second round trip on the send path's hottest call."""
        if self.replicas:  # the claim and its WAIT on one connection: a pipeline
            return self.claim_many([(account_id, contact_id, channel, version, attempt)])[0]
        return int(self._claim(*self._claim_call(account_id, contact_id, channel, version, attempt)))

    def claim_many(self, claims: Sequence[tuple[str, str, str, str, HistoryEntry]]) -> list[int]:
        """claim() for each (account id, contact id, channel, version read, attempt), in one round trip."""
        if not claims:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for claim in claims:
            keys, args = self._claim_call(*claim)
            self._claim(keys=keys, args=args, client=pipe)
        if not self.replicas:
            return [int(reply) for reply in pipe.execute()]
        # WAIT counts the replicas holding every write its connection made, so it rides on the claims' own
        # connection: the end of this pipeline, or on a cluster the end of each primary's
        # (dispatcher.state.topology.cluster). A primary whose replicas do not answer in time keeps its claims
        # (sent anyway, logged).
        cluster = client_is_cluster(self.redis)
        if cluster:
            pipe.wait_replicas = (self.replicas, self.replica_timeout_ms)
        else:
            pipe.execute_command("WAIT", self.replicas, self.replica_timeout_ms)
        replies = pipe.execute()
        acked = pipe.replicas_acked if cluster else [int(replies.pop())]
        short = [count for count in acked if count < self.replicas]
        if short:
            self.unreplicated += len(short)
            log.warning("claim.unreplicated", replicas=short, wanted=self.replicas)
        return [int(reply) for reply in replies]

    def _claim_call(
        self, account_id: str, contact_id: str, channel: str, version: str, attempt: HistoryEntry
    ) -> tuple[list[str], list[object]]:
        shard = self.shard_of(account_id)
        keys = [*_account_keys(account_id), self.inflight_key(shard), self.queued_key(shard)]
        args: list[object] = [
            contact_id, version, attempt.model_dump_json(exclude_defaults=True), repr(self.wallclock()),
            queued_member(channel, contact_id),
        ]  # fmt: skip
        return keys, args

    # Moving.
    def move(
        self, account_id: str, contact_id: str, channel: str, expected: ClaimStatus, status: ClaimStatus | None
    ) -> bool:
        """`expected` -> `status` (None forgets the claim so a later plan may queue it again)."""
        return bool(self._move(*self._move_call(account_id, contact_id, channel, expected, status)))

    def move_many(self, moves: Sequence[ClaimMove], pipe: redis.client.Pipeline) -> None:
        """move() for each (account id, contact id, channel, expected, status), onto the caller's pipeline."""
        for move in moves:
            keys, args = self._move_call(*move)
            self._move(keys=keys, args=args, client=pipe)

    def _move_call(
        self, account_id: str, contact_id: str, channel: str, expected: ClaimStatus, status: ClaimStatus | None
    ) -> tuple[list[str], list[object]]:
        shard = self.shard_of(account_id)
        keys = [claims_key(account_id), self.inflight_key(shard), self.queued_key(shard), self.unverified_key(shard)]
        keys.append(let_go_key(account_id))
        return keys, [
            contact_id,
            str(expected),
            "" if status is None else str(status),
            queued_member(channel, contact_id),
            repr(self.wallclock()),
            LET_GO_TTL,
        ]

    def release_many(
        self, releases: Sequence[tuple[str, str, str, HistoryEntry]], forget: bool, pipe: redis.client.Pipeline
    ) -> None:
        """Give back each (account id, contact id, channel, attempt) that did not send, onto the pipeline."""
        now = repr(self.wallclock())
        for account_id, contact_id, channel, attempt in releases:
            shard = self.shard_of(account_id)
            keys = [*_account_keys(account_id), self.inflight_key(shard), self.queued_key(shard)]
            keys += [self.unverified_key(shard), let_go_key(account_id)]
            args = [contact_id, attempt.model_dump_json(exclude_defaults=True), "1" if forget else "0"]
            args += [queued_member(channel, contact_id), now, str(LET_GO_TTL)]
            self._release(keys=keys, args=args, client=pipe)

    # The stranded sweep.
    def dispatched(self, contacts: Sequence[tuple[str, str, str]]) -> None:
        """Each (account id, contact id, channel) was just put on the broker again: its wait starts over."""
        if not contacts:
            return
        now = self.wallclock()
        pipe = self.redis.pipeline(transaction=False)
        for account_id, contact_id, channel in contacts:
            pipe.zadd(self.queued_key(self.shard_of(account_id)), {queued_member(channel, contact_id): now}, xx=True)
        pipe.execute()

    def queued_before(self, moment: float, limit: int = 1000) -> list[Stranded]:
        """Queued contacts last dispatched before `moment` (wall clock), oldest first, up to `limit` per shard."""
        pipe = self.redis.pipeline(transaction=False)
        for shard in range(self.shards):
            pipe.zrangebyscore(self.queued_key(shard), "-inf", moment, start=0, num=limit, withscores=True)
        found = []
        for members in pipe.execute():
            for member, score in members:
                channel, _, contact_id = member.partition(" ")
                found.append(Stranded(account_of(contact_id), contact_id, channel, float(score)))
        return found

    def offer_again(self, stranded: Stranded, wake_key: str, now_epoch: float) -> bool:
        """Forget a still-queued claim and wake its account at `now_epoch` (domain clock), so it is planned anew."""
        return self.offer_again_many([(stranded, wake_key)], now_epoch)[0]

    def offer_again_many(self, offers: Sequence[tuple[Stranded, str]], wake_epoch: float) -> list[bool]:
        """offer_again() for each (contact, its account's wake key), waking each account by `wake_epoch`, in
        one round trip; whether each was still queued."""
        pipe = self.redis.pipeline(transaction=False)
        for stranded, wake_key in offers:
            keys = [claims_key(stranded.account_id), self.queued_key(self.shard_of(stranded.account_id)), wake_key]
            keys.append(let_go_key(stranded.account_id))
            member = queued_member(stranded.channel, stranded.contact_id)
            args = [stranded.contact_id, member, stranded.account_id, repr(wake_epoch), repr(self.wallclock())]
            self._offer_again(keys=keys, args=[*args, LET_GO_TTL], client=pipe)
        return [bool(reply) for reply in pipe.execute()]

    # Claims in doubt.
    def in_doubt_before(self, moment: float, limit: int = 1000) -> list[InDoubt]:
        """Claims sending or unknown since before `moment` (wall clock), up to `limit` per shard."""
        pipe = self.redis.pipeline(transaction=False)
        for shard in range(self.shards):
            pipe.zrangebyscore(self.inflight_key(shard), "-inf", moment, start=0, num=limit, withscores=True)
        return [
            InDoubt(account_of(contact_id), contact_id, float(score))
            for members in pipe.execute()
            for contact_id, score in members
        ]

    def set_aside(self, account_id: str, contact_id: str) -> None:
        """An in-doubt claim no provider can resolve: out of the reconciler's way, into the unverified report."""
        shard = self.shard_of(account_id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.zrem(self.inflight_key(shard), contact_id)
        pipe.zadd(self.unverified_key(shard), {contact_id: self.wallclock()})
        pipe.execute()

    def unverified(self, limit: int = 1000) -> list[InDoubt]:
        """Claims in doubt for good (their provider cannot be asked): what operators are shown."""
        pipe = self.redis.pipeline(transaction=False)
        for shard in range(self.shards):
            pipe.zrange(self.unverified_key(shard), 0, limit - 1, withscores=True)
        return [
            InDoubt(account_of(contact_id), contact_id, float(score))
            for members in pipe.execute()
            for contact_id, score in members
        ]


def _account_keys(account_id: str) -> list[str]:
    return [account_record_key(account_id), claims_key(account_id), history_key(account_id)]
