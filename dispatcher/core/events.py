"""Business events and outcomes, validated, and how each one changes an account's state (pure).

Events come from the bank (payment, promise, dispute ...), from providers (an outcome of a contact) and
from time itself (a promise or a hold that lapses, found by `lapsed_events`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Annotated, Literal

from pydantic import Field, TypeAdapter, ValidationInfo, field_validator

from dispatcher.core.arrangements.events import (
    ArrangementBroken,
    ArrangementCancelled,
    ArrangementMade,
    after_payment,
    apply_arrangement_event,
)
from dispatcher.core.arrangements.terms import active_arrangement
from dispatcher.core.event_base import EventRejected as EventRejected
from dispatcher.core.event_base import _Event
from dispatcher.core.models import (
    ADDRESS_OF_CHANNEL,
    AccountRecord,
    AccountState,
    AddressKind,
    Channel,
    ContactRef,
    HistoryEntry,
    Money,
    OutcomeKind,
    PositiveMoney,
    Promise,
    zone,
)
from dispatcher.core.stages import adhoc_due_to_lapse, arrangement_breaks, hold_ends, promise_ends, stage_index_at
from dispatcher.core.strategy import Strategy


class Payment(_Event):
    kind: Literal["payment"] = "payment"
    amount: Money = Field(gt=0)
    reference: str | None = Field(
        default=None, max_length=128, description="The bank's reference; a second payment with it is a duplicate."
    )
    currency: str | None = Field(
        default=None,
        pattern=r"^[A-Z]{3}$",
        description="ISO 4217; the account's currency when left out. A payment in another currency is refused "
        "(422 naming `currency`): convert it to the account's currency first.",
    )

    @property
    def dedup_key(self) -> str | None:
        # Keyed by the reference when there is one, so the same payment sent twice under two event ids
        # (a retry that lost its id, a second feed) counts once.
        return f"payment-ref:{self.reference}" if self.reference else self.event_id


class PromiseToPay(_Event):
    kind: Literal["promise_to_pay"] = "promise_to_pay"
    amount: Money = Field(gt=0)
    due: date


class Dispute(_Event):
    kind: Literal["dispute"] = "dispute"
    reason: str | None = Field(default=None, max_length=500)


class DisputeResolved(_Event):
    kind: Literal["dispute_resolved"] = "dispute_resolved"


class Hardship(_Event):
    kind: Literal["hardship"] = "hardship"
    days: int | None = Field(default=None, ge=1, le=365, description="Default: the strategy's hold days.")


class OptOut(_Event):
    kind: Literal["opt_out"] = "opt_out"
    channel: Channel


class OptIn(_Event):
    kind: Literal["opt_in"] = "opt_in"
    channel: Channel


class DoNotContact(_Event):
    kind: Literal["do_not_contact"] = "do_not_contact"
    reason: str | None = Field(default=None, max_length=500)


class Outcome(_Event):
    kind: Literal["outcome"] = "outcome"
    contact_id: str = Field(min_length=1, max_length=256)
    outcome: OutcomeKind
    channel: Channel | None = Field(default=None, description="Filled in from the attempt when omitted.")
    detail: dict[str, str] = Field(default_factory=dict)


class AdhocContact(_Event):
    """A contact outside the ladder (an agent's request); the planner makes it under the same policy."""

    kind: Literal["adhoc_contact"] = "adhoc_contact"
    channel: Channel
    template: str = Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*$")
    key: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$", description="Unique per account.")


class AgentDisposition(_Event):
    """What a call-centre agent recorded after speaking (or trying to speak) with the debtor.

    right_party, promise and refused are conversations (they start the quiet period for calls); a promise
    also pauses the account like a promise_to_pay; wrong_number marks the phone invalid.
    """

    kind: Literal["agent_disposition"] = "agent_disposition"
    disposition: Literal["right_party", "promise", "refused", "wrong_number"]
    amount: PositiveMoney | None = Field(default=None, validate_default=True, description="Promise only.")
    due: date | None = Field(default=None, validate_default=True, description="Promise only.")
    contact_id: str | None = Field(default=None, max_length=256, description="The call this disposition closes.")

    @field_validator("amount", "due")
    @classmethod
    def _promise_terms(cls, value: object, info: ValidationInfo) -> object:
        promise = info.data.get("disposition") == "promise"
        if promise and value is None:
            raise ValueError("required when the disposition is 'promise'")
        if not promise and value is not None and "disposition" in info.data:
            raise ValueError("only a 'promise' disposition carries an amount and a due date")
        return value


class PromiseKept(_Event):
    kind: Literal["promise_kept"] = "promise_kept"


class PromiseBroken(_Event):
    kind: Literal["promise_broken"] = "promise_broken"


class HoldLapsed(_Event):
    kind: Literal["hold_lapsed"] = "hold_lapsed"


class AdhocLapsed(_Event):
    """An ad-hoc contact not made within the maximum deferral: it will not be made."""

    kind: Literal["adhoc_lapsed"] = "adhoc_lapsed"
    key: str


class AdhocDenied(_Event):
    """An ad-hoc request the policy denied: recorded for the record, never planned."""

    kind: Literal["adhoc_denied"] = "adhoc_denied"
    key: str
    channel: Channel
    template: str
    rule: str


# What the bank, the providers and agents may send (HTTP, Celery, import): one validation for every entry.
ExternalEvent = Annotated[
    Payment
    | PromiseToPay
    | Dispute
    | DisputeResolved
    | Hardship
    | OptOut
    | OptIn
    | DoNotContact
    | Outcome
    | AdhocContact
    | AgentDisposition
    | ArrangementMade
    | ArrangementCancelled,
    Field(discriminator="kind"),
]
EXTERNAL_EVENT_ADAPTER: TypeAdapter[ExternalEvent] = TypeAdapter[ExternalEvent](ExternalEvent)
# Kinds only time or the dispatcher itself produces; refused from outside.
INTERNAL_KINDS = frozenset(
    {"promise_kept", "promise_broken", "hold_lapsed", "adhoc_lapsed", "adhoc_denied", "arrangement_broken"}
)

Event = Annotated[
    Payment
    | PromiseToPay
    | Dispute
    | DisputeResolved
    | Hardship
    | OptOut
    | OptIn
    | DoNotContact
    | Outcome
    | AdhocContact
    | AgentDisposition
    | PromiseKept
    | PromiseBroken
    | HoldLapsed
    | AdhocLapsed
    | AdhocDenied
    | ArrangementMade
    | ArrangementCancelled
    | ArrangementBroken,
    Field(discriminator="kind"),
]
EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter[Event](Event)

# Outcomes that prove an address bad whatever the step says: hard bounces and returned mail suppress it.
_ALWAYS_INVALIDATES = {OutcomeKind.INVALID_ADDRESS, OutcomeKind.BOUNCED, OutcomeKind.RETURNED}


def apply_event(record: AccountRecord, event: Event, strategy: Strategy, now: datetime) -> AccountState:
    """The account's state after `event`; raises EventRejected when it cannot apply."""
    state, account = record.state, record.account
    today = now.astimezone(zone(account.timezone)).date()
    match event:
        case Payment(amount=amount, currency=currency):
            if currency is not None and currency != account.currency:
                # No rate is known here, and paid counts against a balance in the account's currency.
                raise EventRejected(
                    "currency",
                    f"the payment is in {currency} and the account in {account.currency}: send the amount in "
                    f"{account.currency}",
                )
            paid = state.paid + amount
            status = "resolved" if paid >= account.balance else state.status
            return after_payment(state.model_copy(update={"paid": paid, "status": status}), amount, now)
        case PromiseToPay():
            return state.model_copy(update={"promise": _promise(event, state, strategy, today, now)})
        case Dispute():
            return _with_hold(state, "dispute", None)
        case DisputeResolved():
            return _without_holds(state, {"dispute"})
        case Hardship(days=days):
            until = today + timedelta(days=days or strategy.events.hardship_hold_days)
            return _with_hold(state, "hardship", until)
        case OptOut(channel=channel):
            return state.model_copy(update={"opted_out": state.opted_out | {channel}})
        case OptIn(channel=channel):
            return state.model_copy(update={"opted_out": state.opted_out - {channel}})
        case DoNotContact():
            return state.model_copy(update={"do_not_contact": True})
        case Outcome():
            return _after_outcome(record, event, strategy, now, today)
        case AdhocContact():
            return state  # the request itself, kept in the history, is what the planner reads
        case AgentDisposition():
            return _after_disposition(event, state, strategy, today, now)
        case PromiseKept():
            return state.model_copy(update={"promise": None})
        case PromiseBroken():
            state = state.model_copy(update={"promise": None})
            if strategy.events.promise_to_pay.on_broken == "escalate":
                return _escalated(record.model_copy(update={"state": state}), strategy, now, today)
            return state
        case HoldLapsed():
            return _without_holds(state, {r for r, until in state.holds.items() if until and until <= today})
        case AdhocLapsed() | AdhocDenied():
            return state  # the history entry is the record; the planner reads it
        case ArrangementMade() | ArrangementCancelled() | ArrangementBroken():
            return apply_arrangement_event(record, event, strategy, now, today)
    raise EventRejected("kind", f"no rule for event kind {event.kind!r}")


def parse_external_event(data: object) -> ExternalEvent:
    """Validate an event from outside (a Celery message, an import row); internal kinds are refused."""
    if isinstance(data, dict) and data.get("kind") in INTERNAL_KINDS:
        raise EventRejected("kind", f"{data['kind']!r} is produced by the dispatcher itself, not sent to it")
    return EXTERNAL_EVENT_ADAPTER.validate_python(data)


def event_detail(event: Event) -> dict[str, str]:
    """The event's fields as its history entry keeps them."""
    fields = event.model_dump(exclude={"kind", "event_id"}, exclude_none=True, mode="json")
    return {k: str(v) for k, v in fields.items()}


def lapsed_events(
    record: AccountRecord, strategy: Strategy, now: datetime, history: Sequence[HistoryEntry] = ()
) -> list[Event]:
    """The events that time alone has produced by `now`: promises kept or broken, holds that ended, ad-hoc
    contacts that waited past the maximum deferral."""
    account, state = record.account, record.state
    found: list[Event] = []
    ends = promise_ends(account, state, strategy)
    if ends is not None and now >= ends and state.promise is not None:
        kept = state.paid - state.promise.paid_at_promise >= state.promise.amount
        found.append(PromiseKept() if kept or state.status == "resolved" else PromiseBroken())
    lapse = hold_ends(account, state)
    if lapse is not None and now >= lapse:
        found.append(HoldLapsed())
    found += [AdhocLapsed(key=key) for key in adhoc_due_to_lapse(history, strategy, now)]
    arrangement = active_arrangement(state.arrangements) if state.status == "active" else None
    breaks = arrangement_breaks(account, arrangement, strategy) if arrangement is not None else None
    if arrangement is not None and breaks is not None and now >= breaks[1]:
        days = (now.astimezone(zone(account.timezone)).date() - account.due_date).days
        index = stage_index_at(account, state, strategy, now)
        stage = None if index is None else strategy.stages[index].name
        found.append(ArrangementBroken(arrangement_id=arrangement.id, instalment=breaks[0] + 1, days_past_due=days,
                                       stage=stage))  # fmt: skip
    return found


def _promise(event: PromiseToPay, state: AccountState, strategy: Strategy, today: date, now: datetime) -> Promise:
    if event.due < today:
        raise EventRejected("due", f"the promised date {event.due} is in the past (today is {today})")
    horizon = strategy.events.promise_to_pay.max_days_ahead
    if event.due > today + timedelta(days=horizon):
        raise EventRejected("due", f"a promise may reach at most {horizon} days ahead ({today + timedelta(horizon)})")
    return Promise(amount=event.amount, due=event.due, made_at=now, paid_at_promise=state.paid)


def _after_outcome(
    record: AccountRecord, event: Outcome, strategy: Strategy, now: datetime, today: date
) -> AccountState:
    state = record.state
    channel = event.channel
    if channel is None:
        raise EventRejected("channel", "the outcome's channel is unknown; give it or refer to a sent contact")
    if event.outcome is OutcomeKind.OPTED_OUT:
        state = state.model_copy(update={"opted_out": state.opted_out | {channel}})
    if event.outcome is OutcomeKind.HANDED_OFF:
        state = state.model_copy(update={"status": "handed_off"})
    ref = ContactRef.parse(event.contact_id)
    step = strategy.step(ref.stage, ref.step) if ref is not None and not ref.fallback else None
    action = step.outcomes.get(event.outcome) if step is not None else None
    if event.outcome in _ALWAYS_INVALIDATES or (action is not None and action.invalidate):
        kind = ADDRESS_OF_CHANNEL[channel]
        if kind is not None:
            state = state.model_copy(update={"invalid_addresses": state.invalid_addresses | {kind}})
    if action is not None and action.escalate:
        state = _escalated(record.model_copy(update={"state": state}), strategy, now, today)
    return state


def _after_disposition(
    event: AgentDisposition, state: AccountState, strategy: Strategy, today: date, now: datetime
) -> AccountState:
    if event.disposition == "wrong_number":
        return state.model_copy(update={"invalid_addresses": state.invalid_addresses | {AddressKind.PHONE}})
    if event.disposition == "promise" and event.amount is not None and event.due is not None:
        promise = PromiseToPay(amount=event.amount, due=event.due)
        return state.model_copy(update={"promise": _promise(promise, state, strategy, today, now)})
    return state  # right_party and refused: the history entry itself is the conversation


def _escalated(record: AccountRecord, strategy: Strategy, now: datetime, today: date) -> AccountState:
    current = stage_index_at(record.account, record.state, strategy, now) or 0
    floor = min(current + 1, len(strategy.stages) - 1)
    if floor <= record.state.stage_floor:
        return record.state
    return record.state.model_copy(update={"stage_floor": floor, "floor_since": today})


def _with_hold(state: AccountState, reason: str, until: date | None) -> AccountState:
    return state.model_copy(update={"holds": {**state.holds, reason: until}})


def _without_holds(state: AccountState, reasons: set[str]) -> AccountState:
    return state.model_copy(update={"holds": {r: u for r, u in state.holds.items() if r not in reasons}})
