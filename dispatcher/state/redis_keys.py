"""Every Redis key name the dispatcher reads or writes is spelled here, and only here: the store, the claim
ledger, the ranks, the archiver, the API's idempotency records, the dead letters, the workers' rate limiter and
circuit breaker all build their keys with these functions (tests/unit/test_redis_keys.py greps the rest of the
source for a hash tag or a key spelled by hand, and holds docs/architecture.md's "## Keys" table against this
module). The Lua scripts get every key they touch as KEYS, built here; none builds a name.

Hash tags keep what one atomic step touches in one Cluster slot: an account's keys share `{a:ID}`, a shard's
`{s:N}`, a phone number's `{p:PHONE}`; a rate limit's windows `{rl:...}`, a provider's breaker `{cb:...}` and
an idempotency record `{i:...}` each have their own. The names are the stored data's: changing one strands
what a running deployment has written (no migration reads the old name).

Pure: no Redis client here, only names.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

# A shard is crc32(account id) mod the shard count (DISPATCHER_SCHEDULE_SHARDS): the wake-ups, the claim
# indexes, the audit stream and the moved set of an account are its shard's.


def shard_of(account_id: str, shards: int) -> int:
    """The shard of an account's wake-up, claim indexes, audit entries and moved mark."""
    return zlib.crc32(account_id.encode()) % shards


# An account's keys. Two layouts (docs/architecture.md, "One slot per script"): by default each account has its
# own hash tag, `{a:ID}:...`; with the shard layout (a Redis Cluster, DISPATCHER_REDIS_KEY_LAYOUT=shard) an
# account's keys carry its shard's tag, `{s:N}:a:ID:...`, so every script that writes an account and its
# shard's indexes stays in one slot and atomic. The layout is the process's, set once at start-up
# (use_shard_layout) before any key is built: the two cannot be mixed on one Redis.
_layout_shards: int | None = None


def use_shard_layout(shards: int | None) -> None:
    """Tag every account's keys with its shard (`shards` = DISPATCHER_SCHEDULE_SHARDS), or, with None, with
    the account itself (the default)."""
    global _layout_shards
    _layout_shards = shards


def shard_layout() -> int | None:
    """The shard count the account keys are tagged with, or None for the per-account tags."""
    return _layout_shards


def _account_key(account_id: str, part: str, shards: int | None) -> str:
    if shards is None:
        return f"{{a:{account_id}}}:{part}"
    return f"{{s:{shard_of(account_id, shards)}}}:a:{account_id}:{part}"


def account_record_key(account_id: str) -> str:
    """hash: v = version, d = the AccountRecord JSON, r = releases, t = the last history trim pass."""
    return _account_key(account_id, "acct", _layout_shards)


def history_key(account_id: str) -> str:
    """list: the account's history entries, append-only (a release or a trim takes some out)."""
    return _account_key(account_id, "hist", _layout_shards)


def claims_key(account_id: str) -> str:
    """hash: contact id -> queued | sending | sent | failed | unknown (dispatcher.state.claims)."""
    return _account_key(account_id, "claims", _layout_shards)


def let_go_key(account_id: str) -> str:
    """hash: contact id -> when its claim was forgotten; a send task for it still on the broker is a stale
    duplicate. Expires a day after the last (dispatcher.state.claims.LET_GO_TTL)."""
    return _account_key(account_id, "let-go", _layout_shards)


def events_key(account_id: str) -> str:
    """zset: event ids already applied -> when each may lapse (a repeat is a no-op)."""
    return _account_key(account_id, "events", _layout_shards)


def ranks_key(account_id: str) -> str:
    """hash: contact id -> rank of the last provider status recorded (dispatcher.state.ranks)."""
    return _account_key(account_id, "ranks", _layout_shards)


def voice_key(account_id: str) -> str:
    """hash: contact id -> its call's TwiML scripts (human, machine); expires after a day."""
    return _account_key(account_id, "voice", _layout_shards)


def retries_key(account_id: str) -> str:
    """hash: contact id -> transient failures it met in a row (the retry back-off grows with them); expires
    an hour after the last."""
    return _account_key(account_id, "retries", _layout_shards)


_ACCOUNT_PARTS = ("acct", "hist", "claims", "let-go", "events", "ranks", "voice", "retries")


def account_keys(account_id: str) -> tuple[str, ...]:
    """The keys that leave Redis with a closed account (the record first; dispatcher.record.closed). The let-go
    record and the transient-failure counts are not among them: they expire by themselves."""
    return (
        account_record_key(account_id), history_key(account_id), claims_key(account_id), ranks_key(account_id),
        events_key(account_id), voice_key(account_id),
    )  # fmt: skip


def layout_move_keys(account_id: str, shards: int) -> tuple[tuple[str, str], ...]:
    """Every key of an account as (per-account name, shard-layout name): what the migration to the shard
    layout renames (dispatcher.state.topology.key_migration)."""
    return tuple(
        (_account_key(account_id, part, None), _account_key(account_id, part, shards)) for part in _ACCOUNT_PARTS
    )


# Every account record, as a SCAN pattern, and the account id back from one record key.
ACCOUNT_RECORDS = _account_key("*", "acct", None)  # the per-account layout's
_RECORD_PREFIX, _RECORD_SUFFIX = ACCOUNT_RECORDS.split("*")
_SHARD_RECORDS = "{s:*}:a:*:acct"
_SHARD_RECORD_INFIX, _SHARD_RECORD_SUFFIX = "}:a:", ":acct"


def account_records_pattern() -> str:
    """The SCAN pattern of every account record in the process's layout."""
    return ACCOUNT_RECORDS if _layout_shards is None else _SHARD_RECORDS


def per_account_layout_pattern() -> str:
    """The SCAN pattern of every key in the per-account layout (what the migration renames)."""
    return _account_key("*", "*", None)


def account_id_of(record_key: str) -> str:
    """The account id in a key that account_records_pattern() matched (either layout), or any key of the
    per-account layout."""
    if record_key.startswith(_RECORD_PREFIX):
        return record_key[len(_RECORD_PREFIX) : record_key.rindex(_RECORD_SUFFIX[:2])]
    return record_key[record_key.index(_SHARD_RECORD_INFIX) + len(_SHARD_RECORD_INFIX) : -len(_SHARD_RECORD_SUFFIX)]


# A phone number's key, `{p:PHONE}:accounts` (dispatcher.state.phone_index).
def phone_key(phone: str) -> str:
    """set: the ids of the accounts with that phone number (the inbound STOP index)."""
    return f"{{p:{phone}}}:accounts"


# A shard's keys, `{s:N}:...`.
def wake_key(shard: int) -> str:
    """zset: account id -> next wake-up (epoch seconds)."""
    return f"{{s:{shard}}}:wake"


def queued_key(shard: int) -> str:
    """zset: "CHANNEL CONTACT_ID" -> wall-clock time of its last dispatch (the stranded sweep)."""
    return f"{{s:{shard}}}:queued"


def inflight_key(shard: int) -> str:
    """zset: contact id -> wall-clock time of its claim, while sending or unknown (the reconciler)."""
    return f"{{s:{shard}}}:inflight"


def unverified_key(shard: int) -> str:
    """zset: contact id -> when it was set aside, in doubt for good."""
    return f"{{s:{shard}}}:unverified"


def audit_key(shard: int) -> str:
    """stream: one entry per write, field e = a JSON array of its audit entries."""
    return f"{{s:{shard}}}:audit"


def shard_counts_key(shard: int) -> str:
    """hash: "STAGE\\tSTATUS" -> accounts of the shard so (the dispatcher_accounts gauge)."""
    return f"{{s:{shard}}}:accounts"


def moved_key(shard: int) -> str:
    """set: ids of the shard's accounts moved to the record and not restored since."""
    return f"{{s:{shard}}}:moved"


def archived_key(shard: int) -> str:
    """string: the last id of the shard's audit stream copied to the record (the archiver reads on after it and
    trims no further than the slowest callback cursor; dispatcher.record.archive)."""
    return f"{{s:{shard}}}:archived"


# The archiver's SCAN cursors (dispatcher.record.closed and .history), one key each.
CLOSED_CURSOR = "{archive}:closed-cursor"
HISTORY_CURSOR = "{archive}:history-cursor"

# The dead letters (dispatcher.state.dead_letter_stream): one capped stream on the broker's Redis.
DEAD_LETTERS = "dispatcher:dead-letters"

# The active variant set (dispatcher.state.active_set): string, JSON {"digest", "set"}; published by the first
# process to start or plan, replaced only by `dispatcher experiment publish`.
ACTIVE_VARIANTS = "{experiment}:active"


# The API's idempotency records (dispatcher.api.idempotency), per caller and Idempotency-Key digest.
def idempotency_meta_key(caller: str, digest: str) -> str:
    """string: {"state": "processing"} or the stored answer's status, headers and fingerprint."""
    return _idempotency_key(caller, digest, "meta")


def idempotency_body_key(caller: str, digest: str) -> str:
    """list: the stored answer's body, zlib-compressed base64 chunks."""
    return _idempotency_key(caller, digest, "body")


def _idempotency_key(caller: str, digest: str, part: str) -> str:
    return f"{{i:{caller}:{digest}}}:{part}"


# The workers' shared state (workers/limiter.py, workers/circuit.py).
def rate_window_key(limit: str, identifiers: Sequence[str], seconds: float) -> str:
    """list: a rate limit's moving window of grant times, per limit (the channel) and its identifiers (the
    sender), named by its whole seconds."""
    return f"{{rl:{':'.join((limit, *identifiers))}}}:{int(seconds)}s"


def breaker_key(provider: str) -> str:
    """hash: a provider's circuit breaker: until, seconds, setting, reason, trips."""
    return f"{{cb:{provider}}}:state"


def probe_key(provider: str) -> str:
    """string: held by the one caller that probes a half-open circuit."""
    return f"{{cb:{provider}}}:probe"


def held_key(provider: str) -> str:
    """set: accounts with contacts an open circuit sent back to the schedule, woken when it closes."""
    return f"{{cb:{provider}}}:held"


# The providers' health weights (dispatcher/state/provider_health.py): one hash per channel, so a move of one
# provider and its companions is one atomic step in one slot, and each provider's run of failures.
def provider_weights_key(channel: str) -> str:
    """hash: provider key -> "WEIGHT MOVED_AT": its weight 0-100 as last moved, and when (epoch seconds)."""
    return f"{{pw:{channel}}}:weights"


def provider_failures_key(channel: str, provider: str) -> str:
    """string: failed or slow requests to one provider of the channel in the current minute; expires with it."""
    return f"{{pw:{channel}}}:failures:{provider}"


# A provider's shared session (dispatcher/state/provider_state.py): its access token, the one refresher, and
# the contact each of its message ids carries (a push that names only the provider's id).
def provider_token_key(provider: str) -> str:
    """hash: a provider's access token: token, expires_at (epoch seconds); shared by every worker."""
    return f"{{tok:{provider}}}:access"


def provider_refresh_key(provider: str) -> str:
    """string: held by the one worker refreshing the provider's token; expires by itself."""
    return f"{{tok:{provider}}}:refresh"


def provider_message_key(provider: str, message_id: str) -> str:
    """string: the contact id a provider's message id was sent for; expires after a week."""
    return f"{{pm:{provider}:{message_id}}}:contact"


# kombu's keys on the broker's Redis, which the dispatcher reads (queue depths, the oldest waiting message)
# and, replaying a dead letter, pushes to: a queue is a list named after it, one more per priority step.
UNACKED = "unacked"
_PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")


def queue_keys(queue: str) -> tuple[str, ...]:
    """The lists of one Celery queue, priority 0 (the queue's own name) first."""
    return tuple(queue + suffix for suffix in _PRIORITY_SUFFIXES)


# The outcome callbacks (dispatcher.state.webhook_endpoints and .webhook_outbox): the endpoints' index, and each
# endpoint's keys under its own hash tag `{wh:EP}`, so one relay step (events queued and the cursor moved) and
# one delivery's end are each one atomic step on one slot.
WEBHOOK_ENDPOINTS = "{wh}:endpoints"
# Held (SET NX, with a TTL) by the one `dispatcher.callbacks` run at work, so runs do not pile up on the plan queue.
WEBHOOK_RUN = "{wh}:running"


def webhook_endpoint_key(endpoint_id: str) -> str:
    """hash: an endpoint's url, event types, secrets, state (enabled, why disabled) and breaker."""
    return f"{{wh:{endpoint_id}}}:endpoint"


def webhook_cursors_key(endpoint_id: str) -> str:
    """hash: shard -> the last audit stream id the relay queued for the endpoint."""
    return f"{{wh:{endpoint_id}}}:cursors"


def webhook_due_key(endpoint_id: str) -> str:
    """zset: account id -> when its queue's head is due (now, its retry, or a delivery's lease)."""
    return f"{{wh:{endpoint_id}}}:due"


def webhook_queue_key(endpoint_id: str, account_id: str) -> str:
    """list: the account's events for the endpoint, oldest first; the head goes out first, alone."""
    return f"{{wh:{endpoint_id}}}:q:{account_id}"


def webhook_tries_key(endpoint_id: str) -> str:
    """hash: account id -> failed attempts of its queue's head."""
    return f"{{wh:{endpoint_id}}}:tries"


def webhook_attempts_key(endpoint_id: str) -> str:
    """stream: every delivery attempt (event, status, error, wait), capped at about 10,000."""
    return f"{{wh:{endpoint_id}}}:attempts"


def webhook_failed_key(endpoint_id: str) -> str:
    """hash: event id -> the event, failed for good (its schedule spent), until retried or the endpoint goes."""
    return f"{{wh:{endpoint_id}}}:failed"
