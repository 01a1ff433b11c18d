"""The outcome callbacks under chaos: a receiver (verifying every request with `standardwebhooks`) registered
while the SMS run goes, then down for ten minutes of the run's clock while the workers and beat are SIGKILLed
and Redis is SHUT DOWN and restarted; back up, every event the audit streams hold since the endpoint was
registered must arrive, signed, in order per account, each once after deduplication by webhook-id."""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from dispatcher.state.store import Store
from dispatcher.state.webhook_endpoints import EndpointRegistry, stream_position
from dispatcher.webhook_relay import stream_events
from tests.callback_receiver import Receiver
from tests.chaos.harness import Deployment, Result

Act = Callable[[Deployment, Result], float]
Finish = Callable[[Deployment, Result], None]
# The run's clock goes 10x (RunConfig.clock_factor): ten minutes of it are a minute here. The schedule's
# waits are shortened so that what failed during the outage is retried within the drain.
RETRY_SCHEDULE = "5,30,60,120,300,600,900,1200"
CATCH_UP_SECONDS = 180.0


def _store(deployment: Deployment) -> Store:
    assert deployment.redis_node is not None
    return Store.from_url(deployment.redis_node.url, int(deployment.env.get("DISPATCHER_SCHEDULE_SHARDS", "16")))


def _expected(deployment: Deployment, cursors: dict[int, str]) -> dict[str, list[str]]:
    """Each account's event ids written since the endpoint was registered, in stream order."""
    store = _store(deployment)
    found: dict[str, list[str]] = {}
    try:
        for shard in range(store.shards):
            items = store.redis.xrange(store.audit_key(shard), "(" + cursors.get(shard, "0-0"), "+")
            for stream_id, event in stream_events(shard, items):
                if stream_position(stream_id) > stream_position(cursors.get(shard, "0-0")):
                    found.setdefault(event.account_id, []).append(event.id)
    finally:
        store.redis.close()
    return found


def callbacks_outage(
    down_for: float = 60.0, storm: float = 30.0, every: float = 2.0, seed: int = 5
) -> tuple[Act, Finish]:
    state: dict[str, Any] = {}

    def act(deployment: Deployment, result: Result) -> float:
        receiver = Receiver().start()
        store = _store(deployment)
        registry = EndpointRegistry(store.redis, store.shards, lambda: deployment.clock().now().timestamp())
        endpoint, secret = registry.create(receiver.url)
        receiver.secrets.append(secret)
        state.update(receiver=receiver, cursors=registry.cursors(endpoint.id))
        store.redis.close()
        deployment.wait_for(lambda: len(receiver.received) >= 20, timeout=90, what="the first callbacks")
        state["first"] = len(receiver.received)
        receiver.stop()
        down = time.time()
        rng = random.Random(seed)
        targets = [name for name in deployment.supervisor.members if name.startswith("worker-")] + ["beat"]
        kills: Counter[str] = Counter()
        next_at, redis_done = down, False
        while time.time() - down < storm:
            if time.time() >= next_at:
                name = rng.choice(targets)
                if deployment.supervisor.members[name].kill9():
                    kills[name] += 1
                next_at += every
            if not redis_done and time.time() - down > storm / 2:
                assert deployment.redis_node is not None
                deployment.redis_node.shutdown()
                stopped = time.time()
                while time.time() - stopped < 5.0:
                    time.sleep(0.05)
                deployment.redis_node.start()
                redis_done = True
            time.sleep(0.05)
        while time.time() - down < down_for:
            time.sleep(0.2)
        receiver.start()
        deployment.fault(
            f"callback receiver down {down_for:g} s (ten minutes of the run's clock) after {state['first']} callbacks; "
            f"meanwhile SIGKILL every {every:g} s for {storm:g} s: "
            + ", ".join(f"{n} x{c}" for n, c in sorted(kills.items()))
            + "; Redis SHUTDOWN, 5 s down, restart on the same port and data"
        )
        return time.time()

    def finish(deployment: Deployment, result: Result) -> None:
        receiver: Receiver = state["receiver"]
        began = time.time()
        expected: dict[str, list[str]] = {}
        while time.time() - began < CATCH_UP_SECONDS:
            expected = _expected(deployment, state["cursors"])
            arrived = receiver.by_account()
            if all(set(ids) <= set(arrived.get(account, [])) for account, ids in expected.items()):
                break
            time.sleep(1.0)
        receiver.stop()
        arrived = receiver.by_account()
        wanted = sum(len(ids) for ids in expected.values())
        lost = sum(len(set(ids) - set(arrived.get(account, []))) for account, ids in expected.items())
        # In order: what arrived of an account, in first-arrival order, is its stream order.
        disordered = sum(
            1 for account, ids in expected.items() if [i for i in arrived.get(account, []) if i in set(ids)] != ids
        )
        repeats = len(receiver.received) - len({event_id for event_id, _ in receiver.received})
        result.checks["callbacks: every event arrived"] = (lost == 0, f"{lost} of {wanted} lost")
        result.checks["callbacks: in order per account"] = (disordered == 0, f"{disordered} accounts out of order")
        result.checks["callbacks: every signature valid"] = (receiver.unverified == 0, f"{receiver.unverified} bad")
        result.info["callbacks delivered (after dedup by webhook-id)"] = str(sum(map(len, arrived.values())))
        result.info["callbacks delivered again (same webhook-id, deduplicated)"] = str(repeats)
        result.info["callbacks caught up after the drain in"] = f"{time.time() - began:.0f} s"

    return act, finish
