"""Which accounts a phone number belongs to, so an inbound STOP reaches every account of that debtor.

One Redis set per number, `{p:<E.164>}:accounts` (a hash tag per number, so they spread over a Cluster),
holding account ids (a debtor with two cards has two
accounts and one phone). The index is only a hint: a lookup re-reads each account and drops ids whose
phone has since changed, so a stale entry costs a read, never a wrong opt-out.
"""

from __future__ import annotations

from collections.abc import Iterable

from dispatcher.models import Account
from dispatcher.store import Store


def phone_key(phone: str) -> str:
    return f"{{p:{phone}}}:accounts"


def remember(store: Store, accounts: Iterable[Account]) -> None:
    """Index the phone of each account (pipelined; accounts without a phone are skipped)."""
    pipe = store.redis.pipeline(transaction=False)
    for account in accounts:
        if account.phone:
            pipe.sadd(phone_key(account.phone), account.id)
    pipe.execute()


def accounts_for(store: Store, phone: str) -> list[str]:
    """The ids of the accounts whose phone is `phone` now; entries left by an old phone are pruned."""
    key = phone_key(phone.strip())
    candidates = sorted(store.redis.smembers(key))
    found = []
    for loaded in store.load_many(candidates):
        if loaded.record is not None and loaded.record.account.phone == phone.strip():
            found.append(loaded.account_id)
        else:
            store.redis.srem(key, loaded.account_id)
    return found
