"""Each account is counted once, under one status, in the demo's live table and summary."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from types import SimpleNamespace

from dispatcher.core.models import AccountState, Promise
from workers.demo_debtors import account_status

PROMISE = Promise(amount=Decimal(10), due=date(2026, 3, 9), made_at=datetime(2026, 3, 2, tzinfo=UTC))


def test_the_status_an_account_is_counted_under() -> None:
    assert account_status(AccountState()) == "active"
    assert account_status(AccountState(promise=PROMISE)) == "promised"
    assert account_status(AccountState(promise=PROMISE, holds={"dispute": None})) == "disputed"
    assert account_status(AccountState(status="resolved", holds={"dispute": None})) == "resolved"
    assert account_status(AccountState(status="handed_off")) == "handed_off"


def test_an_account_keeping_an_arrangement_counts_as_arrangement_and_a_broken_one_does_not() -> None:
    # The arrangements' field as the arrangements branch names it: state.arrangements, each with a status.
    kept = SimpleNamespace(status="active", holds={}, promise=None, arrangements=(SimpleNamespace(status="active"),))
    broken = SimpleNamespace(status="active", holds={}, promise=None, arrangements=(SimpleNamespace(status="broken"),))
    assert account_status(kept) == "arrangement"  # type: ignore[arg-type]
    assert account_status(broken) == "active"  # type: ignore[arg-type]
