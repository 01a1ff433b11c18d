"""The Redis store against a real redis-server: key layout, versioned commits, claims, leases and the audit trail."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from redis.crc import key_slot

from dispatcher.core.models import AccountRecord, Channel, ClaimStatus, Contact, HistoryEntry
from dispatcher.state.redis_keys import account_record_key, claims_key, events_key, history_key
from dispatcher.state.store import CONFLICT, DUPLICATE, EVENT_WINDOW, Commit, Store
from tests.conftest import make_account

pytestmark = pytest.mark.integration

NOW = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)


def created(
    store: Store, account_id: str = "A1", wake: datetime | None = NOW, queue: tuple[str, ...] = (), **commit: object
) -> list[str] | int:
    loaded = store.load(account_id)
    commit["queue"] = [Contact(c, account_id, Channel.SMS, "t", "reminder", "sms", NOW) for c in queue]
    record = AccountRecord(account=make_account(account_id))
    return store.commit_many([Commit(loaded, record, wake=wake, **commit)])[0]  # type: ignore[arg-type]


def attempt(contact_id: str, at: datetime = NOW) -> HistoryEntry:
    return HistoryEntry(kind="attempt", at=at, contact_id=contact_id, channel=Channel.SMS)


def test_an_unknown_account_loads_as_nothing_at_version_zero(store: Store) -> None:
    loaded = store.load("nobody")
    assert (loaded.record, loaded.version, loaded.history) == (None, "0", ())


def test_a_commit_stores_record_history_and_wake_up_under_the_accounts_hash_tag(store: Store) -> None:
    entry = HistoryEntry(kind="event", at=NOW, event="account_created")
    assert created(store, new_history=[entry]) == []
    keys = set(store.redis.keys("*"))
    shard = store.shard_of("A1")
    assert {"{a:A1}:acct", "{a:A1}:hist", f"{{s:{shard}}}:wake"} <= keys
    assert all(key.startswith(("{a:A1}:", "{s:")) for key in keys)
    loaded = store.load("A1")
    assert loaded.record == AccountRecord(account=make_account("A1"))
    assert (loaded.version, loaded.history) == ("1", (entry,))
    assert store.next_wakeup("A1") == NOW


def test_every_key_of_one_account_hashes_to_one_cluster_slot(store: Store) -> None:
    entry = HistoryEntry(kind="event", at=NOW, event="account_created")
    created(store, new_history=[entry], queue=("A1/reminder/sms/0",), event_id="e1", audit=[{"account_id": "A1"}])
    account_keys = sorted(key for key in store.redis.keys("*") if key.startswith("{a:A1}"))
    assert account_keys == [account_record_key("A1"), claims_key("A1"), events_key("A1"), history_key("A1")]
    assert len({key_slot(key.encode()) for key in account_keys}) == 1
    shard = store.shard_of("A1")
    assert key_slot(store.wake_key(shard).encode()) == key_slot(store.audit_key(shard).encode())


def test_a_commit_against_a_stale_version_conflicts_and_writes_nothing(store: Store) -> None:
    created(store)
    stale = store.load("A1")
    created(store, wake=NOW + timedelta(hours=1))  # someone else writes first
    record = AccountRecord(account=make_account("A1", name="Stale Writer"))
    assert store.commit_many([Commit(stale, record, new_history=[attempt("x")])]) == [CONFLICT]
    loaded = store.load("A1")
    assert loaded.record is not None and loaded.record.account.name != "Stale Writer"
    assert (loaded.version, loaded.history) == ("2", ())


def test_an_event_id_already_applied_is_a_duplicate_and_writes_nothing(store: Store) -> None:
    assert created(store, event_id="bank-42") == []
    assert created(store, event_id="bank-42", wake=NOW + timedelta(days=1)) == DUPLICATE
    assert store.load("A1").version == "1"
    assert store.next_wakeup("A1") == NOW


def test_a_provider_callbacks_event_id_lapses_after_the_window_and_the_banks_stays(store: Store) -> None:
    wall = [NOW.timestamp()]
    store.wallclock = lambda: wall[0]
    assert created(store, event_id="bank-42") == []
    assert created(store, event_id="callback-1", event_lapses=True) == []
    wall[0] += EVENT_WINDOW - 60
    assert created(store, event_id="callback-1", event_lapses=True) == DUPLICATE  # a retry inside the window
    wall[0] += 120
    assert created(store, event_id="callback-2", event_lapses=True) == []
    events = store.redis.zrange(events_key("A1"), 0, -1)
    assert events == ["callback-2", "bank-42"]  # the lapsed id left as the next one came: the set stays small
    assert created(store, event_id="bank-42") == DUPLICATE  # the bank's ids stay while the account is in Redis


def test_event_ids_kept_as_a_set_before_they_could_lapse_stay_duplicates(store: Store) -> None:
    assert created(store) == []
    store.redis.sadd(events_key("A1"), "bank-41", "callback-0")
    assert created(store, event_id="bank-41") == DUPLICATE
    assert created(store, event_id="callback-0", event_lapses=True) == DUPLICATE
    assert created(store, event_id="bank-43") == []
    assert store.redis.type(events_key("A1")) == "zset"
    assert store.redis.zscore(events_key("A1"), "bank-41") == float("inf")


def test_queueing_returns_new_and_still_queued_contacts_but_not_claimed_ones(store: Store) -> None:
    assert created(
        store,
        queue=(
            "c/0",
            "c/1",
        ),
    ) == ["c/0", "c/1"]
    store.redis.hset("{a:A1}:claims", "c/0", "sending")
    assert created(
        store,
        queue=(
            "c/0",
            "c/1",
            "c/2",
        ),
    ) == ["c/1", "c/2"]
    assert store.claims("A1") == {"c/0": "sending", "c/1": "queued", "c/2": "queued"}


def test_a_commit_without_a_wake_up_removes_the_account_from_the_schedule(store: Store) -> None:
    created(store)
    created(store, wake=None)
    assert store.next_wakeup("A1") is None
    assert store.earliest_wakeup() is None


def test_a_claim_moves_queued_to_sending_once_and_records_the_attempt(store: Store) -> None:
    created(store, queue=("A1/reminder/sms/0",))
    version = store.load("A1").version
    assert store.ledger.claim("A1", "A1/reminder/sms/0", "sms", version, attempt("A1/reminder/sms/0")) == 1
    loaded = store.load("A1")
    assert store.claim_status("A1", "A1/reminder/sms/0") == "sending"
    assert loaded.history == (attempt("A1/reminder/sms/0"),)
    assert loaded.version == str(int(version) + 1)
    assert store.ledger.claim("A1", "A1/reminder/sms/0", "sms", loaded.version, attempt("A1/reminder/sms/0")) == 0
    assert len(store.load("A1").history) == 1


def test_a_claim_on_a_stale_version_conflicts(store: Store) -> None:
    created(store, queue=("c/0",))
    assert store.ledger.claim("A1", "c/0", "sms", "0", attempt("c/0")) == CONFLICT
    assert store.claim_status("A1", "c/0") == "queued"
    assert store.load("A1").history == ()


def test_a_claim_moves_only_from_the_expected_status(store: Store) -> None:
    created(store, queue=("c/0",))
    store.ledger.claim("A1", "c/0", "sms", store.load("A1").version, attempt("c/0"))
    assert store.ledger.move("A1", "c/0", "sms", ClaimStatus.QUEUED, ClaimStatus.SENT) is False
    assert store.ledger.move("A1", "c/0", "sms", ClaimStatus.SENDING, ClaimStatus.SENT) is True
    assert store.claim_status("A1", "c/0") == "sent"
    assert store.ledger.claim("A1", "c/0", "sms", store.load("A1").version, attempt("c/0")) == 0


def test_settling_to_nothing_forgets_the_claim(store: Store) -> None:
    created(store, queue=("c/0",))
    assert store.ledger.move("A1", "c/0", "sms", ClaimStatus.QUEUED, None) is True
    assert store.claims("A1") == {}


def test_a_lease_hides_due_accounts_until_it_expires(store: Store) -> None:
    created(store, "A1", wake=NOW - timedelta(minutes=1))
    created(store, "A2", wake=NOW + timedelta(hours=1))
    assert store.lease_due(NOW, 120, 100) == ["A1"]
    assert store.lease_due(NOW, 120, 100) == []
    assert store.next_wakeup("A1") == NOW + timedelta(seconds=120)
    assert store.lease_due(NOW + timedelta(seconds=120), 120, 100) == ["A1"]


def test_a_lease_takes_at_most_limit_accounts_per_shard(store: Store) -> None:
    one_shard = Store(store.redis, shards=1)
    for n in range(5):
        created(one_shard, f"A{n}", wake=NOW - timedelta(minutes=n))
    first = one_shard.lease_due(NOW, 60, 3)
    assert first == ["A4", "A3", "A2"]  # the longest overdue first
    assert one_shard.lease_due(NOW, 60, 3) == ["A1", "A0"]


def test_accounts_spread_over_the_shards(store: Store) -> None:
    for n in range(64):
        created(store, f"ACC{n}")
    used = [shard for shard in range(store.shards) if store.redis.zcard(store.wake_key(shard))]
    assert len(used) > store.shards // 2
    assert sorted(store.account_ids()) == sorted(f"ACC{n}" for n in range(64))


def test_the_earliest_wake_up_is_found_across_shards(store: Store) -> None:
    for n in range(10):
        created(store, f"W{n}", wake=NOW + timedelta(hours=10 - n))
    assert store.earliest_wakeup() == NOW + timedelta(hours=1)


def test_wake_no_later_only_brings_a_wake_up_forward(store: Store) -> None:
    created(store, wake=NOW + timedelta(hours=5))
    store.wake_no_later("A1", NOW + timedelta(hours=8))
    assert store.next_wakeup("A1") == NOW + timedelta(hours=5)
    store.wake_no_later("A1", NOW + timedelta(hours=2))
    assert store.next_wakeup("A1") == NOW + timedelta(hours=2)
    store.redis.zrem(store.wake_key(store.shard_of("A1")), "A1")  # no wake-up at all
    store.wake_no_later("A1", NOW + timedelta(hours=9))
    assert store.next_wakeup("A1") == NOW + timedelta(hours=9)


def test_the_audit_trail_keeps_entries_in_order_and_filters_by_account(store: Store) -> None:
    created(store, "A1", audit=[{"account_id": "A1", "n": 1}, {"account_id": "A1", "n": 2}])
    store.append_audit("A1", [{"account_id": "A1", "n": 3, "at": NOW}])
    created(store, "B1", audit=[{"account_id": "B1", "n": 9}])
    assert [entry["n"] for entry in store.audit("A1")] == [1, 2, 3]
    assert datetime.fromisoformat(str(store.audit("A1")[-1]["at"])) == NOW
    assert sorted(entry["n"] for entry in store.audit()) == [1, 2, 3, 9]  # type: ignore[type-var]
    assert store.redis.type(store.audit_key(store.shard_of("A1"))) == "stream"


def test_a_history_cache_reads_only_what_was_appended_and_still_returns_everything(store: Store) -> None:
    cached = Store(store.redis, shards=store.shards, history_cache=10)
    first = HistoryEntry(kind="event", at=NOW, event="account_created")
    created(cached, new_history=[first])
    assert cached.load("A1").history == (first,)
    cached.ledger.claim("A1", "c/0", "sms", cached.load("A1").version, attempt("c/0"))
    assert cached.load("A1").history == (first, attempt("c/0"))
    assert cached.load("A1").history == store.load("A1").history


def test_a_history_cache_forgets_an_attempt_that_was_released(store: Store) -> None:
    cached = Store(store.redis, shards=store.shards, history_cache=10)
    created(cached, new_history=[HistoryEntry(kind="event", at=NOW, event="account_created")])
    cached.ledger.claim("A1", "c/0", "sms", cached.load("A1").version, attempt("c/0"))
    assert len(cached.load("A1").history) == 2  # cached with the attempt
    assert cached.release_many([("A1", "c/0", "sms", attempt("c/0"))], forget=False) == [True]
    later = HistoryEntry(kind="event", at=NOW + timedelta(minutes=1), event="payment")
    loaded = cached.load("A1")
    cached.commit_many([Commit(loaded, loaded.record, new_history=[later])])  # type: ignore[arg-type]
    assert cached.load("A1").history == store.load("A1").history
