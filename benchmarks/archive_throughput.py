"""The record: archive throughput into PostgreSQL against a raw COPY of the same rows, and Redis memory
per account after a long simulation with the archiver running, against the same simulation without it.

    python benchmarks/archive_throughput.py --entries 200000 --accounts 1000 --days 120

Throughput: the audit streams are filled with `--entries` audit entries (three per stream entry, as a
commit writes several), then the real AuditArchiver moves them (COPY into staging, INSERT ... ON CONFLICT,
XTRIM). The baseline is PostgreSQL alone: the same rows, already expanded in Python (not timed), COPYed
straight into the same table with the same indexes and partitions. The ratio says what idempotence and
reading Redis cost over the bare COPY.

Memory: `dispatcher simulate`'s engine and outcome model over `--days` days; in the archived run the
archiver (audit, closed accounts after DISPATCHER_CLOSED_RETENTION_DAYS' default of 30) runs once every
simulated day. Redis memory is used_memory minus an empty server's, by key kind (MEMORY USAGE).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._machine import speed_reference  # noqa: E402
from config.settings import DEFAULT_STRATEGY  # noqa: E402
from dispatcher.core.clock import ManualClock  # noqa: E402
from dispatcher.core.strategy import load_strategy  # noqa: E402
from dispatcher.engine import Engine  # noqa: E402
from dispatcher.record.archive import AuditArchiver  # noqa: E402
from dispatcher.record.closed import ClosedMover  # noqa: E402
from dispatcher.record.db import migrate, open_pool  # noqa: E402
from dispatcher.record.pg_server import EmbeddedPostgres  # noqa: E402
from dispatcher.simulate import Simulation, load_model  # noqa: E402
from dispatcher.state.redis_server import EmbeddedRedis  # noqa: E402
from dispatcher.state.store import Store  # noqa: E402
from dispatcher.synthetic import synthetic_accounts  # noqa: E402

START = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
PER_WRITE = 3
COLUMNS = "shard, stream_ms, stream_seq, position, at, account_id, type, contact_id, channel, entry"


def fill(store: Store, entries: int) -> None:
    pipe = store.redis.pipeline(transaction=False)
    for write in range(entries // PER_WRITE):
        account = f"B{write % 50_000:08d}"
        at = (START + timedelta(seconds=write * 40)).isoformat()
        batch = [
            {"at": at, "type": "decision", "account_id": account, "contact_id": f"{account}/reminder/sms/{n}",
             "channel": "sms", "verdict": "defer", "rule": "window:sms", "until": at}
            for n in range(PER_WRITE)
        ]  # fmt: skip
        pipe.xadd(store.audit_key(store.shard_of(account)), {"e": json.dumps(batch)})
        if write % 5000 == 4999:
            pipe.execute()
    pipe.execute()


def expanded_rows(store: Store) -> bytes:
    """The rows the archiver writes, as COPY text, made before the clock starts."""
    out = io.StringIO()
    for shard in range(store.shards):
        for stream_id, fields in store.redis.xrange(store.audit_key(shard)):
            ms, seq = stream_id.split("-")
            for position, entry in enumerate(json.loads(fields["e"])):
                text = json.dumps(entry).replace("\\", "\\\\")
                out.write(f"{shard}\t{ms}\t{seq}\t{position}\t{entry['at']}\t{entry['account_id']}\t{entry['type']}\t")
                out.write(f"{entry['contact_id']}\t{entry['channel']}\t{text}\n")
    return out.getvalue().encode()


def throughput(redis_url: str, pg_url: str, entries: int) -> dict[str, float]:
    store = Store.from_url(redis_url)
    store.redis.flushall()
    fill(store, entries)
    rows = expanded_rows(store)
    pool = open_pool(pg_url)
    with pool.connection() as conn:
        conn.execute("TRUNCATE audit_entries")
    began = time.perf_counter()
    moved = AuditArchiver(store, pool, batch=5000).run()
    archive_seconds = time.perf_counter() - began
    assert moved.rows == entries // PER_WRITE * PER_WRITE, (moved, entries)
    entries = moved.rows
    with pool.connection() as conn:
        conn.execute("TRUNCATE audit_entries")
        conn.commit()
        began = time.perf_counter()
        with conn.cursor() as cur, cur.copy(f"COPY audit_entries ({COLUMNS}) FROM STDIN") as copy:
            for start in range(0, len(rows), 1 << 20):
                copy.write(rows[start : start + (1 << 20)])
        conn.commit()
        copy_seconds = time.perf_counter() - began
    pool.close()
    return {"archive_per_s": entries / archive_seconds, "copy_per_s": entries / copy_seconds}


def memory(redis_url: str, pg_url: str | None, accounts: int, days: int) -> dict[str, object]:
    store = Store.from_url(redis_url)
    store.redis.flushall()
    empty = int(store.redis.info("memory")["used_memory"])
    clock = ManualClock(START)
    engine = Engine(store, load_strategy(DEFAULT_STRATEGY), clock)
    tick: Callable[[float], None] | None = None
    if pg_url is not None:
        pool = open_pool(pg_url)
        with pool.connection() as conn:
            conn.execute("TRUNCATE audit_entries, closed_accounts")
        archiver, mover = AuditArchiver(store, pool), ClosedMover(store, pool, timedelta(days=30), page=5000)
        last = [clock.now().date()]

        def tick(_: float) -> None:
            if clock.now().date() != last[0]:
                last[0] = clock.now().date()
                archiver.run()
                mover.run_all(clock.now())

    began = time.perf_counter()
    Simulation(engine, clock, load_model(None), seed=1).run(synthetic_accounts(accounts, 1, START.date()), days, tick)
    seconds = time.perf_counter() - began
    used = int(store.redis.info("memory")["used_memory"]) - empty
    kinds: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    for key in store.redis.scan_iter(count=1000):
        kinds[key.rsplit(":", 1)[-1]] += int(store.redis.memory_usage(key, samples=0) or 0)
    for loaded in store.load_many(list(store.account_ids())):
        if loaded.record is not None:
            statuses[loaded.record.state.status] += 1
    in_redis = sum(statuses.values())
    return {
        "seconds": round(seconds, 1), "used_bytes": used, "accounts_in_redis": in_redis,
        "active": statuses["active"], "per_account_in_redis": used // max(in_redis, 1),
        "per_active_account": used // max(statuses["active"], 1),
        "by_kind_per_account_in_redis": {kind: size // max(in_redis, 1) for kind, size in kinds.most_common()},
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=200_000)
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--days", type=int, default=120)
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    print(f"machine: {speed_reference()}")
    with tempfile.TemporaryDirectory() as root, EmbeddedRedis(Path(root) / "redis", appendonly=False) as redis_server:
        pg = EmbeddedPostgres(Path(root) / "pg").start()
        migrate(pg.url)
        rates = throughput(redis_server.url, pg.url, args.entries)
        print(
            f"archive: {rates['archive_per_s']:,.0f} audit entries/s; raw COPY of the same rows: "
            f"{rates['copy_per_s']:,.0f}/s; ratio {rates['archive_per_s'] / rates['copy_per_s']:.2f}"
        )
        if not args.skip_memory:
            for label, url in (("without the archiver", None), ("with the archiver", pg.url)):
                found = memory(redis_server.url, url, args.accounts, args.days)
                print(f"redis after {args.days} days, {args.accounts} accounts, {label}: {json.dumps(found)}")
        pg.stop()


if __name__ == "__main__":
    main()
