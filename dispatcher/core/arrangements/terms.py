"""Payment arrangements, pure: an agreed plan of instalments, how payments apply to it (in order), and
where it stands — active while it is kept, then kept or paid off (the account resolves), broken (an
instalment unpaid at its due date plus grace: the ladder resumes), or cancelled.

The arrangement lives in the account's state (`AccountState.arrangements`, below the models, which is why
this module imports only the amounts): the planner pauses dunning on it and plans the reminders before each
instalment, the events move it, the account view and the reports read it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from dispatcher.core.money import Money, PositiveMoney

ArrangementStatus = Literal["active", "kept", "broken", "cancelled", "paid_off"]
ENDED_HONOURED = frozenset({"kept", "paid_off"})
# An arrangement id is the step part of its reminders' contact ids (ACCOUNT/arrangement/ID/N): the same shape.
ARRANGEMENT_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
ARRANGEMENT_STAGE = "arrangement"  # the stage part of a reminder's contact id, and the plan's stage while kept
MAX_INSTALMENTS = 120


class Instalment(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    due: date = Field(description="The local day it is due; unpaid at this day plus the grace, the plan breaks.")
    amount: PositiveMoney = Field(description='In the account\'s currency, e.g. "50.00".')


class Arrangement(BaseModel):
    """An agreed plan. `paid` is what payments have put into it since it was made, at most its total;
    it counts against the instalments in order."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(pattern=ARRANGEMENT_ID_PATTERN)
    instalments: tuple[Instalment, ...] = Field(min_length=1, max_length=MAX_INSTALMENTS)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    offer: str | None = Field(default=None, description="The strategy's offer it was made from, if any.")
    made_at: datetime
    status: ArrangementStatus = "active"
    paid: Money = Decimal("0")
    excess: Money = Field(default=Decimal("0"), description="Paid beyond the plan by the payment that settled it.")
    ended_at: datetime | None = None
    missed: int | None = Field(default=None, description="The instalment (1-based) whose miss broke it.")

    @property
    def total(self) -> Decimal:
        return sum((i.amount for i in self.instalments), Decimal("0"))

    @property
    def remaining(self) -> Decimal:
        return self.total - self.paid

    def first_unpaid(self) -> int | None:
        """The index of the first instalment not fully covered by what was paid into the plan."""
        covered = self.paid
        for index, instalment in enumerate(self.instalments):
            if covered < instalment.amount:
                return index
            covered -= instalment.amount
        return None

    def rows(self) -> list[dict[str, Any]]:
        """Each instalment with what covers it and its status: paid, part_paid, due, or missed."""
        covered, rows = self.paid, []
        for number, instalment in enumerate(self.instalments, start=1):
            share = min(covered, instalment.amount)
            covered -= share
            if share == instalment.amount:
                status = "paid"
            elif self.missed is not None and number == self.missed:
                status = "missed"
            else:
                status = "part_paid" if share > 0 else "due"
            rows.append({"number": number, "due": instalment.due.isoformat(), "amount": _text(instalment.amount),
                         "paid": _text(share), "status": status})  # fmt: skip
        return rows

    def view(self) -> dict[str, Any]:
        """The arrangement as the API and `dispatcher account show` give it."""
        return {
            "id": self.id, "state": self.status, "offer": self.offer, "currency": self.currency,
            "total": _text(self.total), "paid": _text(self.paid), "remaining": _text(self.remaining),
            "excess": _text(self.excess), "made_at": self.made_at.isoformat(),
            "ended_at": self.ended_at.isoformat() if self.ended_at else None, "instalments": self.rows(),
        }  # fmt: skip


def _text(amount: Decimal) -> str:
    """An amount as the views write it: always two places ("0.00", "50.00")."""
    return str(amount.quantize(Decimal("0.01")))


def active_arrangement(arrangements: Sequence[Arrangement]) -> Arrangement | None:
    """The account's arrangement being kept now, if any (at most one is active)."""
    return next((a for a in reversed(arrangements) if a.status == "active"), None)


def find(arrangements: Sequence[Arrangement], arrangement_id: str) -> Arrangement | None:
    return next((a for a in arrangements if a.id == arrangement_id), None)


def replaced(arrangements: Sequence[Arrangement], new: Arrangement) -> tuple[Arrangement, ...]:
    """The list with `new` in place of the arrangement of the same id, or after the others."""
    if find(arrangements, new.id) is None:
        return (*arrangements, new)
    return tuple(new if a.id == new.id else a for a in arrangements)


def paid_into(arrangement: Arrangement, amount: Decimal, now: datetime) -> Arrangement:
    """A payment applied to the plan, instalments in order. Covering what remains ends it: kept when only
    the last instalment was left (paid by the schedule), paid off when it settled more (ahead of it); what
    goes beyond the plan is recorded as `excess`."""
    remaining = arrangement.remaining
    if amount < remaining:
        return arrangement.model_copy(update={"paid": arrangement.paid + amount})
    unpaid = arrangement.first_unpaid()
    status = "kept" if unpaid == len(arrangement.instalments) - 1 else "paid_off"
    return arrangement.model_copy(
        update={"paid": arrangement.total, "excess": amount - remaining, "status": status, "ended_at": now}
    )


def ended(arrangement: Arrangement, status: ArrangementStatus, now: datetime, missed: int | None = None) -> Arrangement:
    return arrangement.model_copy(update={"status": status, "ended_at": now, "missed": missed})


@dataclass(frozen=True)
class ArrangementFigures:
    """Arrangements across a book: made, kept (or paid off), broken, cancelled, still active, and the
    amount collected through them (what payments put into the plans)."""

    made: int = 0
    kept: int = 0
    paid_off: int = 0
    broken: int = 0
    cancelled: int = 0
    active: int = 0
    collected: Decimal = Decimal("0")

    def as_dict(self) -> dict[str, Any]:
        return {"made": self.made, "kept": self.kept, "paid_off": self.paid_off, "broken": self.broken,
                "cancelled": self.cancelled, "active": self.active, "collected": _text(self.collected)}  # fmt: skip


def figures(books: Iterable[Sequence[Arrangement]]) -> ArrangementFigures:
    """The figures over every account's arrangements (one sequence per account)."""
    counts = dict.fromkeys(("kept", "paid_off", "broken", "cancelled", "active"), 0)
    made, collected = 0, Decimal("0")
    for arrangements in books:
        for arrangement in arrangements:
            made += 1
            counts[arrangement.status] += 1
            collected += arrangement.paid + arrangement.excess
    return ArrangementFigures(made=made, collected=collected, **counts)
