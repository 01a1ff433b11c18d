"""The provider-status ranks: per contact, the rank of the last provider status recorded, so a callback
that arrives after a later one (providers do not keep order) is dropped instead of undoing it.

Kept in the account's ranks hash (dispatcher.redis_keys.ranks_key: contact id -> rank of the last status
recorded), hash-tagged with the account's other keys; it expires RANKS_TTL after the last.
"""

from __future__ import annotations

import redis

from dispatcher.redis_keys import ranks_key

RANKS_TTL = 30 * 86_400  # seconds; no provider sends a status for a contact this long after the last one

# Raise the stored rank only if the new one is higher: 1 recorded, 0 out of order.
_RAISE = """
local current = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '-1')
if tonumber(ARGV[2]) <= current then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""


class StatusRanks:
    def __init__(self, client: redis.Redis) -> None:
        self._raise = client.register_script(_RAISE)

    def raise_to(self, account_id: str, contact_id: str, rank: int) -> bool:
        """Record `rank` for the contact if it ranks above the last one recorded; False when it does not."""
        return bool(self._raise(keys=[ranks_key(account_id)], args=[contact_id, rank, RANKS_TTL]))
