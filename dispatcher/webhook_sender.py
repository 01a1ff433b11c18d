"""The sender: each endpoint's due accounts → one signed POST per event, in order per account, every attempt kept.

A round per endpoint: lease up to `limit` due accounts (dispatcher.state.webhook_outbox), check the target
again (dispatcher.webhook_targets: the name may resolve elsewhere now), then for each account send its queue's
events in order until one fails, up to `concurrency` accounts side by side (their round trips overlap; one
account's events never do); one step per account drops what was delivered and schedules the failed head.

What an answer means (Standard Webhooks):
- 2xx: delivered.
- 410 Gone: the receiver wants no more: the endpoint is disabled (its queues kept; enabled again by an operator).
- 429: the whole endpoint waits what Retry-After says (else the schedule's next wait); the head is retried then.
- 5xx with Retry-After: the head is retried after it; otherwise, any other answer, a timeout or a refused
  connection: after the schedule's next wait (DISPATCHER_WEBHOOK_RETRY_SCHEDULE, with jitter). Past the
  schedule's end the event has failed for good: kept in the endpoint's failed events (`dispatcher callbacks
  retry` puts it back) and the account's next event goes.
- The breaker: `BREAKER_THRESHOLD` failed attempts in a row across the endpoint's accounts stop its rounds for
  `BREAKER_SECONDS`; then a round of one attempt probes it, and one success closes it. A receiver down for
  hours so costs one attempt per probe, not one per account, and the accounts' own retries are not spent.

The schedule is the injected clock's (tests and the demo move it); `webhook-timestamp` is the wall clock's,
which is what a receiver compares it with to refuse a replay.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx

from config.settings import Settings
from dispatcher.core.clock import Clock
from dispatcher.core.webhook_events import retry_after_seconds, retry_delay, signature_header
from dispatcher.state.store import Store
from dispatcher.state.webhook_endpoints import Endpoint, EndpointRegistry
from dispatcher.state.webhook_outbox import Finish, Outbox, QueuedEvent
from dispatcher.webhook_relay import ArchiveReader, Relay
from dispatcher.webhook_targets import Resolver, TargetRefused, check_target

BREAKER_THRESHOLD = 5
BREAKER_SECONDS = 30.0
USER_AGENT = "collections-dispatcher-callbacks/1"


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    schedule: Sequence[float]
    jitter: float = 0.1
    timeout: float = 15.0
    allowed_hosts: Collection[str] = ()
    production: bool = False
    concurrency: int = 8  # accounts sent to side by side in a round (each account's events stay in order)

    @property
    def lease(self) -> float:
        """How long a round holds an account: time for a few timed-out attempts, and a margin."""
        return self.timeout * 4 + 30.0


@dataclass(frozen=True, slots=True)
class Answer:
    status: int | None  # None: no HTTP answer (refused, timeout, target refused)
    error: str | None = None
    retry_after: str | None = None
    elapsed_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass
class Round:
    """What a delivery pass did, summed over endpoints."""

    attempts: int = 0
    delivered: int = 0
    failed: int = 0
    dead: int = 0
    disabled: list[str] = field(default_factory=list)


@dataclass
class _Turn:
    """One account's part of a round: how it ended (None: not tried, the round stopped first), its attempts."""

    account_id: str
    finish: Finish | None = None
    attempts: list[dict[str, object]] = field(default_factory=list)
    done: Round = field(default_factory=Round)


class CallbackSender:
    def __init__(
        self,
        registry: EndpointRegistry,
        outbox: Outbox,
        clock: Clock,
        policy: DeliveryPolicy,
        *,
        http: httpx.Client | None = None,
        resolver: Resolver | None = None,
        wallclock: Callable[[], float] = time.time,
        draw: random.Random | None = None,
    ):
        self.registry = registry
        self.outbox = outbox
        self.clock = clock
        self.policy = policy
        # trust_env: HTTPS_PROXY / NO_PROXY and SSL_CERT_FILE apply, as for the providers' clients.
        self.http = http or httpx.Client(timeout=policy.timeout, follow_redirects=False)
        self.resolver = resolver
        self.wallclock = wallclock
        self.draw = draw or random.Random()
        self._pool: ThreadPoolExecutor | None = None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        self.http.close()

    def deliver_due(self, limit: int = 50, per_account: int = 10) -> Round:
        """One round for every enabled endpoint whose breaker is closed."""
        done = Round()
        for endpoint in self.registry.enabled():
            if endpoint.open_until <= self.clock.now().timestamp():
                self._endpoint_round(endpoint, limit, per_account, done)
        return done

    def _refusal(self, endpoint: Endpoint) -> Answer | None:
        try:
            if self.resolver is None:
                check_target(endpoint.url, self.policy.allowed_hosts, self.policy.production)
            else:
                check_target(endpoint.url, self.policy.allowed_hosts, self.policy.production, self.resolver)
        except TargetRefused as exc:
            return Answer(None, f"target refused: {exc}")
        return None

    def _endpoint_round(self, endpoint: Endpoint, limit: int, per_account: int, done: Round) -> None:
        now = self.clock.now().timestamp()
        if endpoint.failures >= BREAKER_THRESHOLD:  # half-open: one attempt probes the receiver
            limit = per_account = 1
        accounts = self.outbox.take(endpoint.id, now, self.policy.lease, limit)
        if not accounts:
            return
        refused = self._refusal(endpoint)
        heads = self.outbox.heads(endpoint.id, accounts, per_account)
        tries = self.outbox.tries(endpoint.id, accounts)
        stop = threading.Event()

        def turn(account_id: str) -> _Turn:
            return self._turn(endpoint, account_id, heads[account_id], tries.get(account_id, 0), refused, now, stop)

        # Accounts go side by side (each one's events in order): a receiver's round trips overlap.
        if self.policy.concurrency > 1 and len(accounts) > 1:
            turns = list(self._executor().map(turn, accounts))
        else:
            turns = [turn(account_id) for account_id in accounts]
        finishes = [t.finish for t in turns if t.finish is not None]
        self.outbox.finish(endpoint.id, finishes, now)
        self.outbox.release(endpoint.id, [t.account_id for t in turns if t.finish is None], now)
        self.outbox.record_attempts(endpoint.id, [attempt for t in turns for attempt in t.attempts])
        for t in turns:
            done.attempts += t.done.attempts
            done.delivered += t.done.delivered
            done.failed += t.done.failed
            done.dead += t.done.dead
            done.disabled += t.done.disabled
        if any(t.done.delivered for t in turns) and (endpoint.failures or endpoint.open_until):
            self.registry.succeeded(endpoint.id)

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.policy.concurrency, thread_name_prefix="callbacks")
        return self._pool

    def _turn(
        self,
        endpoint: Endpoint,
        account_id: str,
        events: list[QueuedEvent],
        failures: int,
        refused: Answer | None,
        now: float,
        stop: threading.Event,
    ) -> _Turn:
        """One account's events in order until one fails; nothing when the round has stopped already."""
        turn = _Turn(account_id)
        if stop.is_set():
            return turn
        delivered: list[str] = []
        for event in events:
            answer = refused or self._post(endpoint, event, now)
            turn.done.attempts += 1
            if answer.ok:
                delivered.append(event.id)
                turn.done.delivered += 1
                turn.attempts.append(_attempt(event, answer, now, "delivered"))
                continue
            finish, stopped = self._failed(endpoint, event, answer, failures + 1, now, turn.done)
            if stopped:
                stop.set()
            turn.finish = Finish(account_id, delivered, finish.dead, finish.tries, finish.due_at)
            turn.attempts.append(_attempt(event, answer, now, _verdict(turn.finish, answer), finish.due_at))
            return turn
        turn.finish = Finish(account_id, delivered)
        return turn

    def _failed(
        self, endpoint: Endpoint, event: QueuedEvent, answer: Answer, failures: int, now: float, done: Round
    ) -> tuple[Finish, bool]:
        """How a failed attempt ends the account's turn, and whether the endpoint's round stops here."""
        done.failed += 1
        if answer.status == 410:
            self.registry.disable(endpoint.id, "the receiver answered 410 Gone")
            done.disabled.append(endpoint.id)
            return Finish(event.account_id, tries=failures - 1, due_at=now), True
        ceiling = max(self.policy.schedule)
        honoured = answer.status == 429 or (answer.status is not None and answer.status >= 500)
        told = retry_after_seconds(answer.retry_after, self.clock.now(), ceiling) if honoured else None
        wait = told if told is not None else retry_delay(failures, self.policy.schedule, self.policy.jitter, self.draw)
        if answer.status == 429:
            self.registry.pause(endpoint.id, wait if wait is not None else self.policy.schedule[0])
            return Finish(event.account_id, tries=failures, due_at=now + (wait or 0.0)), True
        stop = self.registry.failed(endpoint.id, BREAKER_THRESHOLD, BREAKER_SECONDS)
        if wait is None:  # the schedule is spent: failed for good, the account's next event goes
            done.dead += 1
            return Finish(event.account_id, dead=[event.id], tries=0, due_at=now), stop
        return Finish(event.account_id, tries=failures, due_at=now + wait), stop

    def _post(self, endpoint: Endpoint, event: QueuedEvent, now: float) -> Answer:
        timestamp = int(self.wallclock())
        body = event.body.encode("utf-8")
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": event.id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature_header(endpoint.secrets_at(now), event.id, timestamp, body),
        }
        started = time.perf_counter()
        try:
            response = self.http.post(endpoint.url, content=body, headers=headers, timeout=self.policy.timeout)
        except httpx.TimeoutException:
            return Answer(None, "timeout", elapsed_ms=_since(started))
        except httpx.HTTPError as exc:
            return Answer(None, f"{type(exc).__name__}: {exc}"[:300], elapsed_ms=_since(started))
        return Answer(response.status_code, None, response.headers.get("retry-after"), _since(started))


def _since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


def _verdict(finish: Finish, answer: Answer) -> str:
    if answer.status == 410:
        return "endpoint_disabled"
    if finish.dead:
        return "failed_for_good"
    return "retry_scheduled"


def _attempt(
    event: QueuedEvent, answer: Answer, now: float, verdict: str, next_at: float | None = None
) -> dict[str, object]:
    return {
        "event_id": event.id, "type": event.type, "account_id": event.account_id, "at": now,
        "status": answer.status, "error": answer.error, "elapsed_ms": answer.elapsed_ms, "verdict": verdict,
        "next_attempt_at": next_at if verdict == "retry_scheduled" else None,
    }  # fmt: skip


def policy_from(settings: Settings) -> DeliveryPolicy:
    """The delivery policy the DISPATCHER_WEBHOOK_* settings describe."""
    return DeliveryPolicy(
        schedule=settings.webhook_retry_schedule, jitter=settings.webhook_retry_jitter,
        timeout=settings.webhook_timeout_seconds, allowed_hosts=frozenset(settings.webhook_allowed_hosts),
        production=settings.env == "production",
    )  # fmt: skip


def callbacks_for(
    store: Store, clock: Clock, settings: Settings, archive: ArchiveReader | None = None
) -> tuple[Relay, CallbackSender]:
    """The relay and the sender over this store, on the deployment's clock (the workers, the CLI, the tests);
    `archive` serves a relay the streams were trimmed past (dispatcher.record.archive.ArchivedStream)."""
    registry = EndpointRegistry(store.redis, store.shards, lambda: clock.now().timestamp())
    outbox = Outbox(store.redis)
    relay = Relay(store, registry, outbox, clock, archive=archive)
    return relay, CallbackSender(registry, outbox, clock, policy_from(settings))
