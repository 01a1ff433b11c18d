"""The pure parts of arrangements: payments in instalment order, how a plan ends, the offers computed for an
account, the strategy's checks of them, and the figures the reports show."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from rich.console import Console

from config.settings import DEFAULT_STRATEGY
from dispatcher.commands.reports import account_tables, arrangement_table
from dispatcher.core.arrangements.offers import InstalmentOffer, MinimumPaymentOffer, computed, instalment_plan
from dispatcher.core.arrangements.terms import Arrangement, Instalment, figures, paid_into
from dispatcher.core.models import AccountRecord, AccountState
from dispatcher.core.strategy import StrategyError, load_strategy, parse_strategy
from tests.conftest import make_account

NOW = datetime(2026, 3, 2, 2, tzinfo=UTC)


def plan(*amounts: str) -> Arrangement:
    instalments = tuple(Instalment(due=date(2026, 3 + i, 10), amount=Decimal(a)) for i, a in enumerate(amounts))
    return Arrangement(id="P1", instalments=instalments, currency="CNY", made_at=NOW)


def test_payments_cover_the_instalments_in_order() -> None:
    arrangement = paid_into(plan("100.00", "100.00", "100.00"), Decimal("150.00"), NOW)
    assert [(r["status"], r["paid"]) for r in arrangement.rows()] == [
        ("paid", "100.00"), ("part_paid", "50.00"), ("due", "0.00")
    ]  # fmt: skip
    assert (arrangement.first_unpaid(), arrangement.remaining, arrangement.status) == (1, Decimal("150.00"), "active")


@pytest.mark.parametrize(
    ("paid_before", "payment", "status", "excess"),
    [
        ("200.00", "100.00", "kept", "0.00"),  # the last instalment, on schedule
        ("200.00", "130.00", "kept", "30.00"),  # and more: the rest recorded
        ("100.00", "200.00", "paid_off", "0.00"),  # two at once: ahead of the schedule
        ("0", "500.00", "paid_off", "200.00"),
    ],
)
def test_covering_what_remains_ends_the_plan(paid_before: str, payment: str, status: str, excess: str) -> None:
    arrangement = plan("100.00", "100.00", "100.00")
    if Decimal(paid_before):
        arrangement = paid_into(arrangement, Decimal(paid_before), NOW)
    ended = paid_into(arrangement, Decimal(payment), NOW)
    assert (ended.status, ended.paid, ended.excess, ended.ended_at) == (status, Decimal("300.00"), Decimal(excess), NOW)


def test_a_minimum_payment_is_a_share_with_a_floor_in_the_currency_and_never_more_than_is_owed() -> None:
    offer = MinimumPaymentOffer(kind="minimum_payment", share=Decimal("0.1"), floor={"CNY": Decimal("100")})
    today = date(2026, 3, 2)
    assert computed(offer, Decimal("5000.00"), "CNY", today)["amount"] == Decimal("500.00")
    assert computed(offer, Decimal("300.00"), "CNY", today)["amount"] == Decimal("100")  # the floor
    assert computed(offer, Decimal("80.00"), "CNY", today)["amount"] == Decimal("80.00")  # never more than owed
    assert computed(offer, Decimal("300.00"), "EUR", today)["amount"] == Decimal("30.00")  # no EUR floor
    assert computed(offer, Decimal("333.33"), "CNY", today)["amount"] == Decimal("100")
    assert computed(offer, Decimal("1234.51"), "CNY", today)["amount"] == Decimal("123.46")  # rounded up


def test_an_instalment_plan_splits_to_the_cent_and_falls_due_monthly() -> None:
    offer = InstalmentOffer(kind="instalment", months=3, first_due_days=29)
    instalments = instalment_plan(offer, Decimal("100.00"), date(2026, 1, 2))
    assert [(i.due, i.amount) for i in instalments] == [
        (date(2026, 1, 31), Decimal("33.33")), (date(2026, 2, 28), Decimal("33.33")),
        (date(2026, 3, 31), Decimal("33.34")),
    ]  # fmt: skip
    with_rate = InstalmentOffer(kind="instalment", months=12, rate=Decimal("0.005"), fee=Decimal("10"))
    total = sum(i.amount for i in instalment_plan(with_rate, Decimal("1200.00"), date(2026, 1, 2)))
    assert total == Decimal("1200.00") + Decimal("72.00") + Decimal("10")


@pytest.mark.parametrize(
    ("offers", "problem"),
    [
        (
            "{bad: {kind: instalment, months: 0}}",
            "offers.bad.instalment.months: Input should be greater than or equal to 1",
        ),
        ("{bad: {kind: instalment}}", "offers.bad.instalment.months: Field required"),
        ("{m: {kind: minimum_payment, share: -0.1}}", "offers.m.minimum_payment.share: Input should be greater than"),
    ],
)
def test_the_strategy_refuses_a_plan_with_no_months_and_a_negative_share(offers: str, problem: str) -> None:
    text = Path(DEFAULT_STRATEGY).read_text(encoding="utf-8").replace("offers:", f"offers: {offers}\nunused:", 1)
    text = text.replace("unused:", "x_offers:")
    with pytest.raises(StrategyError) as caught:
        parse_strategy(text)
    assert any(line.startswith(problem) for line in caught.value.errors), caught.value.errors


def test_the_figures_count_every_plan_by_how_it_ended_and_what_came_through_it() -> None:
    kept = paid_into(plan("100.00"), Decimal("120.00"), NOW)
    broken = plan("50.00", "50.00").model_copy(update={"status": "broken", "paid": Decimal("50.00")})
    found = figures([(kept,), (broken, plan("10.00"))])
    assert found.as_dict() == {"made": 3, "kept": 1, "paid_off": 0, "broken": 1, "cancelled": 0, "active": 1,
                               "collected": "170.00"}  # fmt: skip
    console = Console(width=120, record=True)
    console.print(arrangement_table(found))
    assert "1 (1 to the end, 0 paid off ahead of it)" in console.export_text()


def test_account_show_draws_each_arrangement_with_its_instalments() -> None:
    record = AccountRecord(account=make_account(), state=AccountState(arrangements=(paid_into(plan("100.00", "100.00"),
                           Decimal("150.00"), NOW),)))  # fmt: skip
    console = Console(width=160, record=True)
    for table in account_tables(record, (), {}, None):
        console.print(table)
    text = console.export_text()
    assert "arrangement P1: active, 150.00 of 200.00 CNY" in text and "part_paid" in text


def test_the_shipped_strategy_offers_every_offer_at_the_continuous_stage() -> None:
    strategy = load_strategy(Path(DEFAULT_STRATEGY))
    continuous = next(stage for stage in strategy.stages if stage.name == "continuous")
    assert set(continuous.offers) == set(strategy.offers) == {"minimum_payment", "instalment_3", "instalment_6",
                                                              "instalment_12"}  # fmt: skip


def test_the_celery_entry_reads_arrangements_and_refuses_the_kind_only_time_produces() -> None:
    from dispatcher.core.arrangements.events import ArrangementCancelled, ArrangementMade
    from dispatcher.core.events import EventRejected, parse_external_event

    made = parse_external_event({"kind": "arrangement", "arrangement_id": "P1", "offer": "instalment_3"})
    assert isinstance(made, ArrangementMade) and made.dedup_key == "arrangement:P1"
    cancelled = parse_external_event({"kind": "arrangement_cancelled", "arrangement_id": "P1"})
    assert isinstance(cancelled, ArrangementCancelled)
    with pytest.raises(EventRejected, match="produced by the dispatcher itself"):
        parse_external_event({"kind": "arrangement_broken", "arrangement_id": "P1"})
