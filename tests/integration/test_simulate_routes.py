"""`dispatcher simulate` with DISPATCHER_ROUTES: every attempt names the provider its route gave it (drawn by
resting weight), the sends by provider count them, and without routes nothing changes."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest

from dispatcher.core.clock import ManualClock
from dispatcher.core.strategy import Strategy
from dispatcher.core.timeline import attempt_provider
from dispatcher.engine import Engine
from dispatcher.simulate import OutcomeModel, Simulation
from dispatcher.state.store import Store
from tests.conftest import make_account

pytestmark = pytest.mark.integration


def _providers(store: Store, account_ids: list[str], channel: str) -> Counter[str | None]:
    named: Counter[str | None] = Counter()
    for account_id in account_ids:
        attempts = [e for e in store.load(account_id).history if e.kind == "attempt" and e.channel == channel]
        named.update(attempt_provider(entry) for entry in attempts)
    return named


def test_each_simulated_send_names_the_provider_its_route_gave_it(
    store: Store, strategy: Strategy, clock: ManualClock
) -> None:
    engine = Engine(store, strategy, clock, on_queued=lambda contacts: None)
    due = clock.now().date() - timedelta(days=1)
    chinese = [make_account(f"SC{i}", phone=f"+86139{10000000 + i:08d}", due_date=due) for i in range(4)]
    american = [make_account(f"SU{i}", phone=f"+1212555{1000 + i:04d}", due_date=due) for i in range(4)]
    routes = {"sms": {"CN": ["gateway", "twilio"], "*": ["twilio"]}}
    weights = {"sms": {"gateway": 100, "twilio": 0}}  # every Chinese text goes to the gateway while it is healthy
    report = Simulation(engine, clock, OutcomeModel(), 7, routes, weights).run(chinese + american, days=10)
    assert sum(count for (channel, _), count in report.sends.items() if channel == "sms") > 0
    chinese_sms = _providers(store, [a.id for a in chinese], "sms")
    assert set(chinese_sms) == {"gateway"} and chinese_sms["gateway"] > 0
    assert set(_providers(store, [a.id for a in american], "sms")) == {"twilio"}
    assert set(_providers(store, [a.id for a in chinese], "voice")) <= {"twilio"}  # voice has no route
