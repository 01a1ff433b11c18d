"""Prometheus metrics: every name the dispatcher exports is defined here (docs/operations.md, "Metrics and logs").

Counters and histograms are observed in the process that does the work (the API, a worker or its prefork
children) and scraped from it: the API serves /metrics, a worker with `--metrics-port` serves its children's
values through prometheus_client's multiprocess mode (workers/metrics_exporter.py). Cluster-wide state (queue depths,
accounts by stage and status) is read from Redis at scrape time by the collectors below, which only the API
registers, so no series is exported twice.

Every metric here has at least one label: a labelled metric creates its values on first use, which is what
lets a worker switch prometheus_client to multiprocess mode after this module was imported.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

import redis
from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics import MetricWrapperBase

from dispatcher.core.models import AccountRecord, Channel
from dispatcher.state.redis_keys import UNACKED, account_records_pattern, queue_keys, shard_counts_key
from dispatcher.state.store import Store


def queue_names() -> tuple[str, ...]:
    """The Celery queues, as workers/app.py names them: the plan queue and one per registered channel."""
    return ("plan", *(channel.value for channel in Channel))


QUEUES = queue_names()  # as the process started; a channel registered later is in queue_names()

CONTACTS = Counter(
    "dispatcher_contacts", "Contacts through the send pipeline, by how each one ended this time.",
    ["channel", "provider", "result"],
)  # fmt: skip
PLAN_DECISIONS = Counter(
    "dispatcher_plan_decisions", "Planner verdicts on candidate contacts (every re-plan that reaches one).",
    ["channel", "verdict", "rule"],
)  # fmt: skip
LAST_LOOK = Counter(
    "dispatcher_last_look", "Contacts the last look before sending deferred or denied, by rule.",
    ["channel", "verdict", "rule"],
)  # fmt: skip
RATE_LIMIT_WAITS = Counter(
    "dispatcher_rate_limit_waits", "Times a send met its provider's rate limit.", ["channel", "provider"]
)
RATE_LIMIT_WAIT_SECONDS = Counter(
    "dispatcher_rate_limit_wait_seconds", "Seconds of wait the rate limit asked for.", ["channel", "provider"]
)
PROVIDER_LATENCY = Histogram(
    "dispatcher_provider_request_seconds", "One request to a provider, answered or not.", ["channel", "provider"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)  # fmt: skip
PROVIDER_ERRORS = Counter(
    "dispatcher_provider_errors", "Failed provider requests: transient, permanent, ambiguous (may have left) or "
    "deferred (this recipient, for now).", ["channel", "provider", "kind"],
)  # fmt: skip
PROVIDER_MISCONFIGURED = Counter(
    "dispatcher_provider_misconfigured",
    "A provider refused our configuration (401/403/404, unknown host, TLS): its circuit opened; `setting` is "
    "the DISPATCHER_* variable that looks wrong; `provider` is its key (channels.provider_key).",
    ["provider", "setting"],
)  # fmt: skip
WAKEUP_LAG = Histogram(
    "dispatcher_wakeup_lag_seconds", "From an account's planned wake-up to its re-plan.", ["stage"],
    buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 3600),
)  # fmt: skip
HTTP_REQUESTS = Counter(
    "dispatcher_http_requests", "API requests by route template and status.", ["method", "route", "status"]
)
HTTP_DURATION = Histogram(
    "dispatcher_http_request_duration_seconds", "API request duration by route template.", ["method", "route"]
)
ARCHIVED = Counter(
    "dispatcher_archived", "What the archiver moved from Redis to the record (audit rows, history entries, "
    "closed accounts) or erased there (accounts pseudonymised).", ["kind"],
)  # fmt: skip
ARCHIVE_BATCHES = Counter("dispatcher_archive_batches", "Audit stream batches committed to the record.", ["shard"])
DEAD_LETTERS = Counter(
    "dispatcher_dead_letters", "Entries written to the dead-letter stream (a refused send task is one entry "
    "whatever its count of contacts), by queue.", ["queue"],
)  # fmt: skip
DEAD_LETTERS_DROPPED = Counter(
    "dispatcher_dead_letters_dropped", "Dead letters trimmed from the stream, oldest first, to keep it at its cap "
    "(about 100,000 entries; operators' purges are not counted).", ["cause"],
)  # fmt: skip
# Every metric defined above, for the dashboard test and the exporter's check (a new one needs no listing).
ALL = tuple(value for value in list(globals().values()) if isinstance(value, MetricWrapperBase))
SCRAPED = (
    "dispatcher_queue_depth",
    "dispatcher_unacked_messages",
    "dispatcher_accounts",
    "dispatcher_archive_lag_seconds",
)


def tally(metric: Counter, labels: Iterable[tuple[str, ...]]) -> None:
    """Count label tuples tallied first, so a batch costs one label lookup per distinct tuple, not per item."""
    for values, count in Tally(labels).items():
        metric.labels(*values).inc(count)


def observe_commits(store: Store, committed: Sequence[tuple[Any, Any]], now: datetime, due: bool) -> None:
    """After a batch commit (engine): planner decisions, the wake-up lag of accounts that came due (`due`: the
    pump's re-plan) and the moves between (stage, status) in the cluster-wide account counts.

    `committed` holds (Commit, Plan) pairs that were written. The counts move by exact deltas, since a commit
    succeeds only against the record it read; one pipeline per batch, and only when something moved."""
    tally(PLAN_DECISIONS, ((d.channel.value, d.verdict, d.rule or "") for _, plan in committed for d in plan.decisions))
    moves: Tally[tuple[int, str]] = Tally()
    lags: dict[str, list[float]] = {}
    for commit, _ in committed:
        before, after = commit.loaded.record, commit.record
        shard = store.shard_of(after.account.id)
        if before is not None:
            moves[shard, _field(before)] -= 1
            if due and before.next_wakeup is not None and before.next_wakeup <= now:
                # An account woken before its planned time (an event, a wait) has no lag to speak of: skipped.
                lags.setdefault(before.stage or "none", []).append((now - before.next_wakeup).total_seconds())
        moves[shard, _field(after)] += 1
    for stage, values in lags.items():
        child = WAKEUP_LAG.labels(stage)
        for value in values:
            child.observe(value)
    changed = {key: delta for key, delta in moves.items() if delta}
    if changed:
        pipe = store.redis.pipeline(transaction=False)
        for (shard, field), delta in changed.items():
            pipe.hincrby(shard_counts_key(shard), field, delta)
        pipe.execute()


class ClusterCollector:
    """Queue depths (LLEN of kombu's lists), unacked messages and accounts by stage and status, read from Redis
    at scrape time in one round trip: a few commands per queue and shard, whatever the number of accounts."""

    def __init__(self, store: Store, queues: Sequence[str] | None = None) -> None:
        self.store = store
        self.queues = queue_names() if queues is None else queues

    def collect(self) -> Iterator[GaugeMetricFamily]:
        # kombu's lists are the broker's (DISPATCHER_BROKER_URL), the counts and streams the state's; one Redis
        # for both reads all in one round trip.
        split = self.store.broker is not self.store.redis
        queue_pipe = self.store.broker.pipeline(transaction=False)
        pipe = self.store.redis.pipeline(transaction=False) if split else queue_pipe
        lists = [queue_keys(queue) for queue in self.queues]
        for key in (key for keys in lists for key in keys):
            queue_pipe.llen(key)
        queue_pipe.hlen(UNACKED)
        for shard in range(self.store.shards):
            pipe.hgetall(shard_counts_key(shard))
        for shard in range(self.store.shards):
            pipe.xrange(self.store.audit_key(shard), "-", "+", count=1)
        pipe.time()
        try:
            replies = (queue_pipe.execute() if split else []) + pipe.execute()
        except redis.RedisError:
            return  # Redis away: these series are absent from this scrape, the process's own are still served
        depth = GaugeMetricFamily("dispatcher_queue_depth", "Messages waiting on a Celery queue.", labels=["queue"])
        start = 0
        for queue, keys in zip(self.queues, lists, strict=True):
            depth.add_metric([queue], sum(replies[start : start + len(keys)]))
            start += len(keys)
        yield depth
        unacked = start
        yield GaugeMetricFamily(
            "dispatcher_unacked_messages", "Messages delivered to a worker and not yet acked (countdowns included).",
            value=replies[unacked],
        )  # fmt: skip
        shards = self.store.shards
        oldest, (seconds, micros) = replies[unacked + 1 + shards : -1], replies[-1]
        yield GaugeMetricFamily(
            "dispatcher_archive_lag_seconds", "Age of the oldest audit entry not yet archived (0: all archived).",
            value=_lag(oldest, seconds * 1000 + micros // 1000),
        )  # fmt: skip
        counts: Tally[str] = Tally()
        for shard_counts in replies[unacked + 1 : unacked + 1 + shards]:
            counts.update({_text(field): int(count) for field, count in shard_counts.items()})
        accounts = GaugeMetricFamily("dispatcher_accounts", "Accounts by stage and status.", labels=["stage", "status"])
        for field, count in sorted(counts.items()):
            stage, _, status = field.partition("\t")
            accounts.add_metric([stage, status], count)
        yield accounts


def _lag(oldest: Sequence[list[tuple[str, Any]]], now_ms: int) -> float:
    """From the first entry of each shard's stream (ids are Redis's clock in ms) to Redis's clock now."""
    firsts = [int(_text(entries[0][0]).partition("-")[0]) for entries in oldest if entries]
    return max(0.0, (now_ms - min(firsts)) / 1000) if firsts else 0.0


def recount_accounts(store: Store, batch: int = 1000) -> dict[str, int]:
    """Rebuild the account counts from every record (one full scan): for a store written before the counts
    existed. Run it while nothing writes, or the counts drift by what was written during the scan. Returns the
    cluster's counts."""
    client = store.redis
    counts: Tally[tuple[int, str]] = Tally()
    keys = [_text(key) for key in client.scan_iter(match=account_records_pattern(), count=batch)]
    for start in range(0, len(keys), batch):
        pipe = client.pipeline(transaction=False)
        for key in keys[start : start + batch]:
            pipe.hget(key, "d")
        for raw in pipe.execute():
            if raw is not None:
                record = AccountRecord.model_validate_json(raw)
                counts[store.shard_of(record.account.id), _field(record)] += 1
    pipe = client.pipeline(transaction=False)
    for shard in range(store.shards):
        pipe.delete(shard_counts_key(shard))
        mapping = {field: count for (where, field), count in counts.items() if where == shard}
        if mapping:
            pipe.hset(shard_counts_key(shard), mapping=mapping)
    pipe.execute()
    total: Tally[str] = Tally()
    for (_, field), count in counts.items():
        total[field] += count
    return dict(total)


def metric_names() -> set[str]:
    """Every family name exported, as PromQL sees it without the _total/_bucket/_sum/_count suffixes."""
    return {family.name for metric in ALL for family in metric.describe()} | set(SCRAPED)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _field(record: AccountRecord) -> str:
    return f"{record.stage or 'none'}\t{record.state.status}"
