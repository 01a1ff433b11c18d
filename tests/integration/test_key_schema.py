"""Giving the key schema one home (dispatcher/redis_keys.py) renamed nothing: state a deployment wrote before,
under the names spelled out here as the code spelled them then, is read through the real store, claim ledger,
ranks, phone index, dead letters, circuit breaker and rate limiter on a real Redis; and what the engine
writes lands under those names."""

from __future__ import annotations

import json
import zlib
from datetime import timedelta

import pytest

from dispatcher import deadletters
from dispatcher.claims import ClaimStatus
from dispatcher.clock import ManualClock
from dispatcher.engine import Engine
from dispatcher.models import AccountRecord, HistoryEntry
from dispatcher.phone_index import accounts_for
from dispatcher.store import Store
from tests.conftest import make_account
from workers.circuit import CircuitBreaker
from workers.limiter import Limit, RateLimiter

pytestmark = pytest.mark.integration
PHONE = "+8613800138000"


def _shard(account_id: str) -> int:
    return zlib.crc32(account_id.encode()) % 16  # the store's fixture has 16 shards


def test_state_written_under_the_names_a_deployment_has_is_read_after(
    store: Store, clock: ManualClock, redis_url: str
) -> None:
    raw, shard = store.redis, _shard("OLD1")
    record = AccountRecord(account=make_account("OLD1"), stage="reminder")
    entry = HistoryEntry(kind="event", at=clock.now(), event="account_created")
    wake = clock.now() + timedelta(hours=1)
    raw.hset("{a:OLD1}:acct", mapping={"v": "7", "d": record.model_dump_json(exclude_defaults=True)})
    raw.rpush("{a:OLD1}:hist", entry.model_dump_json(exclude_defaults=True))
    raw.hset("{a:OLD1}:claims", mapping={"OLD1/reminder/sms/0": "sent", "OLD1/reminder/sms/1": "sending"})
    raw.hset("{a:OLD1}:ranks", "OLD1/reminder/sms/0", 5)
    raw.hset("{a:OLD1}:voice", "OLD1/reminder/voice/0", json.dumps({"human": "<Response/>"}))
    raw.zadd(f"{{s:{shard}}}:wake", {"OLD1": wake.timestamp()})
    raw.zadd(f"{{s:{shard}}}:queued", {"email OLD1/reminder/email/0": 2.0})
    raw.zadd(f"{{s:{shard}}}:inflight", {"OLD1/reminder/sms/1": 1.0})
    raw.zadd(f"{{s:{shard}}}:unverified", {"OLD1/notice/email/0": 3.0})
    raw.sadd(f"{{s:{_shard('GONE1')}}}:moved", "GONE1")
    raw.sadd(f"{{p:{PHONE}}}:accounts", "OLD1")
    raw.xadd("dispatcher:dead-letters", {"queue": "sms", "task": "dispatcher.send", "reason": "bad", "body": "x"})
    raw.hset("{cb:sms}:state", mapping={"until": 4_000_000_000, "seconds": 5, "setting": "S", "reason": "r"})
    seconds, micros = raw.time()
    raw.lpush("{rl:sms:+15005550006}:1s", f"{seconds}.{micros:06d}")

    loaded = store.load("OLD1")
    assert (loaded.record, loaded.version, loaded.history) == (record, "7", (entry,))
    assert store.claims("OLD1") == {"OLD1/reminder/sms/0": ClaimStatus.SENT, "OLD1/reminder/sms/1": ClaimStatus.SENDING}
    assert store.next_wakeup("OLD1") == wake
    assert list(store.account_ids()) == ["OLD1"]
    assert store.voice_scripts("OLD1", "OLD1/reminder/voice/0") == {"human": "<Response/>"}
    assert [s.contact_id for s in store.ledger.queued_before(10.0)] == ["OLD1/reminder/email/0"]
    assert [d.contact_id for d in store.ledger.in_doubt_before(10.0)] == ["OLD1/reminder/sms/1"]
    assert [d.contact_id for d in store.ledger.unverified()] == ["OLD1/notice/email/0"]
    assert store.moved(["GONE1", "OLD1"]) == {"GONE1"}
    assert accounts_for(store, PHONE) == ["OLD1"]
    assert store.ranks.raise_to("OLD1", "OLD1/reminder/sms/0", 3) is False  # below the rank stored before
    assert [letter.reason for letter in deadletters.listing(raw)] == ["bad"]
    assert CircuitBreaker(raw).state("sms").setting == "S"
    assert RateLimiter(redis_url, {"sms": Limit(rate=1)}).acquire("sms", "+15005550006") > 0  # the grant counts


def test_what_the_engine_writes_lands_under_those_names(engine: Engine) -> None:
    result = engine.upsert(make_account("NEW1", phone=PHONE))
    assert result.queued, "one day past due at 10:00 in Shanghai: the reminder is queued"
    shard = _shard("NEW1")
    assert set(engine.store.redis.keys("*")) >= {
        "{a:NEW1}:acct", "{a:NEW1}:hist", "{a:NEW1}:claims", f"{{p:{PHONE}}}:accounts",
        f"{{s:{shard}}}:queued", f"{{s:{shard}}}:audit", f"{{s:{shard}}}:accounts",
    }  # fmt: skip
