"""The bank's callback endpoints, kept in Redis: url, event types, signing secrets, state, breaker and cursors.

Why Redis and not the record: every process that needs an endpoint already holds the state's Redis (the API
that registers it, the relay that queues for it, the worker that sends, the CLI); the record may be absent
(a bare API, a hand-run worker), and an endpoint is a few hundred bytes. Each endpoint's keys share its hash
tag (dispatcher.state.redis_keys), so the relay's step (events queued, cursor moved) is one atomic step.

A secret is kept as given (the sender needs it to sign) and shown once, when made or rotated. A rotation keeps
the old secret for `grace` seconds (24 h): messages are signed with both meanwhile, so a receiver may switch
at leisure, even for an event already being retried.

The cursors: per shard, the last audit stream id the relay queued for the endpoint. A new endpoint starts at
each stream's end (it receives what happens after it exists); the archiver trims no stream past the
slowest cursor of the enabled endpoints (`slowest_cursor`). A disabled endpoint holds nothing back: enabled
again, it starts at the streams' end (what happened meanwhile is in the change feed, GET /v1/changes).
"""

from __future__ import annotations

import json
import secrets as random_tokens
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import redis

from dispatcher.core.webhook_events import EVENT_TYPES, new_secret
from dispatcher.state.redis_keys import (
    WEBHOOK_ENDPOINTS,
    audit_key,
    webhook_attempts_key,
    webhook_cursors_key,
    webhook_due_key,
    webhook_endpoint_key,
    webhook_failed_key,
    webhook_queue_key,
    webhook_tries_key,
)

ROTATION_GRACE = 24 * 3600.0


def stream_position(stream_id: str) -> tuple[int, int]:
    """A stream id as a pair that sorts as Redis sorts the ids."""
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass(frozen=True, slots=True)
class Endpoint:
    id: str
    url: str
    types: tuple[str, ...]  # empty: every type
    secret: str
    old_secret: str | None
    old_secret_until: float
    enabled: bool
    disabled_reason: str | None
    created_at: float
    open_until: float  # the breaker: no delivery before this (epoch seconds)
    failures: int  # failed attempts in a row, across the endpoint's accounts
    description: str = ""

    def wants(self, event_type: str) -> bool:
        return not self.types or event_type in self.types

    def secrets_at(self, moment: float) -> list[str]:
        """The secrets to sign with at `moment`: the current one, and the old one during its grace."""
        kept = self.old_secret if self.old_secret and moment < self.old_secret_until else None
        return [self.secret] + ([kept] if kept else [])

    def summary(self) -> dict[str, object]:
        """The endpoint as the API and the CLI show it: never its secret."""
        return {
            "id": self.id, "url": self.url, "types": list(self.types), "enabled": self.enabled,
            "disabled_reason": self.disabled_reason, "created_at": self.created_at,
            "breaker_open_until": self.open_until or None, "failures_in_a_row": self.failures,
            "rotating_until": self.old_secret_until if self.old_secret else None, "description": self.description,
        }  # fmt: skip


def _endpoint(endpoint_id: str, fields: dict[str, str]) -> Endpoint:
    return Endpoint(
        id=endpoint_id, url=fields["url"], types=tuple(json.loads(fields.get("types", "[]"))),
        secret=fields["secret"], old_secret=fields.get("old_secret") or None,
        old_secret_until=float(fields.get("old_secret_until", 0) or 0), enabled=fields.get("enabled") == "1",
        disabled_reason=fields.get("disabled_reason") or None, created_at=float(fields.get("created_at", 0)),
        open_until=float(fields.get("open_until", 0) or 0), failures=int(fields.get("failures", 0) or 0),
        description=fields.get("description", ""),
    )  # fmt: skip


class EndpointRegistry:
    """Endpoints by id; `wallclock` times their creation, rotation and breaker (tests inject one)."""

    def __init__(self, client: redis.Redis, shards: int, wallclock: Callable[[], float] = time.time):
        self.redis = client
        self.shards = shards
        self.wallclock = wallclock

    def create(self, url: str, types: Sequence[str] = (), description: str = "") -> tuple[Endpoint, str]:
        """A new enabled endpoint and its secret (the one time it is shown); it receives what happens next."""
        unknown = sorted(set(types) - set(EVENT_TYPES))
        if unknown:
            raise ValueError(f"unknown event types {unknown}; known: {', '.join(EVENT_TYPES)}")
        endpoint_id = "ep_" + random_tokens.token_hex(8)
        secret = new_secret()
        fields = {
            "url": url, "types": json.dumps(sorted(set(types))), "secret": secret, "enabled": "1",
            "created_at": repr(self.wallclock()), "description": description,
        }  # fmt: skip
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(webhook_endpoint_key(endpoint_id), mapping=fields)
        pipe.hset(webhook_cursors_key(endpoint_id), mapping=self._stream_ends())
        pipe.sadd(WEBHOOK_ENDPOINTS, endpoint_id)
        pipe.execute()
        return _endpoint(endpoint_id, fields), secret

    def _stream_ends(self) -> dict[str, str]:
        pipe = self.redis.pipeline(transaction=False)
        for shard in range(self.shards):
            pipe.xrevrange(audit_key(shard), count=1)
        return {str(shard): (last[0][0] if last else "0-0") for shard, last in enumerate(pipe.execute())}

    def get(self, endpoint_id: str) -> Endpoint | None:
        fields = self.redis.hgetall(webhook_endpoint_key(endpoint_id))
        return _endpoint(endpoint_id, fields) if fields else None

    def all(self) -> list[Endpoint]:
        ids = sorted(self.redis.smembers(WEBHOOK_ENDPOINTS))
        pipe = self.redis.pipeline(transaction=False)
        for endpoint_id in ids:
            pipe.hgetall(webhook_endpoint_key(endpoint_id))
        return [_endpoint(i, fields) for i, fields in zip(ids, pipe.execute(), strict=True) if fields]

    def enabled(self) -> list[Endpoint]:
        return [endpoint for endpoint in self.all() if endpoint.enabled]

    def delete(self, endpoint_id: str) -> bool:
        """Drop the endpoint with its queues, attempts and failed events."""
        if not self.redis.srem(WEBHOOK_ENDPOINTS, endpoint_id):
            return False
        accounts = self.redis.zrange(webhook_due_key(endpoint_id), 0, -1)
        keys = [webhook_queue_key(endpoint_id, account_id) for account_id in accounts]
        keys += [webhook_endpoint_key(endpoint_id), webhook_cursors_key(endpoint_id), webhook_due_key(endpoint_id)]
        keys += [webhook_tries_key(endpoint_id), webhook_attempts_key(endpoint_id), webhook_failed_key(endpoint_id)]
        for start in range(0, len(keys), 500):
            self.redis.delete(*keys[start : start + 500])
        return True

    def rotate(self, endpoint_id: str, grace: float = ROTATION_GRACE) -> str | None:
        """A new secret (returned, shown once); the current one stays valid for `grace` seconds."""
        found = self.get(endpoint_id)
        if found is None:
            return None
        secret = new_secret()
        self.redis.hset(
            webhook_endpoint_key(endpoint_id),
            mapping={"secret": secret, "old_secret": found.secret, "old_secret_until": repr(self.wallclock() + grace)},
        )
        return secret

    def disable(self, endpoint_id: str, reason: str) -> bool:
        key = webhook_endpoint_key(endpoint_id)
        if not self.redis.exists(key):
            return False
        self.redis.hset(key, mapping={"enabled": "0", "disabled_reason": reason})
        return True

    def enable(self, endpoint_id: str) -> bool:
        """Enabled again: its breaker closed, its cursors at the streams' end (it held no stream back while off)."""
        key = webhook_endpoint_key(endpoint_id)
        if not self.redis.exists(key):
            return False
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(key, mapping={"enabled": "1", "disabled_reason": "", "open_until": "0", "failures": "0"})
        pipe.hset(webhook_cursors_key(endpoint_id), mapping=self._stream_ends())
        pipe.execute()
        return True

    # The breaker: failures in a row across the endpoint's accounts; opened for a while after `threshold`.
    def failed(self, endpoint_id: str, threshold: int, open_for: float) -> bool:
        """Count a failed attempt; True when it opened the breaker (for `open_for` seconds)."""
        key = webhook_endpoint_key(endpoint_id)
        failures = int(self.redis.hincrby(key, "failures", 1))
        if failures < threshold:
            return False
        self.redis.hset(key, "open_until", repr(self.wallclock() + open_for))
        return True

    def pause(self, endpoint_id: str, seconds: float) -> None:
        """No delivery to the endpoint for `seconds` (its 429's Retry-After)."""
        self.redis.hset(webhook_endpoint_key(endpoint_id), "open_until", repr(self.wallclock() + seconds))

    def succeeded(self, endpoint_id: str) -> None:
        self.redis.hset(webhook_endpoint_key(endpoint_id), mapping={"failures": "0", "open_until": "0"})

    # The cursors.
    def cursors(self, endpoint_id: str) -> dict[int, str]:
        return {
            int(shard): stream_id for shard, stream_id in self.redis.hgetall(webhook_cursors_key(endpoint_id)).items()
        }

    def slowest_cursor(self, shard: int) -> str | None:
        """The oldest position any enabled endpoint's relay has reached in the shard's stream (None: no
        endpoint, nothing held back). The archiver trims no further."""
        endpoints = self.enabled()
        if not endpoints:
            return None
        pipe = self.redis.pipeline(transaction=False)
        for endpoint in endpoints:
            pipe.hget(webhook_cursors_key(endpoint.id), str(shard))
        found = [cursor or "0-0" for cursor in pipe.execute()]
        return min(found, key=stream_position)
