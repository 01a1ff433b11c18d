"""The debtor model of `simulate` and the demo: seeded per debtor and purpose, the same across processes and
across strategies, answering by local hour, and a parameter file whose errors name the field."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from dispatcher.core.models import Channel
from dispatcher.debtor_model import (
    DEFAULT_DEBTORS,
    DebtorModel,
    DebtorModelError,
    DebtorParameters,
    load_debtor_parameters,
    parse_debtor_parameters,
)

TODAY = date(2026, 3, 10)
ROOT = Path(__file__).resolve().parents[2]


def _behaviour(model: DebtorModel, account_id: str) -> tuple[object, ...]:
    debtor = model.debtor(account_id)
    calls = tuple(debtor.call(hour) for hour in (9, 12, 19, 19, 20))
    return debtor.intent, debtor.keeps, debtor.wrong_number, calls


def test_the_shipped_file_holds_the_documented_defaults() -> None:
    assert load_debtor_parameters(DEFAULT_DEBTORS) == DebtorParameters()


def test_a_debtor_behaves_the_same_whoever_else_is_asked_first_and_in_what_order() -> None:
    ids = [f"ACC{i:07d}" for i in range(50)]
    forwards = DebtorModel(DebtorParameters(), seed=3)
    first = {account_id: _behaviour(forwards, account_id) for account_id in ids}
    backwards = DebtorModel(DebtorParameters(), seed=3)
    # Another strategy makes other contacts, in another order, to other debtors first: each debtor's own
    # streams still give the same answers (common random numbers).
    backwards.debtor("ACC9999999").call(10)
    assert {account_id: _behaviour(backwards, account_id) for account_id in reversed(ids)} == first
    assert {account_id: _behaviour(DebtorModel(DebtorParameters(), seed=4), account_id) for account_id in ids} != first


def test_the_draws_do_not_depend_on_the_processs_hash_seed() -> None:
    script = (
        "from dispatcher.debtor_model import DebtorModel, DebtorParameters\n"
        "m = DebtorModel(DebtorParameters(), 1)\n"
        "print([(m.debtor(f'A{i}').intent, m.debtor(f'A{i}').call(19)) for i in range(30)])\n"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT,
            env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"},
        ).stdout
        for seed in ("1", "2", "random")
    }  # fmt: skip
    assert len(outputs) == 1


def test_calls_are_picked_up_by_the_local_hour() -> None:
    params = DebtorParameters(
        answer_by_local_hour={19: 1.0}, wrong_number=0.0, intents={"pay_in_full": 1.0}, unanswered={"busy": 1.0}
    )
    debtor = DebtorModel(params, seed=1).debtor("A1")
    assert [debtor.call(19) for _ in range(5)] == ["answered"] * 5
    assert [debtor.call(3) for _ in range(5)] == ["busy"] * 5


def test_the_shares_of_intents_follow_the_parameters() -> None:
    model = DebtorModel(DebtorParameters(), seed=1)
    counts = Counter(model.debtor(f"A{i}").intent for i in range(20_000))
    for intent, share in DebtorParameters().intents.items():
        assert counts[intent] / 20_000 == pytest.approx(share, abs=0.015), intent


def test_an_agreed_plan_adds_up_to_what_is_owed_in_monthly_instalments_and_a_broken_one_stops_early() -> None:
    kept, broken = 0, 0
    for keeps in (True, False):
        params = DebtorParameters(
            intents={"plan": 1.0}, plan_kept=1.0 if keeps else 0.0, act_after={"call": 1.0}, wrong_number=0.0
        )
        for index in range(40):
            debtor = DebtorModel(params, seed=index).debtor("A1")
            actions = debtor.react(Channel.VOICE, "continuous", TODAY, Decimal("1000.00"), Decimal("100"), True)
            plan = actions[0]
            assert plan.kind == "plan" and plan.offer in params.plan_offers
            assert sum(i.amount for i in plan.instalments) == Decimal("1000.00")
            dues = [i.due for i in plan.instalments]
            assert dues == sorted(dues) and dues[0] > TODAY and len(dues) == int(plan.offer.rsplit("_", 1)[1])
            payments = [a for a in actions if a.kind == "pay"]
            assert len(payments) == plan.paid
            kept += keeps and plan.paid == len(dues)
            broken += (not keeps) and plan.paid < len(dues)
            assert debtor.react(Channel.VOICE, "continuous", TODAY, Decimal("1000"), Decimal("100"), True) == []
    assert (kept, broken) == (40, 40)


def test_a_stop_debtor_replies_to_an_sms_only_and_a_wrong_number_says_so_on_an_answered_call() -> None:
    stop = DebtorModel(DebtorParameters(intents={"stop": 1.0}, wrong_number=0.0), seed=1).debtor("A1")
    assert stop.react(Channel.EMAIL, "reminder", TODAY, Decimal(10), Decimal(1), False) == []
    assert [a.kind for a in stop.react(Channel.SMS, "reminder", TODAY, Decimal(10), Decimal(1), False)] == ["stop"]
    wrong = DebtorModel(DebtorParameters(wrong_number=1.0), seed=1).debtor("A1")
    assert [a.kind for a in wrong.react(Channel.VOICE, "early", TODAY, Decimal(10), Decimal(1), True)] == [
        "wrong_party"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("intents: {pay_in_full: 0.5, stop: 0.2}", "intents: the shares must sum to 1, not 0.7"),
        ("intents: {pay_later: 1.0}", "intents.pay_later.[key]: Input should be"),
        ("promise_kept: 1.5", "promise_kept: Input should be less than or equal to 1"),
        ("answer_by_local_hour: {24: 0.2}", "answer_by_local_hour.24.[key]: Input should be less than or equal to 23"),
        ("plan_offers: {instalment_x: 1}", "plan_offers.instalment_x: the offer id must end in its months"),
        ("promise_days: [9, 2]", "promise_days: [9, 2] must be [shortest, longest]"),
        ("promis_kept: 0.5", "promis_kept: Extra inputs are not permitted"),
        ("- a list", "(top level): expected a mapping of parameters"),
    ],
)
def test_a_bad_parameter_is_refused_naming_its_field(text: str, expected: str) -> None:
    with pytest.raises(DebtorModelError) as refused:
        parse_debtor_parameters(text, "debtors.yaml")
    assert any(line.startswith(expected) for line in refused.value.errors), refused.value.errors
