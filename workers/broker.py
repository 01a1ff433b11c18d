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
2. A list item that is not an envelope kombu can turn into a message raised out of the BRPOP read, the item
   already popped and gone: a raw non-JSON push, a body that is not the base64 its `body_encoding` says, an
   envelope without `properties.delivery_tag` or `delivery_info`, headers that are not an object. Depending on
   the exception the worker stopped (Unrecoverable error), or took it for a lost connection and reconnected,
   the message gone without a trace. Here every such item is checked before kombu sees it and goes to the
   dead-letter stream with its raw body; the worker goes on.
3. An envelope kombu accepts whose headers Celery cannot take (a task id missing, a time limit that is not a
   pair, a task name that is a list) raised out of Celery's consumer in the same way, or came back on every
   reconnect. Such a message is dead-lettered and acked where it is handed to Celery. Only Redis's own errors
   still go up: the consumer treats those as the lost connection they are.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from queue import Empty
from typing import Any, cast

import redis
import structlog
from celery.worker import state as worker_state
from kombu.message import Message
from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import dumps, loads

from dispatcher.state import dead_letter_stream

log = structlog.get_logger("workers.broker")


# Delivery tags of messages a channel still held when its connection was lost, for the next channel of this
# process to restore. A tag someone else already restored or acked is simply not found in `unacked`.
_orphaned: set[str] = set()
_orphaned_lock = threading.Lock()


class RedisBrokerChannel(kombu_redis.Channel):
    """kombu's channel to the Redis broker (a connection's session, not a contact channel), with the failure
    paths above closed."""

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
        """The decoded envelope, or None once an item kombu could not turn into a message is dead-lettered."""
        envelope: Any = None
        try:
            envelope = loads(bytes_to_str(item))
        except (ValueError, UnicodeDecodeError) as exc:
            reason: str | None = f"not a kombu message envelope: {type(exc).__name__}: {exc}"
        else:
            reason = envelope_problem(envelope, self.codecs)
        if reason is None:
            return cast(dict[str, Any], envelope)
        # The body as it came when the envelope has one (what the producer meant to send), else the whole item.
        body = envelope["body"] if isinstance(envelope, dict) and isinstance(envelope.get("body"), str) else item
        with self.conn_or_acquire() as client:
            entry = dead_letter_stream.record(client, queue=queue, task=_task_of(envelope), reason=reason, body=body,
                                       envelope=item)  # fmt: skip
        log.error("broker.dead_letter", queue=queue, reason=reason, dead_letter=entry)
        return None

    def basic_consume(self, queue: str, no_ack: bool, callback: Any, consumer_tag: str, **kwargs: Any) -> Any:
        return super().basic_consume(queue, no_ack, self._taking(callback), consumer_tag, **kwargs)

    def _taking(self, callback: Callable[[Message], Any]) -> Callable[[Message], Any]:
        """Celery's consumer callback, with a message it cannot take dead-lettered and acked instead of raised:
        raised, it stopped the worker or was taken for a lost connection (kombu counts a KeyError as one)."""

        def take(message: Message) -> Any:
            try:
                return callback(message)
            except REDIS_ERRORS:
                raise  # Redis itself: the consumer reconnects, the message is still in `unacked`
            except Exception as exc:
                if worker_state.should_stop is not None or worker_state.should_terminate is not None:
                    raise  # a pool already closing refuses any message: not this one's fault; it stays unacked
                self._refuse_taken(message, f"the worker could not take the message: {type(exc).__name__}: {exc}")
                return None

        return take

    def _refuse_taken(self, message: Message, reason: str) -> None:
        raw = getattr(message, "_raw", None)
        queue = str((message.delivery_info or {}).get("routing_key") or "")
        with self.conn_or_acquire() as client:
            entry = dead_letter_stream.record(client, queue=queue, task=_task_of(raw), reason=reason,
                                              body=message.body or b"",
                                              envelope=dumps(raw) if isinstance(raw, dict) else "")  # fmt: skip
        log.error("broker.dead_letter", queue=queue, reason=reason, dead_letter=entry)
        if not message.acknowledged:
            message.ack()  # out of `unacked`: it would come back after the visibility timeout and fail again


# Errors of Redis and of the socket under it; anything else raised while one message is handled is that
# message's fault.
REDIS_ERRORS = (redis.exceptions.RedisError, OSError)
DELIVERY_INFO = ("exchange", "routing_key")


def envelope_problem(envelope: Any, codecs: Mapping[str, Any]) -> str | None:
    """Why kombu could not turn this decoded list item into a message (it would raise), or None. `codecs`:
    the channel's body encodings (kombu knows base64)."""
    if not isinstance(envelope, dict) or not isinstance(envelope.get("properties"), dict):
        return "not a kombu message envelope (a JSON object with properties)"
    properties = envelope["properties"]
    tag = properties.get("delivery_tag")
    if not isinstance(tag, str) or not tag:
        return "not a kombu message envelope: properties.delivery_tag is missing or not text"
    info = properties.get("delivery_info")
    if not isinstance(info, dict) or not all(isinstance(info.get(key), str) for key in DELIVERY_INFO):
        return "not a kombu message envelope: properties.delivery_info needs exchange and routing_key as text"
    if envelope.get("headers") is not None and not isinstance(envelope["headers"], dict):
        return "not a kombu message envelope: headers is not a JSON object"
    body, encoding = envelope.get("body"), properties.get("body_encoding")
    if body is not None and not isinstance(body, str):
        return f"not a kombu message envelope: body is {type(body).__name__}, not text"
    if not encoding or (isinstance(encoding, str) and encoding.lower() == "utf-8"):  # kombu leaves the body as is
        return None
    if not isinstance(encoding, str) or encoding not in codecs:
        known = ", ".join(sorted(codecs))
        return f"not a kombu message envelope: properties.body_encoding {encoding!r} is not one of {known}, utf-8"
    if body:
        try:
            codecs[encoding].decode(body)
        except ValueError as exc:  # binascii.Error included
            return f"cannot decode the body: it is not {encoding} (properties.body_encoding): {exc}"
    return None


def _task_of(envelope: Any) -> str:
    headers = envelope.get("headers") if isinstance(envelope, dict) else None
    task = headers.get("task") if isinstance(headers, dict) else None
    return task if isinstance(task, str) else ""


class Transport(kombu_redis.Transport):
    Channel = RedisBrokerChannel


class SentinelBrokerChannel(RedisBrokerChannel, kombu_redis.SentinelChannel):
    pass


class SentinelTransport(kombu_redis.SentinelTransport):
    Channel = SentinelBrokerChannel


def transport_for(broker_url: str) -> str | None:
    """The transport to name for this URL (None: kombu's choice, for schemes this module does not cover)."""
    scheme = broker_url.partition("://")[0]
    return {"redis": f"{__name__}:Transport", "rediss": f"{__name__}:Transport",
            "sentinel": f"{__name__}:SentinelTransport"}.get(scheme)  # fmt: skip
