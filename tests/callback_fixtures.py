"""What the outcome-callback tests share: facts of each kind on accounts, the event ids the audit streams
hold (what a receiver must end up with), and relay-and-send rounds until nothing is left to attempt."""

from __future__ import annotations

from decimal import Decimal

from dispatcher.core.events import Dispute, DisputeResolved, OptOut, Payment
from dispatcher.core.models import Channel
from dispatcher.engine import Engine
from dispatcher.state.store import Store
from dispatcher.webhook_relay import Relay, stream_events
from dispatcher.webhook_sender import CallbackSender


def record_activity(engine: Engine, accounts: list[str], amount: str = "10", opt_out: Channel = Channel.SMS) -> None:
    """Facts of each kind on each account: a payment, a dispute opened and closed (a hold), an opt-out."""
    for account_id in accounts:
        engine.record_event(account_id, Payment(amount=Decimal(amount)))
        engine.record_event(account_id, Dispute())
        engine.record_event(account_id, DisputeResolved())
        engine.record_event(account_id, OptOut(channel=opt_out))


def audit_event_ids(store: Store) -> dict[str, list[str]]:
    """Each account's event ids in the order the audit streams hold them."""
    found: dict[str, list[str]] = {}
    for shard in range(store.shards):
        for _, event in stream_events(shard, store.redis.xrange(store.audit_key(shard))):
            found.setdefault(event.account_id, []).append(event.id)
    return found


def drain(relay: Relay, sender: CallbackSender, rounds: int = 50) -> int:
    """Relay and send until a round makes no attempt, at most `rounds` times; the attempts made."""
    attempts = 0
    for _ in range(rounds):
        relay.run()
        done = sender.deliver_due()
        attempts += done.attempts
        if done.attempts == 0:
            break
    return attempts
