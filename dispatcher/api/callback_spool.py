"""A durable local spool for provider callbacks that arrive while Redis is away.

Twilio does not retry a status callback that failed (unless told to with URL fragments, and then only a
few times within seconds), so a 503 during a Redis restart would lose the delivery outcome for good. A
callback whose signature checked out is instead appended to an NDJSON file on the API host's disk (flushed
and fsynced before the provider gets its answer: 200 `{"status": "spooled"}`, a success, since the callback
is safely kept and a provider would retry anything else), and a replayer thread feeds the file back through
the same recording path once Redis answers. Replaying is safe to repeat: outcomes carry event ids derived from the
provider's ids, so a record replayed twice is applied once.

One spool per API process (its state directory); a spool left by a process that died is replayed when
the API starts again.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
import structlog

log = structlog.get_logger("dispatcher.api.callback_spool")

REDIS_AWAY = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, redis.exceptions.ReadOnlyError)
RETRY_EVERY = 1.0

Record = dict[str, Any]


class CallbackSpool:
    def __init__(self, path: Path, replay_one: Callable[[Record], object]) -> None:
        self.path = path
        self.replay_one = replay_one
        self._lock = threading.Lock()
        self._replayer: threading.Thread | None = None

    def append(self, record: Record) -> None:
        """Keep one verified callback on disk, then make sure a replayer is waiting for Redis."""
        line = json.dumps(record, ensure_ascii=False, default=str) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as stream:
                stream.write(line)
                stream.flush()
                os.fsync(stream.fileno())
        log.warning("webhook.spooled", path=str(self.path), kind=record.get("kind"))
        self.start_replaying()

    def pending(self) -> int:
        with self._lock:
            return len(self._read()) if self.path.exists() else 0

    def start_replaying(self) -> None:
        with self._lock:
            if self.path.exists() and (self._replayer is None or not self._replayer.is_alive()):
                self._replayer = threading.Thread(target=self._replay_until_empty, name="callback-spool", daemon=True)
                self._replayer.start()

    def _replay_until_empty(self) -> None:
        while not self.replay_once():
            time.sleep(RETRY_EVERY)

    def replay_once(self) -> bool:
        """Feed every spooled callback back, in order; True when the spool is empty afterwards."""
        with self._lock:
            records = self._read() if self.path.exists() else []
            done = 0
            try:
                for record in records:
                    self.replay_one(record)
                    done += 1
            except REDIS_AWAY:
                pass  # still away: what is left stays spooled, in order
            self._rewrite(records[done:])
        if done:
            log.info("webhook.spool_replayed", replayed=done, left=len(records) - done)
        return done == len(records)

    def _read(self) -> list[Record]:
        records = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                records.append(json.loads(line))
        return records

    def _rewrite(self, records: list[Record]) -> None:
        if not records:
            self.path.unlink(missing_ok=True)
            return
        partial = self.path.with_suffix(".tmp")
        with partial.open("w", encoding="utf-8") as stream:
            stream.writelines(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records)
            stream.flush()
            os.fsync(stream.fileno())
        partial.replace(self.path)  # atomic: a crash leaves the old spool or the new one, never half of one
