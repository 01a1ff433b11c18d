"""Redis memory per active account over a long simulation of a staggered book, with the archiver running.

    python benchmarks/redis_memory.py --accounts 2000 --days 120

`dispatcher simulate`'s engine and outcome model on a manual clock, but the book arrives over the run:
`--accounts / --days` accounts fall due each simulated day (one day past due when they arrive), so the
active set fills and then holds steady instead of ageing together. Once a simulated day the archiver does
what its task does (workers/archiver.py): the audit streams to PostgreSQL, history past the planner's
look-back to PostgreSQL, closed accounts out of Redis after 30 days (the default retention).

At each checkpoint it prints Redis memory (used_memory minus an empty server's) per active account, and by
key kind (MEMORY USAGE) per account in Redis; the baseline is the bare account record (the `acct` hash
alone, per account), so the ratio says what everything else costs on top of the record itself.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._machine import speed_reference  # noqa: E402
from config.settings import DEFAULT_STRATEGY  # noqa: E402
from dispatcher.clock import ManualClock  # noqa: E402
from dispatcher.engine import Engine  # noqa: E402
from dispatcher.models import Account  # noqa: E402
from dispatcher.pg_server import EmbeddedPostgres  # noqa: E402
from dispatcher.record.archive import AuditArchiver  # noqa: E402
from dispatcher.record.closed import ClosedMover  # noqa: E402
from dispatcher.record.db import migrate, open_pool  # noqa: E402
from dispatcher.record.history import HistoryTrimmer  # noqa: E402
from dispatcher.redis_keys import account_record_key, claims_key, history_key  # noqa: E402
from dispatcher.redis_server import EmbeddedRedis  # noqa: E402
from dispatcher.simulate import Simulation, load_model  # noqa: E402
from dispatcher.store import Store  # noqa: E402
from dispatcher.strategy import load_strategy  # noqa: E402
from dispatcher.synthetic import synthetic_accounts  # noqa: E402

START = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
GOAL = 4096


def staggered(accounts: int, days: int) -> list[tuple[datetime, list[Account]]]:
    """The book in daily arrivals, each account one day past due on the day it arrives."""
    book = synthetic_accounts(accounts, 1, START.date())
    arrivals = []
    for day in range(days):
        batch = book[day * accounts // days : (day + 1) * accounts // days]
        due = START.date() + timedelta(days=day - 1)
        arrivals.append((START + timedelta(days=day), [a.model_copy(update={"due_date": due}) for a in batch]))
    return arrivals


def measure(store: Store, empty: int) -> dict[str, object]:
    used = int(store.redis.info("memory")["used_memory"]) - empty
    kinds: Counter[str] = Counter()
    for key in store.redis.scan_iter(count=1000):
        kinds[key.rsplit(":", 1)[-1]] += int(store.redis.memory_usage(key, samples=0) or 0)
    statuses: Counter[str] = Counter()
    by_status: dict[str, Counter[str]] = {}
    for loaded in store.load_many(list(store.account_ids())):
        if loaded.record is not None:
            status = loaded.record.state.status
            statuses[status] += 1
            sizes = by_status.setdefault(status, Counter())
            for part, key_of in (("acct", account_record_key), ("hist", history_key), ("claims", claims_key)):
                sizes[part] += int(store.redis.memory_usage(key_of(loaded.account_id), samples=0) or 0)
    in_redis, active = sum(statuses.values()), statuses["active"]
    record = kinds["acct"] // max(in_redis, 1)
    per_active = used // max(active, 1)
    return {
        "active": active, "in_redis": in_redis, "used_bytes": used, "per_active_account": per_active,
        "record_bytes": record, "ratio_to_record": round(per_active / max(record, 1), 2),
        "by_kind_per_account_in_redis": {kind: size // max(in_redis, 1) for kind, size in kinds.most_common(8)},
        "per_account_by_status": {
            status: {"accounts": statuses[status], **{part: size // statuses[status] for part, size in sizes.items()}}
            for status, sizes in by_status.items()
        },
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accounts", type=int, default=2000)
    parser.add_argument("--days", type=int, default=120)
    parser.add_argument("--every", type=int, default=30, help="Days between checkpoints.")
    parser.add_argument("--no-trim", action="store_true", help="Leave history in Redis (the figure before the trim).")
    args = parser.parse_args()
    print(f"machine: {speed_reference()}")
    with tempfile.TemporaryDirectory() as root, EmbeddedRedis(Path(root) / "redis", appendonly=False) as server:
        pg = EmbeddedPostgres(Path(root) / "pg").start()
        migrate(pg.url)
        pool = open_pool(pg.url)
        store = Store.from_url(server.url)
        empty = int(store.redis.info("memory")["used_memory"])
        clock = ManualClock(START)
        strategy = load_strategy(DEFAULT_STRATEGY)
        engine = Engine(store, strategy, clock)
        archiver, trimmer = AuditArchiver(store, pool), HistoryTrimmer(store, pool, strategy, page=5000)
        mover = ClosedMover(store, pool, timedelta(days=30), page=5000)
        last = [clock.now().date()]
        figures: list[int] = []

        def archive_and_measure(day: int) -> None:
            archiver.run()
            if not args.no_trim:
                trimmer.run_all(clock.now())
            mover.run_all(clock.now())
            if day and day % args.every == 0:
                found = measure(store, empty)
                figures.append(int(str(found["per_active_account"])))
                print(f"day {day}: {json.dumps(found)}", flush=True)

        def tick(_: float) -> None:
            if clock.now().date() != last[0]:
                last[0] = clock.now().date()
                archive_and_measure((clock.now() - START).days)

        began = time.perf_counter()
        simulation = Simulation(engine, clock, load_model(None), seed=1)
        simulation.run([], args.days, tick, staggered(args.accounts, args.days))
        clock.set(START + timedelta(days=args.days))  # the last day's run ends before the clock gets there
        archive_and_measure(args.days)
        print(f"simulated in {time.perf_counter() - began:.1f} s")
        pool.close()
        pg.stop()
    steady = bool(figures) and max(figures) <= GOAL
    verdict = "met" if steady else "NOT met"
    print(f"redis per active account at the checkpoints: {figures} B; goal <= {GOAL} B: {verdict}")


if __name__ == "__main__":
    main()
