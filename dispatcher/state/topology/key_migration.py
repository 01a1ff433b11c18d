"""From the per-account key layout to the shard layout (dispatcher.state.redis_keys), on the single Redis that
holds the state, with every process stopped; then the keys can go to a cluster (`redis-cli --cluster import`,
docs/operations.md). Run again after a crash, it finishes the job: every step is idempotent.

1. The shard indexes. A new shard count (many more shards, so they spread over a cluster's primaries) must
   be a multiple of the old one: crc32 mod new is then congruent to the old shard, so old shard N's keys
   are new shard N's too and only members whose new shard is another move. Each batch of members moves in
   one MULTI/EXEC (added to the new key, removed from the old), so a member is never in neither.
2. The accounts. Every key of an account is renamed from its per-account name to its shard-layout name in
   one Lua step (a single Redis runs a script over any keys), so an account is never half moved.
3. The account counts per shard (the `dispatcher_accounts` gauge) are counted again in the new shards.

The audit streams stay where they are: old shard numbers are among the new, and the archiver drains them.
`on_step(step, done)` is called after each batch (progress, and the crash tests' injection point).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from config.errors import ConfigurationError
from dispatcher.core.models import account_of
from dispatcher.state.metrics import recount_accounts
from dispatcher.state.redis_keys import (
    account_id_of,
    inflight_key,
    layout_move_keys,
    moved_key,
    per_account_layout_pattern,
    queued_key,
    shard_of,
    unverified_key,
    use_shard_layout,
    wake_key,
)
from dispatcher.state.store import Store

BATCH = 500

# Every key of one account: rename each that exists to its shard-layout name (KEYS: old, new, old, new, ...).
_RENAME = """
local moved = 0
for i = 1, #KEYS, 2 do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('RENAME', KEYS[i], KEYS[i + 1])
    moved = moved + 1
  end
end
return moved
"""


class MigrationRefused(ConfigurationError, ValueError):
    """The shard counts given cannot be migrated between (the new must be a multiple of the old)."""


@dataclass
class Migrated:
    members: int = 0  # index members moved to another shard
    accounts: int = 0  # accounts whose keys were renamed
    counts: dict[str, int] = field(default_factory=dict)  # accounts by stage and status, counted again


def _member_account(index: str, member: str) -> str:
    if index == "queued":  # "CHANNEL CONTACT_ID"
        return account_of(member.partition(" ")[2])
    if index in ("inflight", "unverified"):
        return account_of(member)
    return member  # the wake-ups and the moved set hold account ids


_INDEXES: dict[str, Callable[[int], str]] = {
    "wake": wake_key, "queued": queued_key, "inflight": inflight_key, "unverified": unverified_key,
}  # fmt: skip


def migrate_to_shard_layout(
    client: redis.Redis,
    old_shards: int,
    new_shards: int,
    on_step: Callable[[str, int], None] = lambda step, done: None,
) -> Migrated:
    """Move a per-account layout written with `old_shards` to the shard layout with `new_shards`."""
    if new_shards < old_shards or new_shards % old_shards:
        raise MigrationRefused(
            f"--shards {new_shards}: must be a multiple of the current DISPATCHER_SCHEDULE_SHARDS ({old_shards})"
        )
    result = Migrated()
    for shard in range(old_shards):
        for index, key_of in _INDEXES.items():
            result.members += _move_sorted(client, index, key_of, shard, new_shards)
            on_step("index", result.members)
        result.members += _move_moved(client, shard, new_shards)
        on_step("index", result.members)
    rename = client.register_script(_RENAME)
    accounts = {account_id_of(_text(key)) for key in client.scan_iter(match=per_account_layout_pattern(), count=1000)}
    for account_id in sorted(accounts):
        pairs = layout_move_keys(account_id, new_shards)
        if rename(keys=[name for pair in pairs for name in pair]):
            result.accounts += 1
        on_step("account", result.accounts)
    use_shard_layout(new_shards)
    result.counts = recount_accounts(Store(client, new_shards))
    on_step("counts", len(result.counts))
    return result


def _move_sorted(client: redis.Redis, index: str, key_of: Callable[[int], str], shard: int, shards: int) -> int:
    moved = 0
    source = key_of(shard)
    while True:
        members = [
            (member, score)
            for member, score in client.zscan_iter(source, count=BATCH)
            if shard_of(_member_account(index, _text(member)), shards) != shard
        ][:BATCH]
        if not members:
            return moved
        pipe = client.pipeline(transaction=True)
        for member, score in members:
            pipe.zadd(key_of(shard_of(_member_account(index, _text(member)), shards)), {member: score})
            pipe.zrem(source, member)
        pipe.execute()
        moved += len(members)


def _move_moved(client: redis.Redis, shard: int, shards: int) -> int:
    source = moved_key(shard)
    members = [m for m in client.sscan_iter(source, count=BATCH) if shard_of(_text(m), shards) != shard]
    for start in range(0, len(members), BATCH):
        pipe = client.pipeline(transaction=True)
        for member in members[start : start + BATCH]:
            pipe.sadd(moved_key(shard_of(_text(member), shards)), member)
            pipe.srem(source, member)
        pipe.execute()
    return len(members)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
