"""Wiring from settings to a running engine: Redis (configured or embedded), store, strategy, clock.

The one composition of the engine: `dispatcher` commands and the API open it here, the workers build it
through `build_engine` too, so every process reads the clock and the strategy the same way.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from config.providers import declared_providers
from config.settings import Settings
from dispatcher.core.clock import Clock, deployment_clock
from dispatcher.core.experiments.arms import VariantSet
from dispatcher.core.experiments.loading import load_variants
from dispatcher.core.strategy import Strategy
from dispatcher.engine import Engine, RecordRequired, Restorer
from dispatcher.state.active_set import ActiveSet
from dispatcher.state.redis_keys import use_shard_layout
from dispatcher.state.redis_server import redis_url
from dispatcher.state.store import Store
from dispatcher.state.topology.connections import broker_target, layout_is_shard, state_target

# CPython collects its youngest generation every 700 allocations. Ingesting and planning allocate tens of
# thousands of short-lived objects per batch, and those collections took a quarter of the ingest CPU
# (plan benchmark, one process: 161 -> 119 us per account). Fewer, larger young collections free the same
# garbage; the older generations are visited less often too. Every `dispatcher` command sets this.
GC_THRESHOLDS = (20_000, 50, 100)


def tune_gc() -> None:
    gc.set_threshold(*GC_THRESHOLDS)


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    url: str
    store: Store
    strategy: Strategy  # the champion's
    engine: Engine
    variants: VariantSet


def clock_from(settings: Settings) -> Clock:
    """The deployment's one clock (DISPATCHER_CLOCK_*): the API's, the beat's and every worker's."""
    return deployment_clock(settings.clock_start, settings.clock_factor, settings.clock_origin)


class RecordOnFirstUse:
    """The engine's restorer (dispatcher.record.closed), on the record this deployment has: the configured
    DISPATCHER_DATABASE_URL or the embedded server its owner runs (migrated first). Opened when a moved account is first
    named again, so a process that never meets one never connects (nor loads psycopg); with no record at
    all, a moved account is refused (RecordRequired), never started afresh."""

    def __init__(self, settings: Settings, store: Store):
        self.settings = settings
        self.store = store
        self._restorer: Restorer | None = None

    def __call__(self, account_ids: Sequence[str]) -> None:
        if self._restorer is None:
            from dispatcher.record.closed import RecordRestorer
            from dispatcher.record.db import open_record, record_url

            url = record_url(self.settings.database_url, self.settings.state_dir)  # RecordUnavailable: try later
            if url is None:
                raise RecordRequired(account_ids)
            self._restorer = RecordRestorer(self.store, open_record(url, max_size=2))
        self._restorer(account_ids)


def open_store(settings: Settings, url: str | None = None, history_cache: int = 0) -> Store:
    """The store on the deployment's Redis (single, Sentinel or Cluster; `url`: the state's address in use,
    e.g. the embedded server's), with the broker's client and the key layout (dispatcher.state.topology.connections)."""
    state = state_target(settings, url)
    use_shard_layout(settings.schedule_shards if layout_is_shard(settings) else None)
    client = state.client()
    broker = client if not (settings.broker_url or state.cluster) else broker_target(settings, url).client()
    replicas = settings.claim_replicas if settings.claim_replicas is not None else (1 if state.cluster else 0)
    return Store(
        client, settings.schedule_shards, history_cache, broker=broker, claim_replicas=replicas,
        claim_replica_timeout_ms=settings.claim_replica_timeout_ms,
    )  # fmt: skip


def variants_from(settings: Settings, strategy: Strategy | None = None) -> VariantSet:
    """The strategies this process plans with: `strategy` alone if given (tests, the simulation), else the
    experiment file's (DISPATCHER_EXPERIMENT) or the one strategy file as the champion."""
    if strategy is not None:
        return VariantSet.single(strategy)
    return load_variants(settings.experiment, settings.strategy_path)


def build_engine(
    settings: Settings, url: str, clock: Clock | None = None, strategy: Strategy | None = None, history_cache: int = 0,
    variants: VariantSet | None = None,
) -> Runtime:  # fmt: skip
    """Store, strategy and engine on the Redis at `url`: what every process builds, commands, the API and
    the workers alike (workers/process_runtime.py adds the adapters and the deliverer). The engine publishes
    the process's variant set as the active one at its first plan unless one is, and refuses to plan while
    the two differ (dispatcher.state.active_set)."""
    variants = variants or variants_from(settings, strategy)
    used = {channel.value for arm in variants.arms for _, channel in arm.strategy.channels_used()}
    settings.refuse_channel_settings(used)
    settings.refuse_unknown_providers(declared_providers())
    store = open_store(settings, url, history_cache)
    active = ActiveSet(store.redis, variants)  # published at the first plan if no process did before: no I/O here
    engine = Engine(
        store, variants.champion.strategy, clock or clock_from(settings), restorer=RecordOnFirstUse(settings, store),
        variants=variants, active=active,
    )  # fmt: skip
    return Runtime(settings, url, store, variants.champion.strategy, engine, variants)


@contextlib.contextmanager
def open_runtime(
    settings: Settings, clock: Clock | None = None, strategy: Strategy | None = None, history_cache: int = 0,
    variants: VariantSet | None = None,
) -> Iterator[Runtime]:  # fmt: skip
    """Everything a command needs, torn down (embedded Redis included) when the block ends."""
    variants = variants or variants_from(settings, strategy)  # a broken file stops before Redis starts
    with redis_url(settings.redis_url, settings.state_dir) as url:
        runtime = build_engine(settings, url, clock, history_cache=history_cache, variants=variants)
        try:
            yield runtime
        finally:
            runtime.store.redis.close()
