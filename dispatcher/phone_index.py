"""Which accounts a phone number belongs to, so an inbound STOP reaches every account of that debtor.

One Redis set per number (dispatcher.redis_keys.phone_key: a hash tag per number, so they spread over a Cluster),
holding account ids (a debtor with two cards has two
accounts and one phone). The index is only a hint: a lookup re-reads each account and drops ids whose
phone has since changed, so a stale entry costs a read, never a wrong opt-out. Every upsert adds its
account to its number's set inside the account's commit (`Commit.phone`), so no upsert path can miss it.
"""

from __future__ import annotations

from dispatcher.redis_keys import phone_key
from dispatcher.store import Store


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
