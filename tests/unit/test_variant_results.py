"""What the results per variant count of one account's audit (resolved, cured, rolled, recovered, contacts,
promises, opt-outs, disputes), and the ratio comparison: an arm against itself differs by nothing."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from dispatcher.core.experiments.results import account_facts, variant_report
from dispatcher.core.experiments.statistics import ratio_difference, ratio_sample_needed

START = datetime(2026, 3, 2, tzinfo=UTC)


def _assigned(account_id: str, variant: str = "champion", due: str = "2026-02-25") -> dict[str, Any]:
    return {"at": START, "type": "variant", "change": "assigned", "account_id": account_id, "variant": variant,
            "strategy_sha256": "a" * 64, "balance": "1000.00", "minimum_payment": "100.00",
            "due_date": due}  # fmt: skip


def _event(account_id: str, days: float, event: str, **detail: str) -> dict[str, Any]:
    return {"at": (START + timedelta(days=days)).isoformat(), "type": "event", "account_id": account_id,
            "event": event, "detail": detail}  # fmt: skip


def test_one_accounts_audit_makes_its_facts() -> None:
    entries = [
        _event("X", -1, "payment", amount="5"),  # no variant entry: not counted
        _assigned("A"), _assigned("B"), _assigned("C"),
        {"at": START, "type": "contact", "account_id": "A", "channel": "sms", "status": "sent"},
        {"at": START, "type": "contact", "account_id": "A", "channel": "sms", "status": "failed"},
        _event("A", 1, "promise_to_pay", amount="100.00", due="2026-03-05"),
        _event("A", 3, "payment", amount="100.00"), _event("A", 3, "promise_kept"),
        _event("A", 10, "payment", amount="900.00"),
        _event("B", 2, "opt_out", channel="sms"), _event("B", 4, "dispute"),
        _event("C", 1, "account_updated", balance="0.00"),
    ]  # fmt: skip
    facts = {f.account_id: f for f in account_facts(entries)}
    a, b, c = facts["A"], facts["B"], facts["C"]
    assert set(facts) == {"A", "B", "C"}
    assert a.cured_at == START + timedelta(days=3) and a.resolved_at == START + timedelta(days=10)
    assert (a.recovered, a.contacts["sms"], a.promises_made, a.promises_kept) == (Decimal("1000.00"), 1, 1, 1)
    assert (b.resolved_at, b.cured_at, b.opted_out, b.disputed) == (None, None, True, True)
    assert c.resolved_at == START + timedelta(days=1)  # the bank says nothing is owed
    # 5 days past due at its first plan: the next bucket (30) begins on 2026-03-27
    assert b.rolled(START + timedelta(days=20)) is None and b.rolled(START + timedelta(days=30)) is True
    assert a.rolled(START + timedelta(days=30)) is False


def test_a_promise_paid_off_in_full_counts_kept_and_a_broken_one_does_not() -> None:
    # The engine judges a promise at its due date; an account paid in full closes before that, so no
    # promise_kept is written: the payment in full keeps it.
    entries = [
        _assigned("P"), _assigned("Q"),
        _event("P", 1, "promise_to_pay", amount="1000.00", due="2026-03-05"),
        _event("P", 2, "payment", amount="1000.00"),
        _event("Q", 1, "promise_to_pay", amount="500.00", due="2026-03-05"), _event("Q", 6, "promise_broken"),
        _event("Q", 9, "payment", amount="1000.00"),
    ]  # fmt: skip
    facts = {f.account_id: f for f in account_facts(entries)}
    assert (facts["P"].promises_made, facts["P"].promises_kept) == (1, 1)
    assert (facts["Q"].promises_made, facts["Q"].promises_kept) == (1, 0)


def test_a_report_of_one_arm_has_no_comparison_and_says_null_for_nothing() -> None:
    report = variant_report(account_facts([_assigned("A")]), "champion", ["champion"], {}, START)
    assert report["differences"] == [] and report["variants"][0]["accounts"] == 1
    assert report["variants"][0]["metrics"]["days_to_resolution"] == {"value": None, "low": None, "high": None}
    assert report["variants"][0]["metrics"]["promise_kept_rate"] == {"value": None, "low": None, "high": None}


def test_an_arm_against_itself_differs_by_nothing_and_needs_no_sample() -> None:
    numerators, denominators = [3.0, 0.0, 5.0, 2.0, 7.0], [1.0, 0.0, 1.0, 0.0, 1.0]
    same = ratio_difference(numerators, denominators, numerators, denominators, seed=1)
    assert same.value == 0 and same.low <= 0 <= same.high
    assert ratio_sample_needed(numerators, denominators, numerators, denominators) == math.inf
    assert math.isnan(ratio_difference([1.0], [0.0], [1.0], [1.0]).value)  # nothing to divide by
