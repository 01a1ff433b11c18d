"""Dead letters: broker messages a worker could not decode or whose arguments it refused, kept for a person.

One capped Redis stream on the broker's Redis (the state's Redis too), redis_keys.DEAD_LETTERS; each entry
holds the queue, the task name, the reason, the time, the message body as received, the envelope (kombu's
Redis list item) that replay pushes back onto the queue, and the count of what it stands for (a send task's
refused contact payloads are one entry, however many). What the cap trims, oldest first, is counted in
`dispatcher_dead_letters_dropped_total`. Nothing here imports Celery or kombu: the envelope
is plain JSON, so the CLI and the API can read, replay and purge without a worker's machinery.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import redis

from dispatcher.state import redis_keys
from dispatcher.state.metrics import DEAD_LETTERS, DEAD_LETTERS_DROPPED, queue_names

STREAM = redis_keys.DEAD_LETTERS
# Bounded so a poison flood cannot fill Redis; ~ lets Redis trim whole nodes, which is much cheaper. What falls
# off is counted (DEAD_LETTERS_DROPPED), so a flood that pushed older entries out is seen.
MAXLEN = 100_000
ENTRY_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")
# Shown and returned whole up to this size; a longer body is cut in listings (replay uses the envelope).
BODY_PREVIEW = 2_000


@dataclass(frozen=True)
class DeadLetter:
    id: str
    queue: str
    task: str
    reason: str
    at: datetime
    body: str
    envelope: str
    count: int = 1  # contact payloads (a refused send's) or messages this entry stands for

    def summary(self) -> dict[str, str | int]:
        body = self.body if len(self.body) <= BODY_PREVIEW else self.body[:BODY_PREVIEW] + "…"
        return {"id": self.id, "queue": self.queue, "task": self.task, "reason": self.reason,
                "at": self.at.isoformat(), "body": body, "count": self.count}  # fmt: skip

    def as_json(self) -> dict[str, str | int]:
        return {**asdict(self), "at": self.at.isoformat()}


def as_text(raw: bytes | str) -> str:
    """Bodies are kept as text; bytes that are not UTF-8 are kept as `base64:` + their base64."""
    if isinstance(raw, str):
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(raw).decode("ascii")


def record(client: redis.Redis, *, queue: str, task: str, reason: str, body: bytes | str, envelope: bytes | str,
           count: int = 1) -> str:  # fmt: skip
    """Write one dead letter and trim the stream to its cap, counting what the trim dropped; its stream id."""
    fields = {
        "queue": queue, "task": task, "reason": reason[:2000], "at": datetime.now(UTC).isoformat(),
        "body": as_text(body), "envelope": as_text(envelope), "count": str(count),
    }  # fmt: skip
    with client.pipeline(transaction=True) as pipe:
        pipe.xadd(STREAM, fields)
        pipe.xtrim(STREAM, maxlen=MAXLEN, approximate=True)  # XADD's own MAXLEN does not say what it trimmed
        entry_id, dropped = pipe.execute()
    DEAD_LETTERS.labels(queue if queue in queue_names() else "other").inc()  # a forged routing key adds no series
    if dropped:
        DEAD_LETTERS_DROPPED.labels("cap").inc(dropped)
    return _str(entry_id)


def task_envelope(queue: str, task: str, task_id: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
    """A Celery task message (protocol 2, JSON) as kombu keeps it in a Redis list: what a producer would send."""
    body = json.dumps([list(args), dict(kwargs), {"callbacks": None, "errbacks": None, "chain": None}])
    headers = {"lang": "py", "task": task, "id": task_id, "root_id": task_id, "parent_id": None, "group": None,
               "retries": 0, "eta": None, "expires": None, "timelimit": [None, None], "ignore_result": True,
               "argsrepr": repr(args)[:200], "kwargsrepr": repr(kwargs)[:200], "origin": "dead-letter"}  # fmt: skip
    return json.dumps({
        "body": base64.b64encode(body.encode("utf-8")).decode("ascii"),
        "content-encoding": "utf-8", "content-type": "application/json", "headers": headers,
        "properties": {"correlation_id": task_id, "reply_to": "", "delivery_mode": 2, "priority": 0,
                       "delivery_info": {"exchange": "", "routing_key": queue}, "body_encoding": "base64",
                       "delivery_tag": str(uuid.uuid4())},
    })  # fmt: skip


def valid_id(entry_id: str) -> bool:
    return ENTRY_ID.fullmatch(entry_id) is not None


def listing(client: redis.Redis, count: int = 100, before: datetime | None = None) -> list[DeadLetter]:
    """The newest `count` dead letters first, only those older than `before` when given."""
    top = f"({_stream_ms(before)}-0" if before else "+"
    return [_entry(entry_id, fields) for entry_id, fields in client.xrevrange(STREAM, top, "-", count=count)]


def get(client: redis.Redis, entry_id: str) -> DeadLetter | None:
    if not valid_id(entry_id):
        return None
    found = client.xrange(STREAM, entry_id, entry_id, count=1)
    return _entry(*found[0]) if found else None


def count(client: redis.Redis) -> int:
    return int(client.xlen(STREAM))


def replay(client: redis.Redis, entry_id: str) -> DeadLetter | None:
    """Put the message back on its queue and remove the entry, in one transaction. A body that is still
    invalid simply comes back here as a new dead letter."""
    letter = get(client, entry_id)
    if letter is None:
        return None
    with client.pipeline(transaction=True) as pipe:
        pipe.lpush(letter.queue, _fresh_delivery_tag(_raw(letter.envelope)))  # kombu producers LPUSH, workers BRPOP
        pipe.xdel(STREAM, entry_id)
        pipe.execute()
    return letter


def delete(client: redis.Redis, entry_id: str) -> bool:
    return valid_id(entry_id) and bool(client.xdel(STREAM, entry_id))


def purge(client: redis.Redis, before: datetime | None = None) -> int:
    """Remove every dead letter, or those older than `before`; how many went."""
    if before is None:
        removed = count(client)
        client.delete(STREAM)
        return removed
    return int(client.xtrim(STREAM, minid=f"{_stream_ms(before)}-0", approximate=False))


def _stream_ms(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError("give the time with its offset, e.g. 2026-03-01T00:00:00+00:00")
    return max(0, int(moment.timestamp() * 1000))  # stream ids start at the epoch: nothing is older


def _raw(text: str) -> bytes:
    if text.startswith("base64:"):
        return base64.b64decode(text.removeprefix("base64:"))
    return text.encode("utf-8")


def _fresh_delivery_tag(envelope: bytes) -> bytes:
    """kombu tracks unacked messages by delivery tag: a replayed message gets its own. Anything that is not
    an envelope goes back as it was (and is dead-lettered again)."""
    try:
        message = json.loads(envelope)
        message["properties"]["delivery_tag"] = str(uuid.uuid4())
    except (ValueError, TypeError, KeyError):
        return envelope
    return json.dumps(message).encode("utf-8")


def _entry(entry_id: bytes | str, fields: Mapping[Any, Any]) -> DeadLetter:
    text = {_str(key): _str(value) for key, value in fields.items()}
    return DeadLetter(
        _str(entry_id), text.get("queue", ""), text.get("task", ""), text.get("reason", ""),
        datetime.fromisoformat(text["at"]) if "at" in text else datetime.fromtimestamp(0, UTC),
        text.get("body", ""), text.get("envelope", ""), _count(text.get("count", "1")),
    )  # fmt: skip


def _count(text: str) -> int:
    return int(text) if text.isdigit() and int(text) > 0 else 1  # entries written before the field: one each


def _str(value: bytes | str) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value
