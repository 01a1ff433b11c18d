"""Each callback endpoint's outbox in Redis: a queue per account, the accounts due, their failed attempts, the
attempts made, and the events that failed for good.

Order: an account's events for an endpoint wait in one list, and only its head goes out; the next one goes
after the head is delivered (or has failed for good). A failing event so holds back its own account's later
events and no one else's. The due set (redis_keys.webhook_due_key) scores each account with a queue by when
its head is due: now, the retry's moment, or a lease while a sender holds it (`take`), so a sender killed
mid-delivery loses nothing: the lease runs out and the head goes again, under the same event id.

Every step is one Lua script on the endpoint's keys (one hash tag), given every key as KEYS.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import redis

from dispatcher.state.redis_keys import (
    webhook_attempts_key,
    webhook_cursors_key,
    webhook_due_key,
    webhook_failed_key,
    webhook_queue_key,
    webhook_tries_key,
)

ATTEMPTS_KEPT = 10_000  # per endpoint, about: the stream is capped approximately

# KEYS: cursors, due, then one queue per event. ARGV: shard, the cursor read, the new cursor, now, then per
# event its account id and its JSON. Only from the cursor read: a second relay on the same shard queues nothing.
ENQUEUE = """
if (redis.call('HGET', KEYS[1], ARGV[1]) or '0-0') ~= ARGV[2] then return 0 end
local k = 3
for i = 5, #ARGV, 2 do
  redis.call('RPUSH', KEYS[k], ARGV[i + 1])
  redis.call('ZADD', KEYS[2], 'NX', ARGV[4], ARGV[i])
  k = k + 1
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
"""

# KEYS: due. ARGV: now, the lease's end, how many. The due accounts, hidden until the lease ends.
TAKE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, member in ipairs(due) do redis.call('ZADD', KEYS[1], ARGV[2], member) end
return due
"""

# KEYS: the account's queue, due, tries, failed. ARGV: account id, failed attempts of the head now (0: none),
# when the head is due next (if anything is left), then the ids of the heads to drop (delivered, or
# failed for good: those also go to `failed`, `#` before the id). Each is dropped only if it is still the head.
FINISH = """
for i = 4, #ARGV do
  local id = ARGV[i]
  local dead = string.sub(id, 1, 1) == '#'
  if dead then id = string.sub(id, 2) end
  local head = redis.call('LINDEX', KEYS[1], 0)
  if not head or cjson.decode(head)['id'] ~= id then break end
  redis.call('LPOP', KEYS[1])
  if dead then redis.call('HSET', KEYS[4], id, head) end
end
if ARGV[2] == '0' then redis.call('HDEL', KEYS[3], ARGV[1]) else redis.call('HSET', KEYS[3], ARGV[1], ARGV[2]) end
if redis.call('LLEN', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[2], ARGV[1])
else
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
end
return 1
"""

# KEYS: the account's queue, due, failed. ARGV: account id, event id, now. A failed event back at its
# account's head, due now.
REQUEUE = """
local event = redis.call('HGET', KEYS[3], ARGV[2])
if not event then return 0 end
redis.call('LPUSH', KEYS[1], event)
redis.call('HDEL', KEYS[3], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return 1
"""


@dataclass(frozen=True, slots=True)
class QueuedEvent:
    """One event for one endpoint: its id (the webhook-id), type, account and the exact body to send."""

    id: str
    type: str
    account_id: str
    body: str

    def as_json(self) -> str:
        return json.dumps({"id": self.id, "type": self.type, "account_id": self.account_id, "body": self.body})

    @classmethod
    def from_json(cls, text: str) -> QueuedEvent:
        data = json.loads(text)
        return cls(data["id"], data["type"], data["account_id"], data["body"])


@dataclass(frozen=True, slots=True)
class Finish:
    """How an account's turn ended: the heads to drop (delivered, or `dead` ones failed for good), the head's
    failed attempts now, and when it is due next (None: now, if anything is left)."""

    account_id: str
    dropped: Sequence[str] = ()
    dead: Sequence[str] = ()
    tries: int = 0
    due_at: float | None = None


class Outbox:
    def __init__(self, client: redis.Redis):
        self.redis = client
        self._enqueue = client.register_script(ENQUEUE)
        self._take = client.register_script(TAKE)
        self._finish = client.register_script(FINISH)
        self._requeue = client.register_script(REQUEUE)

    def enqueue(
        self, endpoint_id: str, shard: int, read: str, position: str, events: Sequence[QueuedEvent], now: float
    ) -> bool:
        """Queue the events (in order) and move the shard's cursor from `read` to `position`, in one step;
        False when another relay moved it first (nothing queued)."""
        keys = [webhook_cursors_key(endpoint_id), webhook_due_key(endpoint_id)]
        keys += [webhook_queue_key(endpoint_id, event.account_id) for event in events]
        args: list[object] = [shard, read, position, repr(now)]
        for event in events:
            args += [event.account_id, event.as_json()]
        return bool(self._enqueue(keys=keys, args=args))

    def take(self, endpoint_id: str, now: float, lease: float, limit: int) -> list[str]:
        """Up to `limit` accounts whose head is due, leased to the caller until now + lease."""
        return [
            str(a) for a in self._take(keys=[webhook_due_key(endpoint_id)], args=[repr(now), repr(now + lease), limit])
        ]

    def heads(self, endpoint_id: str, account_ids: Sequence[str], count: int) -> dict[str, list[QueuedEvent]]:
        """The first `count` events of each account's queue, and the head's failed attempts so far."""
        pipe = self.redis.pipeline(transaction=False)
        for account_id in account_ids:
            pipe.lrange(webhook_queue_key(endpoint_id, account_id), 0, count - 1)
        return {
            account_id: [QueuedEvent.from_json(item) for item in items]
            for account_id, items in zip(account_ids, pipe.execute(), strict=True)
        }

    def tries(self, endpoint_id: str, account_ids: Sequence[str]) -> dict[str, int]:
        if not account_ids:
            return {}
        found = self.redis.hmget(webhook_tries_key(endpoint_id), list(account_ids))
        return {account_id: int(value or 0) for account_id, value in zip(account_ids, found, strict=True)}

    def finish(self, endpoint_id: str, finishes: Sequence[Finish], now: float) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for done in finishes:
            keys = [
                webhook_queue_key(endpoint_id, done.account_id), webhook_due_key(endpoint_id),
                webhook_tries_key(endpoint_id), webhook_failed_key(endpoint_id),
            ]  # fmt: skip
            due = repr(now if done.due_at is None else done.due_at)
            ids = [*done.dropped, *("#" + event_id for event_id in done.dead)]
            self._finish(keys=keys, args=[done.account_id, done.tries, due, *ids], client=pipe)
        pipe.execute()

    def release(self, endpoint_id: str, account_ids: Sequence[str], due_at: float) -> None:
        """Accounts taken but not tried (the endpoint stopped answering): due again at `due_at`."""
        if account_ids:
            self.redis.zadd(webhook_due_key(endpoint_id), dict.fromkeys(account_ids, due_at), xx=True)

    def record_attempts(self, endpoint_id: str, attempts: Sequence[dict[str, object]]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for attempt in attempts:
            fields = {key: "" if value is None else str(value) for key, value in attempt.items()}
            pipe.xadd(webhook_attempts_key(endpoint_id), fields, maxlen=ATTEMPTS_KEPT, approximate=True)
        pipe.execute()

    def attempts(self, endpoint_id: str, limit: int = 50, event_id: str | None = None) -> list[dict[str, str]]:
        """The latest attempts, newest first (one event's when named)."""
        found = []
        for stream_id, fields in self.redis.xrevrange(webhook_attempts_key(endpoint_id), count=ATTEMPTS_KEPT):
            if event_id is None or fields.get("event_id") == event_id:
                found.append({"attempt_id": stream_id, **fields})
                if len(found) >= limit:
                    break
        return found

    def failed(self, endpoint_id: str) -> list[QueuedEvent]:
        return [QueuedEvent.from_json(item) for item in self.redis.hvals(webhook_failed_key(endpoint_id))]

    def retry(self, endpoint_id: str, event_id: str, now: float) -> bool:
        """A failed event back at its account's head, due now (ahead of that account's later events)."""
        stored = self.redis.hget(webhook_failed_key(endpoint_id), event_id)
        if stored is None:
            return False
        account_id = QueuedEvent.from_json(stored).account_id
        keys = [
            webhook_queue_key(endpoint_id, account_id),
            webhook_due_key(endpoint_id),
            webhook_failed_key(endpoint_id),
        ]
        return bool(self._requeue(keys=keys, args=[account_id, event_id, repr(now)]))

    def due_now(self, endpoint_id: str, now: float) -> int:
        """Every waiting account due now (an operator's retry: skip the back-off); how many."""
        key = webhook_due_key(endpoint_id)
        accounts = self.redis.zrange(key, 0, -1)
        if accounts:
            self.redis.zadd(key, dict.fromkeys(accounts, now), xx=True)
        return len(accounts)

    def depth(self, endpoint_id: str) -> dict[str, int]:
        """Accounts waiting, events failed for good."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.zcard(webhook_due_key(endpoint_id))
        pipe.hlen(webhook_failed_key(endpoint_id))
        waiting, failed = pipe.execute()
        return {"accounts_waiting": int(waiting), "failed": int(failed)}
