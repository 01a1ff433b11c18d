"""Wiring from settings to a running engine: Redis (configured or embedded), store, strategy, clock."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from dataclasses import dataclass

from config.settings import Settings
from dispatcher.clock import Clock, deployment_clock
from dispatcher.engine import Engine
from dispatcher.redis_server import redis_url
from dispatcher.store import Store
from dispatcher.strategy import Strategy, load_strategy

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
    strategy: Strategy
    engine: Engine


def _clock(settings: Settings) -> Clock:
    """The deployment's one clock (DISPATCHER_CLOCK_*), the API's as much as the workers'."""
    return deployment_clock(settings.clock_start, settings.clock_factor, settings.clock_origin)


@contextlib.contextmanager
def open_runtime(
    settings: Settings, clock: Clock | None = None, strategy: Strategy | None = None, history_cache: int = 0
) -> Iterator[Runtime]:
    """Everything a command needs, torn down (embedded Redis included) when the block ends."""
    strategy = strategy or load_strategy(settings.strategy_path)
    with redis_url(settings.redis_url, settings.state_dir) as url:
        store = Store.from_url(url, settings.schedule_shards, history_cache)
        try:
            yield Runtime(settings, url, store, strategy, Engine(store, strategy, clock or _clock(settings)))
        finally:
            store.redis.close()
