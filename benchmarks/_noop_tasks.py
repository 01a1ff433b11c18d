"""The baseline task of benchmarks/dispatch_throughput.py: it takes the same batch a send task takes, counts
it in Redis and does nothing else, so the benchmark can tell when the last one ran."""

from __future__ import annotations

import redis

from config.settings import load_settings
from workers.app import app

DONE_KEY = "bench:noop:done"
_client: redis.Redis | None = None


@app.task(name="bench.noop")
def noop(payloads: list[dict[str, str]]) -> None:
    global _client
    if _client is None:  # one client per worker process, made after the fork; redis-py is thread-safe
        _client = redis.Redis.from_url(load_settings().redis_url or "")
    _client.incrby(DONE_KEY, len(payloads))
