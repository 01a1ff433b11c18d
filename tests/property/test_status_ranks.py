"""Provider callbacks arrive in any order; the ranks script keeps, per contact, the highest status recorded and
takes a callback only when it ranks above it. Checked over random arrival orders against fakeredis (its Lua
runs the same script the store registers), so hypothesis can try hundreds of orders in a second."""

from __future__ import annotations

import fakeredis
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.ranks import RANKS_TTL, StatusRanks
from dispatcher.redis_keys import ranks_key

arrivals = st.lists(st.tuples(st.sampled_from(["A1/s/sms/0", "A1/s/sms/1", "A1/s/voice/0"]), st.integers(0, 4)))


@settings(max_examples=200, deadline=None)
@given(arrivals)
def test_a_status_is_taken_only_when_it_ranks_above_every_one_before_it(sequence: list[tuple[str, int]]) -> None:
    client = fakeredis.FakeRedis(decode_responses=True)
    ranks = StatusRanks(client)
    highest: dict[str, int] = {}
    for contact_id, rank in sequence:
        taken = ranks.raise_to("A1", contact_id, rank)
        assert taken == (rank > highest.get(contact_id, -1))
        highest[contact_id] = max(rank, highest.get(contact_id, -1))
    stored = {contact: int(rank) for contact, rank in client.hgetall(ranks_key("A1")).items()}
    assert stored == highest
    if highest:
        assert 0 < client.ttl(ranks_key("A1")) <= RANKS_TTL
