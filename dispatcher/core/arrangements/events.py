"""The events of a payment arrangement, pure: made (an agreed plan, or a reference to the strategy's
offer), cancelled, broken (time finds it: an instalment unpaid at its due date plus grace), and what a
payment does to a plan being kept. dispatcher.core.events applies them with every other event.

A refusal changes nothing: every check runs before the new state is built. What cannot apply to the account
as it stands (resolved, handed off, in dispute, another plan active) is an ArrangementConflict (the API's
409); a term that is wrong in itself is an EventRejected naming the field (422).
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Literal

from pydantic import Field, model_validator

from config.errors import NotFound
from dispatcher.core.arrangements.offers import OFFER_ID_PATTERN, InstalmentOffer, instalment_plan, overdue
from dispatcher.core.arrangements.terms import (
    ARRANGEMENT_ID_PATTERN,
    MAX_INSTALMENTS,
    Arrangement,
    Instalment,
    active_arrangement,
    ended,
    find,
    paid_into,
    replaced,
)
from dispatcher.core.event_base import EventRejected, _Event
from dispatcher.core.models import AccountRecord, AccountState, HistoryEntry
from dispatcher.core.strategy import Strategy


class ArrangementConflict(EventRejected):
    """The arrangement cannot apply to the account as it stands (the API answers 409)."""


class UnknownArrangement(NotFound, LookupError):
    """The account has no arrangement with this id."""

    def __init__(self, arrangement_id: str):
        super().__init__(f"arrangement_id: no arrangement {arrangement_id!r} on this account")
        self.field = "arrangement_id"


class ArrangementMade(_Event):
    """An agreed plan: its instalments (due dates and amounts), or the strategy's offer it takes up."""

    kind: Literal["arrangement"] = "arrangement"
    arrangement_id: str = Field(pattern=ARRANGEMENT_ID_PATTERN, description="The bank's id; the same id twice is "
                                "one arrangement.")  # fmt: skip
    offer: str | None = Field(default=None, pattern=OFFER_ID_PATTERN, examples=["instalment_3"],
                              description="An instalment offer of the strategy, computed for the account.")  # fmt: skip
    instalments: tuple[Instalment, ...] | None = Field(default=None, min_length=1, max_length=MAX_INSTALMENTS)
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$", description="The account's currency "
                                 "when left out; another one is refused.")  # fmt: skip

    @model_validator(mode="after")
    def _one_form(self) -> ArrangementMade:
        if (self.offer is None) == (self.instalments is None):
            raise ValueError("give either `offer` (an offer id such as instalment_3) or `instalments`, not both")
        return self

    @property
    def dedup_key(self) -> str | None:
        return f"arrangement:{self.arrangement_id}"


class ArrangementCancelled(_Event):
    kind: Literal["arrangement_cancelled"] = "arrangement_cancelled"
    arrangement_id: str = Field(pattern=ARRANGEMENT_ID_PATTERN)

    @property
    def dedup_key(self) -> str | None:
        return f"arrangement-cancel:{self.arrangement_id}"


class ArrangementBroken(_Event):
    """An instalment unpaid at its due date plus grace (time produces it): the ladder resumes at the stage
    the days past due give, named here for the audit trail."""

    kind: Literal["arrangement_broken"] = "arrangement_broken"
    arrangement_id: str
    instalment: int = Field(description="The instalment (1-based) that was missed.")
    days_past_due: int
    stage: str | None = Field(description="The stage the ladder resumes at.")


ArrangementEvent = ArrangementMade | ArrangementCancelled | ArrangementBroken


def apply_arrangement_event(
    record: AccountRecord, event: ArrangementEvent, strategy: Strategy, now: datetime, today: date
) -> AccountState:
    state = record.state
    if isinstance(event, ArrangementMade):
        return _made(record, event, strategy, now, today)
    existing = find(state.arrangements, event.arrangement_id)
    if existing is None:
        raise UnknownArrangement(event.arrangement_id)
    if isinstance(event, ArrangementCancelled) and existing.status == "cancelled":
        return state
    if existing.status != "active":
        raise ArrangementConflict("arrangement_id", f"arrangement {existing.id!r} already ended: {existing.status}")
    if isinstance(event, ArrangementCancelled):
        return state.model_copy(
            update={"arrangements": replaced(state.arrangements, ended(existing, "cancelled", now))}
        )
    broken = ended(existing, "broken", now, missed=event.instalment)
    return state.model_copy(update={"arrangements": replaced(state.arrangements, broken)})


def after_payment(state: AccountState, amount: Decimal, now: datetime) -> AccountState:
    """A payment (already counted in `state.paid`) applied to the plan being kept: paying the plan off
    resolves the account; a payment that clears the whole balance ends the plan as paid off too."""
    active = active_arrangement(state.arrangements)
    if active is None or state.status == "handed_off":
        return state
    after = paid_into(active, amount, now)
    if after.status == "active" and state.status == "resolved":
        after = ended(after, "paid_off", now)
    status = "resolved" if after.status != "active" else state.status
    return state.model_copy(update={"arrangements": replaced(state.arrangements, after), "status": status})


def with_terms(entry: HistoryEntry, before: AccountState, after: AccountState) -> HistoryEntry:
    """The history entry of an arrangement made, with its terms as agreed (an offer's instalments are
    computed when it is made): `instalments` as "2026-03-10 100.00, 2026-04-10 100.00", and the total."""
    made = [a for a in after.arrangements if entry.event == "arrangement" and find(before.arrangements, a.id) is None]
    if not made:
        return entry
    terms = ", ".join(f"{i.due} {i.amount}" for i in made[0].instalments)
    detail = {**entry.detail, "instalments": terms, "total": str(made[0].total), "currency": made[0].currency}
    return entry.model_copy(update={"detail": detail})


def ended_entries(before: AccountState, after: AccountState, now: datetime) -> list[HistoryEntry]:
    """History entries for plans a payment ended (kept or paid off): the timeline and the audit show them."""
    entries = []
    for arrangement in after.arrangements:
        old = find(before.arrangements, arrangement.id)
        if old is not None and old.status == "active" and arrangement.status in ("kept", "paid_off"):
            detail = {
                "arrangement_id": arrangement.id,
                "paid": str(arrangement.paid),
                "excess": str(arrangement.excess),
            }
            entries.append(HistoryEntry(kind="event", at=now, event=f"arrangement_{arrangement.status}", detail=detail))
    return entries


def _made(
    record: AccountRecord, event: ArrangementMade, strategy: Strategy, now: datetime, today: date
) -> AccountState:
    account, state = record.account, record.state
    existing = find(state.arrangements, event.arrangement_id)
    if existing is not None:
        same = existing.offer == event.offer and (
            event.instalments is None or existing.instalments == event.instalments
        )
        if same:
            return state  # a repeat: one arrangement (the store also answers it as a duplicate)
        raise ArrangementConflict("arrangement_id", f"{existing.id!r} was made with other terms; use a new id")
    if state.status != "active":
        raise ArrangementConflict("account_id", f"the account is {state.status}: no arrangement can be made on it")
    if "dispute" in state.holds:
        raise ArrangementConflict("account_id", "the account is in dispute: settle the dispute (dispute_resolved) "
                                  "before making an arrangement")  # fmt: skip
    active = active_arrangement(state.arrangements)
    if active is not None:
        raise ArrangementConflict("arrangement_id", f"arrangement {active.id!r} is active: cancel it first")
    if event.currency is not None and event.currency != account.currency:
        raise EventRejected("currency", f"the arrangement is in {event.currency} and the account in {account.currency}")
    owed = overdue(account, state)
    instalments = _offered(event.offer, strategy, owed, today) if event.offer else _checked(event, owed, today)
    arrangement = Arrangement(id=event.arrangement_id, instalments=instalments, currency=account.currency,
                              offer=event.offer, made_at=now)  # fmt: skip
    # The plan supersedes a promise to pay.
    return state.model_copy(update={"arrangements": (*state.arrangements, arrangement), "promise": None})


def _offered(offer_id: str, strategy: Strategy, owed: Decimal, today: date) -> tuple[Instalment, ...]:
    offer = strategy.offers.get(offer_id)
    if offer is None:
        known = ", ".join(sorted(n for n, o in strategy.offers.items() if isinstance(o, InstalmentOffer))) or "none"
        raise EventRejected("offer", f"no offer {offer_id!r} in the strategy (instalment offers: {known})")
    if not isinstance(offer, InstalmentOffer):
        raise EventRejected("offer", f"{offer_id!r} is a {offer.kind} offer, paid rather than arranged: send it as a "
                            "payment or a promise_to_pay")  # fmt: skip
    plan = instalment_plan(offer, owed, today)
    if not plan:
        raise EventRejected("offer", "nothing is owed on the account")
    return plan


def _checked(event: ArrangementMade, owed: Decimal, today: date) -> tuple[Instalment, ...]:
    instalments = event.instalments or ()
    for index, instalment in enumerate(instalments):
        if instalment.due < today:
            raise EventRejected(f"instalments.{index}.due", f"{instalment.due} is in the past (today is {today})")
        if index and instalment.due <= instalments[index - 1].due:
            raise EventRejected(f"instalments.{index}.due", f"{instalment.due} does not come after the instalment "
                                f"before it ({instalments[index - 1].due}): due dates must increase")  # fmt: skip
    total = sum((i.amount for i in instalments), Decimal("0"))
    if total > owed:
        raise EventRejected("instalments", f"the instalments add up to {total}, more than the {owed} owed")
    return instalments
