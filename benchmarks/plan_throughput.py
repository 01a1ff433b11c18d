"""Ingest-and-plan throughput: accounts per second through the real engine into a real Redis, against a
raw redis-py pipelined write of the same keys measured in the same run, and Redis memory per account.

    python benchmarks/plan_throughput.py --accounts 1000000 --workers 2
    python benchmarks/plan_throughput.py --accounts 1000000 --workers 2 --experiment docs/examples/experiment.yaml
    python benchmarks/plan_throughput.py --accounts 100000 --cluster

With --cluster the same engine ingests the same accounts into a local three-primary Redis Cluster (a replica
each; the shard key layout, --cluster-shards shards) right after the single Redis, in the same run: the ratio
of the two is the cluster's overhead on this machine, and INFO commandstats summed over the primaries gives
the Redis commands per plan (docs/scaling.md turns them into capacity per added primary).

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
from dispatcher.state.redis_keys import account_record_key, audit_key, history_key, use_shard_layout, wake_key  # noqa: E402
from dispatcher.state.redis_server import EmbeddedRedis, LocalCluster  # noqa: E402
from dispatcher.state.store import Store  # noqa: E402
from dispatcher.state.topology.cluster import DispatcherCluster  # noqa: E402
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


def engine_worker(
    url: str, start: int, stop: int, shards: int, experiment: str | None = None, cluster: bool = False
) -> float:
    tune_gc()  # as every `dispatcher` command does
    if cluster:
        use_shard_layout(shards)
        store = Store(DispatcherCluster.from_url(url, decode_responses=True), shards)
    else:
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


def run_parallel(target, url: str, accounts: int, workers: int, shards: int, *more: object) -> float:
    """Wall time for `workers` processes to handle `accounts` between them."""
    step = -(-accounts // workers)
    slices = [(url, i * step, min(accounts, (i + 1) * step), shards, *more) for i in range(workers)]
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
    parser.add_argument("--cluster", action="store_true", help="also into a local 3-primary cluster, same run")
    parser.add_argument("--cluster-shards", type=int, default=64)
    args = parser.parse_args()
    if args.cluster:
        cluster_run(args)
        return
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


def command_calls(ports: list[int]) -> dict[str, int]:
    """INFO commandstats summed over these servers: calls per command (those inside scripts included), and
    their CPU seconds (user + system) in microseconds under `cpu_us`."""
    calls: dict[str, int] = {"cpu_us": 0}
    for port in ports:
        cpu = redis.Redis(port=port).info("cpu")
        calls["cpu_us"] += int((cpu["used_cpu_user"] + cpu["used_cpu_sys"]) * 1e6)
        for name, stats in redis.Redis(port=port).info("commandstats").items():
            calls[name] = calls.get(name, 0) + int(stats["calls"])
    return calls


def cluster_run(args: argparse.Namespace) -> None:
    """The engine into a single Redis, then into a local cluster, in one run; commands per plan on each."""
    with tempfile.TemporaryDirectory() as state:
        with EmbeddedRedis(Path(state) / "single", appendonly=False) as server:
            before = command_calls([server.port])
            single = run_parallel(engine_worker, server.url, args.accounts, args.workers, args.shards)
            single_calls = _delta(command_calls([server.port]), before)
        with LocalCluster(Path(state) / "cluster") as cluster:
            ports = [node.port for node in cluster.primary_nodes()]
            before = command_calls(ports)
            clustered = run_parallel(
                engine_worker, cluster.url, args.accounts, args.workers, args.cluster_shards, None, True
            )
            cluster_calls = _delta(command_calls(ports), before)
            keys = [int(redis.Redis(port=port).dbsize()) for port in ports]
    print(speed_reference())
    single_rate, cluster_rate = args.accounts / single, args.accounts / clustered
    print(f"accounts ingested and planned: {args.accounts} by {args.workers} workers")
    print(f"single Redis ({args.shards} shards): {single:.1f} s, {single_rate:,.0f} accounts/s")
    print(f"cluster, 3 primaries ({args.cluster_shards} shards): {clustered:.1f} s, {cluster_rate:,.0f} accounts/s")
    print(f"ratio cluster/single: {cluster_rate / single_rate:.2f} (goal >= 0.7)")
    print(f"keys per primary: {keys}")
    for label, calls in (("single", single_calls), ("cluster", cluster_calls)):
        cpu = calls.pop("cpu_us", 0)
        print(f"Redis CPU per plan, {label} (primaries summed): {cpu / args.accounts:.0f} us")
        total = sum(calls.values())
        top = ", ".join(f"{name.removeprefix('cmdstat_')} {count / args.accounts:.2f}"
                        for name, count in sorted(calls.items(), key=lambda item: -item[1])[:6])  # fmt: skip
        print(f"Redis commands per plan, {label}: {total / args.accounts:.2f} ({top})")


def _delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    skip = {"cmdstat_info", "cmdstat_cluster", "cmdstat_command", "cmdstat_ping", "cmdstat_script", "cmdstat_dbsize"}
    changed = {name: count - before.get(name, 0) for name, count in after.items() if name not in skip}
    return {name: count for name, count in changed.items() if count}


if __name__ == "__main__":
    main()
