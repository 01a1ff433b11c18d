"""The shard key layout's crash points (docs/architecture.md, "One slot per script"), each proven by a real
process SIGKILLed between two steps: the migration from the per-account layout (`dispatcher migrate-keys`)
killed after any batch of index members or any account, then run again, ends exactly where an uninterrupted
run ends; an upsert killed between the phone index and the commit leaves an entry every lookup skips, and the
upsert run again lands once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import redis

from dispatcher.core.clock import ManualClock
from dispatcher.core.models import ClaimStatus
from dispatcher.engine import Engine
from dispatcher.state import phone_index
from dispatcher.state.redis_keys import moved_key, shard_of, use_shard_layout
from dispatcher.state.store import Store
from dispatcher.state.topology.key_migration import MigrationRefused, migrate_to_shard_layout
from tests.conftest import make_account

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
OLD, NEW = 16, 64

# Runs the migration and SIGKILLs itself at the Nth call of the progress hook for one step.
MIGRATE = """
import os, signal, sys
import redis
from dispatcher.state.topology.key_migration import migrate_to_shard_layout
url, step, nth = sys.argv[1], sys.argv[2], int(sys.argv[3])
calls = {"n": 0}
def on_step(name, done):
    if name == step:
        calls["n"] += 1
        if calls["n"] == nth:
            os.kill(os.getpid(), signal.SIGKILL)
migrate_to_shard_layout(redis.Redis.from_url(url, decode_responses=True), 16, 64, on_step)
"""

# An upsert in the shard layout, SIGKILLed after the phone index was written and before the commit.
UPSERT = """
import os, signal, sys
from datetime import date, datetime
from dispatcher.core.clock import ManualClock
from dispatcher.engine import Engine
from dispatcher.core.strategy import load_strategy
from config.settings import DEFAULT_STRATEGY
from dispatcher.state.redis_keys import use_shard_layout
from dispatcher.state.store import Store
from tests.conftest import make_account
use_shard_layout(64)
store = Store.from_url(sys.argv[1], 64)
store._commit_many = lambda commits: os.kill(os.getpid(), signal.SIGKILL)
clock = ManualClock(datetime.fromisoformat(sys.argv[2]))
engine = Engine(store, load_strategy(DEFAULT_STRATEGY), clock, on_queued=lambda c: None)
engine.upsert(make_account("PH1", phone="+8613900000001", due_date=date.fromisoformat(sys.argv[3])))
"""


@pytest.fixture(autouse=True)
def _per_account_layout_after() -> Iterator[None]:
    yield
    use_shard_layout(None)


def _book(engine: Engine, store: Store, clock: ManualClock) -> None:
    """Sixty accounts with queued contacts and wake-ups, a claim in flight, one in doubt for good, one moved."""
    due = clock.now().date() - timedelta(days=1)
    results = engine.upsert_many([make_account(f"MG{i}", due_date=due) for i in range(60)])
    first = results[0].queued[0]
    engine.gate.claim(first)
    assert store.claim_status("MG0", first.id) == ClaimStatus.SENDING
    second = results[1].queued[0]
    engine.gate.claim(second)
    store.ledger.set_aside("MG1", second.id)
    store.redis.sadd(moved_key(shard_of("GONE7", OLD)), "GONE7")


def _snapshot(client: redis.Redis) -> dict[bytes, bytes]:
    return {key: client.dump(key) for key in client.scan_iter(count=1000)}


def _restore(client: redis.Redis, snapshot: dict[bytes, bytes]) -> None:
    client.flushall()
    for key, value in snapshot.items():
        client.restore(key, 0, value)


def _contents(client: redis.Redis) -> dict[str, object]:
    """Every key and what it holds, comparable across runs."""
    read = {
        "hash": lambda key: client.hgetall(key), "list": lambda key: client.lrange(key, 0, -1),
        "set": lambda key: sorted(client.smembers(key)), "zset": lambda key: client.zrange(key, 0, -1, withscores=True),
        "string": lambda key: client.get(key), "stream": lambda key: client.xrange(key),
    }  # fmt: skip
    return {key: read[client.type(key)](key) for key in client.scan_iter(count=1000)}


@pytest.fixture
def migrated_book(redis_url: str, engine: Engine, store: Store, clock: ManualClock) -> tuple[dict, dict]:
    """The book as written, and what an uninterrupted migration makes of it."""
    _book(engine, store, clock)
    raw = redis.Redis.from_url(redis_url)
    snapshot = _snapshot(raw)
    migrate_to_shard_layout(store.redis, OLD, NEW)
    use_shard_layout(None)
    expected = _contents(store.redis)
    _restore(raw, snapshot)
    return snapshot, expected


@pytest.mark.parametrize(("step", "nth"), [("index", 1), ("index", 37), ("account", 1), ("account", 31),
                                           ("account", 60), ("counts", 1)])  # fmt: skip
def test_a_migration_killed_between_any_two_steps_ends_as_an_uninterrupted_one_when_run_again(
    redis_url: str, store: Store, migrated_book: tuple[dict, dict], step: str, nth: int
) -> None:
    _, expected = migrated_book
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    killed = subprocess.run([sys.executable, "-c", MIGRATE, redis_url, step, str(nth)], env=env, timeout=120)
    assert killed.returncode == -signal.SIGKILL
    if step != "counts":
        assert _contents(store.redis) != expected  # it really stopped half way
    migrate_to_shard_layout(store.redis, OLD, NEW)
    assert _contents(store.redis) == expected


def test_the_migrated_book_reads_as_it_was_written(
    redis_url: str, engine: Engine, store: Store, clock: ManualClock
) -> None:
    _book(engine, store, clock)
    before = {a: (store.load(a), store.claims(a), store.next_wakeup(a)) for a in ("MG0", "MG1", "MG5", "MG59")}
    in_doubt = {(c.account_id, c.contact_id) for c in store.ledger.unverified()}
    queued = {(s.account_id, s.contact_id) for s in store.ledger.queued_before(float("inf"))}
    done = migrate_to_shard_layout(store.redis, OLD, NEW)
    assert done.accounts == 60 and done.members > 0
    moved = Store.from_url(redis_url, NEW)
    assert {a: (moved.load(a), moved.claims(a), moved.next_wakeup(a)) for a in before} == before
    assert {(c.account_id, c.contact_id) for c in moved.ledger.unverified()} == in_doubt
    assert {(s.account_id, s.contact_id) for s in moved.ledger.queued_before(float("inf"))} == queued
    assert moved.moved(["GONE7", "MG3"]) == {"GONE7"}
    assert sum(done.counts.values()) == 60
    assert sorted(moved.account_ids()) == sorted(f"MG{i}" for i in range(60))


def test_a_shard_count_that_is_not_a_multiple_is_refused(store: Store) -> None:
    with pytest.raises(MigrationRefused, match="multiple of the current DISPATCHER_SCHEDULE_SHARDS"):
        migrate_to_shard_layout(store.redis, OLD, 24)


def test_an_upsert_killed_between_the_phone_index_and_its_commit_leaves_a_skipped_entry_and_lands_once_again(
    redis_url: str, clock: ManualClock, strategy: object
) -> None:
    due = (clock.now().date() - timedelta(days=1)).isoformat()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    killed = subprocess.run(
        [sys.executable, "-c", UPSERT, redis_url, clock.now().isoformat(), due], env=env, timeout=120
    )
    assert killed.returncode == -signal.SIGKILL
    use_shard_layout(NEW)
    store = Store.from_url(redis_url, NEW)
    assert store.load("PH1").record is None  # the commit never ran
    assert phone_index.accounts_for(store, "+8613900000001") == []  # the entry it left is skipped
    engine = Engine(store, strategy, clock, on_queued=lambda contacts: None)  # type: ignore[arg-type]
    engine.upsert(make_account("PH1", phone="+8613900000001", due_date=clock.now().date() - timedelta(days=1)))
    assert phone_index.accounts_for(store, "+8613900000001") == ["PH1"]
    assert [e.event for e in store.load("PH1").history] == ["account_created"]
