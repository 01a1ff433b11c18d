"""Offers and arrangement rules as the strategy declares them, and the offers computed for one account.

Two kinds of offer: a minimum payment (a share of the overdue amount, at least a floor, never more than is
owed) and an instalment plan (the overdue amount, plus a fee or a monthly rate if the bank sets one, over
N months). A stage lists the offers it presents (`stages[].offers`); templates read them as
`offers.<id>.*`, amounts as Decimal in the account's currency. An account agrees an instalment offer
through the API (`{"offer": "instalment_3"}`), which `instalment_plan` turns into dated instalments.
"""

from __future__ import annotations

import calendar
from collections.abc import Mapping, Sequence
from datetime import date, time, timedelta
from decimal import ROUND_UP, Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from dispatcher.core.arrangements.terms import ARRANGEMENT_STAGE, Instalment
from dispatcher.core.models import Account, AccountState, Channel
from dispatcher.core.money import cents

OFFER_ID_PATTERN = r"^[a-z][a-z0-9_]{0,39}$"
_CENT = Decimal("0.01")


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MinimumPaymentOffer(_Strict):
    kind: Literal["minimum_payment"]
    share: Decimal = Field(ge=0, le=1, description="Share of the overdue amount, e.g. 0.1 for 10 %.")
    floor: Decimal | dict[str, Decimal] = Field(
        default=Decimal("0"),
        description="At least this much, in the account's currency: one amount, or one per currency "
        "({CNY: 100, EUR: 15}; a currency not listed has no floor). Never more than is owed.",
    )
    days: int = Field(default=14, ge=1, le=60, description="Pay within this many days of the offer.")

    def floor_in(self, currency: str) -> Decimal:
        if isinstance(self.floor, dict):
            return self.floor.get(currency, Decimal("0"))
        return self.floor


class InstalmentOffer(_Strict):
    kind: Literal["instalment"]
    months: int = Field(ge=1, le=120, description="Monthly instalments, e.g. 3, 6 or 12.")
    fee: Decimal = Field(default=Decimal("0"), ge=0, description="A flat fee added to the plan (account currency).")
    rate: Decimal = Field(
        default=Decimal("0"), ge=0, le=1, description="A monthly rate on the overdue amount, simple: 0.01 = 1 %."
    )
    first_due_days: int = Field(default=7, ge=0, le=60, description="The first instalment is due this many days on.")


Offer = Annotated[MinimumPaymentOffer | InstalmentOffer, Field(discriminator="kind")]


class ReminderStep(_Strict):
    """The contact before each instalment while an arrangement is kept (under every window, cap and spacing
    rule, like any contact)."""

    channel: Channel = Channel.SMS
    template: str = Field(default="instalment_reminder", min_length=1)
    days_before: int = Field(default=2, ge=0, le=14, description="Days before the instalment's due date.")
    hour: int = Field(default=10, ge=0, le=23, description="Local hour in the debtor's zone.")


class ArrangementRules(_Strict):
    grace_days: int = Field(
        default=3,
        ge=0,
        le=30,
        description="An instalment unpaid this long after its due date breaks the arrangement; the ladder "
        "resumes at the stage the days past due give.",
    )
    reminder: ReminderStep | None = ReminderStep()


def overdue(account: Account, state: AccountState) -> Decimal:
    """What is owed now: the balance less what was paid."""
    return max(account.balance - state.paid, Decimal("0"))


def computed(offer: MinimumPaymentOffer | InstalmentOffer, owed: Decimal, currency: str, today: date) -> dict[str, Any]:
    """One offer for one account, as a template reads it (amounts Decimal, dates date)."""
    if isinstance(offer, MinimumPaymentOffer):
        amount = min(max((owed * offer.share).quantize(_CENT, rounding=ROUND_UP), offer.floor_in(currency)), owed)
        return {"kind": offer.kind, "amount": amount, "due": today + timedelta(days=offer.days)}
    plan = instalment_plan(offer, owed, today)
    return {
        "kind": offer.kind, "months": offer.months, "instalment": plan[0].amount if plan else Decimal("0"),
        "total": sum((i.amount for i in plan), Decimal("0")), "first_due": plan[0].due if plan else today,
    }  # fmt: skip


def offers_for(
    offers: Mapping[str, MinimumPaymentOffer | InstalmentOffer], account: Account, state: AccountState, today: date
) -> dict[str, dict[str, Any]]:
    """Every offer the strategy declares, computed for the account (what templates read as `offers`)."""
    owed = overdue(account, state)
    return {name: computed(offer, owed, account.currency, today) for name, offer in offers.items()}


def instalment_plan(offer: InstalmentOffer, owed: Decimal, today: date) -> tuple[Instalment, ...]:
    """The dated instalments of an instalment offer: equal amounts cut to the cent, the last taking the
    remainder; the first due `first_due_days` on, then the same day of each month (the month's last day
    when it is shorter)."""
    total = owed + cents(owed * offer.rate * offer.months) + offer.fee
    if total <= 0:
        return ()
    each = cents(total / offer.months)
    first = today + timedelta(days=offer.first_due_days)
    amounts = [each] * (offer.months - 1) + [total - each * (offer.months - 1)]
    return tuple(Instalment(due=_months_on(first, n), amount=amount) for n, amount in enumerate(amounts) if amount > 0)


def _months_on(day: date, months: int) -> date:
    year, month = divmod(day.month - 1 + months, 12)
    year, month = day.year + year, month + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def offer_problems(
    stage_names: Sequence[tuple[int, str]], rules: ArrangementRules, windows: Mapping[Channel, Any]
) -> list[str]:
    """A stage named like a kept arrangement's own, and a reminder hour outside its channel's window; one
    `path: problem` line each. (A stage naming an offer the strategy does not declare is `strategy check`'s:
    `stage_offer_problems`; at run time such a name only shows nothing.)"""
    problems = [
        f"stages.{index}.name: {ARRANGEMENT_STAGE!r} is the name of a kept arrangement's reminders; give the "
        "stage another"
        for index, name in stage_names
        if name == ARRANGEMENT_STAGE
    ]
    reminder = rules.reminder
    window = windows.get(reminder.channel) if reminder is not None else None
    if reminder is not None and window is not None and not window.start <= time(reminder.hour) < window.end:
        problems.append(f"arrangements.reminder.hour: hour {reminder.hour} lies outside the {reminder.channel} "
                        f"window {window.start:%H:%M}-{window.end:%H:%M}")  # fmt: skip
    return problems


def stage_offer_problems(data: Mapping[str, Any]) -> list[str]:
    """Offers a stage lists that the strategy's `offers` does not declare, read from the raw file."""
    raw_offers, raw_stages = data.get("offers"), data.get("stages")
    declared: dict[str, Any] = raw_offers if isinstance(raw_offers, dict) else {}
    stages: list[Any] = raw_stages if isinstance(raw_stages, list) else []
    problems = []
    for s_index, stage in enumerate(stages):
        names = stage.get("offers") if isinstance(stage, dict) else None
        for o_index, offer in enumerate(names if isinstance(names, list) else []):
            if offer not in declared:
                known = ", ".join(sorted(declared)) or "none"
                problems.append(
                    f"stages.{s_index}.offers.{o_index}: no offer {offer!r} in `offers` (declared: {known})"
                )
    return problems
