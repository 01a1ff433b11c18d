"""Shared fixtures: the real embedded Redis server (one per session, flushed per test), the default
strategy, a manual clock, and an engine wired to them."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import redis

from config.settings import DEFAULT_STRATEGY
from dispatcher.core.clock import ManualClock
from dispatcher.core.models import Account, ClaimStatus, PostalAddress
from dispatcher.core.strategy import Strategy, load_strategy
from dispatcher.engine import Engine
from dispatcher.state.redis_server import EmbeddedRedis
from dispatcher.state.store import Store

pytest_plugins = ["tests.worker_fixtures"]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), appendonly=False)
    with server:
        yield server


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> str:
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture(scope="session")
def strategy() -> Strategy:
    return load_strategy(Path(DEFAULT_STRATEGY))


@pytest.fixture
def clock() -> ManualClock:
    # 02:00 UTC is 10:00 in Shanghai: inside every default window.
    return ManualClock(datetime(2026, 3, 2, 2, 0, tzinfo=UTC))


@pytest.fixture
def store(redis_url: str) -> Iterator[Store]:
    store = Store.from_url(redis_url, shards=16)
    yield store
    store.redis.close()


@pytest.fixture
def engine(store: Store, strategy: Strategy, clock: ManualClock) -> Engine:
    """An engine whose caller takes the contacts it queues (as a worker does), so wake-ups stay as planned."""
    return Engine(store, strategy, clock, on_queued=lambda contacts: None)


def make_account(account_id: str = "A1", **overrides: object) -> Account:
    """A Shanghai debtor with every address, one day past due on the default test clock."""
    fields: dict[str, object] = {
        "id": account_id,
        "name": "王小明",
        "locale": "zh-CN",
        "timezone": "Asia/Shanghai",
        "country": "CN",
        "phone": "+8613800138000",
        "email": "xiaoming@example.com",
        "address": PostalAddress(line1="1 Nanjing Rd", city="Shanghai", postal_code="200000", country="CN"),
        "currency": "CNY",
        "balance": Decimal("5000.00"),
        "minimum_payment": Decimal("500.00"),
        "due_date": date(2026, 3, 1),
    }
    fields.update(overrides)
    return Account.model_validate(fields)


def work(engine: Engine, clock: ManualClock, account_ids: list[str], rounds: int, every: timedelta) -> list[str]:
    """Re-plan the accounts `rounds` times, `every` apart, claiming and sending whatever each pass queues as a
    worker would; the ids sent, in order."""
    sent = []
    for _ in range(rounds):
        for result in engine.replan_many(account_ids):
            for contact in result.queued:
                if engine.gate.claim(contact).verdict == "send":
                    engine.gate.end_claim(contact, ClaimStatus.SENT)
                    sent.append(contact.id)
        clock.advance(every)
    return sent
