"""Ingest-and-plan throughput: accounts per second through the real engine into a real Redis, against a
raw redis-py pipelined write of the same keys measured in the same run, and Redis memory per account.

    python benchmarks/plan_throughput.py --accounts 1000000 --workers 2
    python benchmarks/plan_throughput.py --accounts 1000000 --workers 2 --experiment docs/examples/experiment.yaml

Each worker process takes a slice of accounts as NDJSON lines (what `dispatcher import` and the batch
API receive), validates them and upserts them in batches: load, plan, commit, exactly as in production.
The baseline writes byte-for-byte comparable keys (record hash, history entry, wake-up, audit entry) with
pipelined redis-py calls and no domain logic, so the ratio says what the domain costs over Redis itself.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis  # noqa: E402

from benchmarks._machine import speed_reference  # noqa: E402
from config.settings import DEFAULT_STRATEGY  # noqa: E402
from dispatcher.core.clock import ManualClock  # noqa: E402
from dispatcher.core.experiments.loading import load_experiment  # noqa: E402
from dispatcher.core.models import Account  # noqa: E402
from dispatcher.core.strategy import load_strategy  # noqa: E402
from dispatcher.engine import Engine  # noqa: E402
from dispatcher.importer import BATCH  # noqa: E402  (the batches `dispatcher import` and the API use)
from dispatcher.state.active_set import ActiveSet  # noqa: E402
from dispatcher.state.redis_keys import account_record_key, audit_key, history_key, wake_key  # noqa: E402
from dispatcher.state.redis_server import EmbeddedRedis  # noqa: E402
from dispatcher.state.store import Store  # noqa: E402
from dispatcher.wiring import tune_gc  # noqa: E402

NOW = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
ZONES = ["Asia/Shanghai", "America/New_York", "Europe/London", "Asia/Singapore"]


def account_line(index: int) -> bytes:
    """A varied but cheap-to-make account: the benchmark measures ingestion, not data generation."""
    due = date.fromordinal(NOW.date().toordinal() - 1 - index % 40)
    return json.dumps(
        {
            "id": f"B{index:08d}",
            "name": f"王小明 {index}" if index % 3 else f"Mary Smith {index}",
            "locale": "zh-CN" if index % 3 else "en",
            "timezone": ZONES[index % len(ZONES)],
            "phone": f"+86138{index:08d}",
            "email": f"user{index}@example.com",
            "balance": f"{1000 + index % 9000}.00",
            "minimum_payment": "100.00",
            "due_date": due.isoformat(),
        },
        ensure_ascii=False,
    ).encode()


def engine_worker(url: str, start: int, stop: int, shards: int, experiment: str | None = None) -> float:
    tune_gc()  # as every `dispatcher` command does
    store = Store.from_url(url, shards)
    if experiment is None:
        engine = Engine(store, load_strategy(Path(DEFAULT_STRATEGY)), ManualClock(NOW))
    else:  # each account planned by its own variant, the active set checked as every process checks it
        variants = load_experiment(Path(experiment))
        active = ActiveSet(store.redis, variants)
        engine = Engine(store, variants.champion.strategy, ManualClock(NOW), variants=variants, active=active)
    lines = [account_line(i) for i in range(start, stop)]
    began = time.perf_counter()
    for offset in range(0, len(lines), BATCH):
        accounts = [Account.model_validate_json(line) for line in lines[offset : offset + BATCH]]
        engine.upsert_many(accounts)
    return time.perf_counter() - began


def raw_worker(url: str, start: int, stop: int, shards: int) -> float:
    tune_gc()  # the same process settings for the baseline
    client = redis.Redis.from_url(url)
    lines = [account_line(i) for i in range(start, stop)]
    entry = json.dumps({"kind": "event", "at": NOW.isoformat(), "event": "account_created"})
    score = NOW.timestamp() + 3600
    began = time.perf_counter()
    for offset in range(0, len(lines), BATCH):
        pipe = client.pipeline(transaction=False)
        for index, line in enumerate(lines[offset : offset + BATCH], start=start + offset):
            account_id = f"B{index:08d}"
            shard = index % shards
            pipe.hset("raw" + account_record_key(account_id), mapping={"v": 1, "d": line})
            pipe.rpush("raw" + history_key(account_id), entry)
            pipe.zadd("raw" + wake_key(shard), {account_id: score})
            pipe.xadd("raw" + audit_key(shard), {"e": entry})
        pipe.execute()
    return time.perf_counter() - began


def run_parallel(target, url: str, accounts: int, workers: int, shards: int) -> float:
    """Wall time for `workers` processes to handle `accounts` between them."""
    step = -(-accounts // workers)
    slices = [(url, i * step, min(accounts, (i + 1) * step), shards) for i in range(workers)]
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        began = time.perf_counter()
        pool.starmap(target, slices)
        return time.perf_counter() - began


def used_memory(url: str) -> int:
    return int(redis.Redis.from_url(url).info("memory")["used_memory"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accounts", type=int, default=200_000, help="accounts to ingest (default 200000)")
    parser.add_argument("--workers", type=int, default=2, help="ingesting processes (default 2, one per core)")
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--experiment", help="an experiment file: plan each account by its own variant")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as state, EmbeddedRedis(Path(state), appendonly=False) as server:
        client = redis.Redis.from_url(server.url)
        base_memory = used_memory(server.url)
        raw_seconds = run_parallel(raw_worker, server.url, args.accounts, args.workers, args.shards)
        raw_memory = used_memory(server.url) - base_memory
        client.flushall()
        base_memory = used_memory(server.url)
        target = partial(engine_worker, experiment=args.experiment)
        engine_seconds = run_parallel(target, server.url, args.accounts, args.workers, args.shards)
        engine_memory = used_memory(server.url) - base_memory
        planned = sum(client.zcard(wake_key(shard)) for shard in range(args.shards))
    print(speed_reference())
    engine_rate, raw_rate = args.accounts / engine_seconds, args.accounts / raw_seconds
    print(f"accounts ingested and planned: {args.accounts} ({planned} with a wake-up) by {args.workers} workers"
          + (f", experiment {args.experiment}" if args.experiment else ""))  # fmt: skip
    print(f"engine: {engine_seconds:.1f} s, {engine_rate:,.0f} accounts/s")
    print(f"raw pipelined write of the same keys: {raw_seconds:.1f} s, {raw_rate:,.0f} accounts/s")
    print(f"ratio engine/raw: {engine_rate / raw_rate:.2f} (goal >= 0.25)")
    print(f"projected time for 1,000,000 accounts: {1_000_000 / engine_rate:.0f} s (goal <= 120)")
    per_engine, per_raw = engine_memory / args.accounts, raw_memory / args.accounts
    print(f"Redis memory per account: engine {per_engine:.0f} B, raw {per_raw:.0f} B")


if __name__ == "__main__":
    main()
