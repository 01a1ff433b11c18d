"""kombu's Redis transport (kombu 5.7) with two failure paths closed; `configure()` names it as the broker
transport for redis:// and rediss:// URLs.

1. Redis restart with unacked messages in hand. On a lost connection Celery's consumer detaches the transport
   (`Connection.collect`) and then closes the connection; closing the channel restores its unacked messages,
   which builds a client from the detached transport and fails with AttributeError("'NoneType' object has no
   attribute 'hostname'"): not a connection error, so the worker stops (Unrecoverable error). Here a detached
   channel raises redis's ConnectionError instead, which kombu ignores while closing; the worker reconnects.
   The messages it held stay in Redis's `unacked` hash; their delivery tags are kept in this process, and
   the channel of the next connection puts them back on their queues at once instead of leaving them to
   the visibility timeout (10 minutes by default: every contact they carried would wait that long).
2. A list item that is not a kombu envelope (a raw non-JSON push onto a queue) raised out of the BRPOP read
   and stopped the worker, the item already popped and gone. Here it goes to the dead-letter stream.
"""

from __future__ import annotations

import threading
from queue import Empty
from typing import Any

import redis
import structlog
from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads

from dispatcher.state import dead_letter_stream

log = structlog.get_logger("workers.broker")


# Delivery tags of messages a channel still held when its connection was lost, for the next channel of this
# process to restore. A tag someone else already restored or acked is simply not found in `unacked`.
_orphaned: set[str] = set()
_orphaned_lock = threading.Lock()


class Channel(kombu_redis.Channel):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._restore_orphans()

    def close(self) -> None:
        detached = self.connection is None or self.connection.client is None
        if detached and self._qos is not None and self._qos._delivered:
            with _orphaned_lock:
                _orphaned.update(self._qos._delivered)
        super().close()

    def _restore_orphans(self) -> None:
        with _orphaned_lock:
            tags = list(_orphaned)
            _orphaned.clear()
        for index, tag in enumerate(tags):
            try:
                self.qos.restore_by_tag(tag, leftmost=True)
            except self.connection_errors:
                with _orphaned_lock:
                    _orphaned.update(tags[index:])  # Redis went again: the next channel tries
                return
        if tags:
            log.warning("broker.restored_after_reconnect", messages=len(tags))

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        if self.connection.client is None:
            raise redis.exceptions.ConnectionError("the broker connection was closed after a connection loss")
        params: dict[str, Any] = super()._connparams(asynchronous=asynchronous)
        return params

    def _brpop_read(self, **options: Any) -> bool:
        # kombu's own method, but the envelope is decoded by _envelope instead of a bare loads().
        try:
            try:
                dest__item = self.client.parse_response(self.client.connection, "BRPOP", **options)
            except self.connection_errors:
                self.client.connection.disconnect()  # the next poll reconnects
                raise
            if not dest__item:
                raise Empty()
            dest, item = dest__item
            dest = bytes_to_str(dest).rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(dest)
            envelope = self._envelope(item, dest)
            if envelope is None:
                raise Empty()
            self.connection._deliver(envelope, dest)
            return True
        finally:
            self._in_poll = None  # type: ignore[assignment]  # as kombu does
            self._flush_brpop_reauth()

    def _get(self, queue: str, timeout: Any = None) -> dict[str, Any]:
        # The polling path (no event loop), kept in step with _brpop_read.
        with self.conn_or_acquire() as client:
            for priority in self.priority_steps:
                item = client.rpop(self._q_for_pri(queue, priority))
                if item:
                    self._maybe_update_queues_expire(client, queue)
                    envelope = self._envelope(item, queue)
                    if envelope is not None:
                        return envelope
            self._maybe_update_queues_expire(client, queue)
            raise Empty()

    def _envelope(self, item: bytes, queue: str) -> dict[str, Any] | None:
        """The decoded envelope, or None once an item that is not one has been dead-lettered."""
        try:
            envelope = loads(bytes_to_str(item))
            if isinstance(envelope, dict) and isinstance(envelope.get("properties"), dict):
                return envelope
            reason = "not a kombu message envelope (a JSON object with properties)"
        except (ValueError, UnicodeDecodeError) as exc:
            reason = f"not a kombu message envelope: {type(exc).__name__}: {exc}"
        with self.conn_or_acquire() as client:
            entry = dead_letter_stream.record(client, queue=queue, task="", reason=reason, body=item, envelope=item)
        log.error("broker.dead_letter", queue=queue, reason=reason, dead_letter=entry)
        return None


class Transport(kombu_redis.Transport):
    Channel = Channel


class SentinelChannel(Channel, kombu_redis.SentinelChannel):
    pass


class SentinelTransport(kombu_redis.SentinelTransport):
    Channel = SentinelChannel


def transport_for(broker_url: str) -> str | None:
    """The transport to name for this URL (None: kombu's choice, for schemes this module does not cover)."""
    scheme = broker_url.partition("://")[0]
    return {"redis": f"{__name__}:Transport", "rediss": f"{__name__}:Transport",
            "sentinel": f"{__name__}:SentinelTransport"}.get(scheme)  # fmt: skip
