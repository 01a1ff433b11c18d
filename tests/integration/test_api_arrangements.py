"""Payment arrangements through a real uvicorn server: made from instalments or an offer, idempotent,
cancelled, and every bad input refused with nothing written."""

# ruff: noqa: F811 - the fixtures imported from tests.api_fixtures come back as test parameters

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from tests.api_fixtures import Api, account_body, api, api_keys, api_settings  # noqa: F401

pytestmark = pytest.mark.integration

PLAN = [{"due": "2026-03-10", "amount": "100.00"}, {"due": "2026-04-10", "amount": "100.00"}]


@pytest.fixture
def account(api: Api) -> str:
    # 36 days past due on the test clock (2026-03-02): the continuous stage, which presents the offers.
    assert api.put_account("A1", account_body(balance="300.00", due_date="2026-01-25")).status_code == 201
    return "A1"


def arrange(api: Api, body: dict[str, Any], account_id: str = "A1", **kwargs: Any) -> tuple[int, dict[str, Any]]:
    response = api.post(f"/v1/accounts/{account_id}/arrangements", body, **kwargs)
    return response.status_code, response.json()


def event(api: Api, body: dict[str, Any], account_id: str = "A1") -> dict[str, Any]:
    response = api.post(f"/v1/accounts/{account_id}/events", body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def written(api: Api, account_id: str = "A1") -> tuple[int, Any, int]:
    """What a refusal must leave alone: the version, the state and the history's length."""
    loaded = api.store.load(account_id)
    assert loaded.record is not None
    return loaded.version, loaded.record.state, len(loaded.history)


def test_an_arrangement_of_instalments_pauses_the_ladder_and_shows_its_instalments(api: Api, account: str) -> None:
    status, body = arrange(api, {"arrangement_id": "P1", "instalments": PLAN, "currency": "CNY"})
    assert status == 201, body
    assert (body["id"], body["state"], body["stage"], body["total"]) == ("P1", "active", "arrangement", "200.00")
    assert [(i["number"], i["status"], i["amount"]) for i in body["instalments"]] == [
        (1, "due", "100.00"), (2, "due", "100.00")
    ]  # fmt: skip
    assert body["queued"] == []  # dunning waits; the first reminder is due on 03-08
    listed = api.client.get("/v1/accounts/A1/arrangements", headers=api.auth("reader")).json()
    assert [a["id"] for a in listed] == ["P1"]
    view = api.get_account("A1").json()
    assert view["arrangements"][0]["state"] == "active"
    made = view["timeline"][-1]
    assert (made["event"], made["arrangement_id"], made["instalments"], made["total"]) == (
        "arrangement", "P1", "2026-03-10 100.00, 2026-04-10 100.00", "200.00"
    )  # fmt: skip


def test_an_offer_of_the_strategy_is_computed_for_the_account(api: Api, account: str) -> None:
    status, body = arrange(api, {"arrangement_id": "P1", "offer": "instalment_3"})
    assert status == 201, body
    assert [(i["due"], i["amount"]) for i in body["instalments"]] == [
        ("2026-03-09", "100.00"), ("2026-04-09", "100.00"), ("2026-05-09", "100.00")
    ]  # fmt: skip
    assert body["offer"] == "instalment_3"


def test_the_same_arrangement_id_twice_is_one_arrangement(api: Api, account: str) -> None:
    first = arrange(api, {"arrangement_id": "P1", "instalments": PLAN})
    again = arrange(api, {"arrangement_id": "P1", "instalments": PLAN})
    assert (first[0], again[0]) == (201, 200)
    assert again[1]["id"] == "P1" and len(api.store.load("A1").record.state.arrangements) == 1
    other_terms = arrange(api, {"arrangement_id": "P1", "instalments": PLAN[:1]})
    assert other_terms[0] == 409 and other_terms[1]["fields"][0]["field"] == "arrangement_id"


def test_a_replayed_idempotency_key_answers_the_first_answer(api: Api, account: str) -> None:
    first = arrange(api, {"arrangement_id": "P1", "instalments": PLAN}, idempotency="key-1")
    replay = arrange(api, {"arrangement_id": "P1", "instalments": PLAN}, idempotency="key-1")
    assert first == replay and first[0] == 201


def test_payments_apply_in_order_and_paying_the_plan_off_resolves_the_account(api: Api, account: str) -> None:
    arrange(api, {"arrangement_id": "P1", "instalments": PLAN})
    event(api, {"kind": "payment", "amount": "150.00"})
    plan = api.client.get("/v1/accounts/A1/arrangements", headers=api.auth("reader")).json()[0]
    assert [(i["status"], i["paid"]) for i in plan["instalments"]] == [("paid", "100.00"), ("part_paid", "50.00")]
    # Larger than what remains (50.00): settles the plan, the rest is recorded; the account is resolved.
    after = event(api, {"kind": "payment", "amount": "80.00"})
    assert after["state"]["status"] == "resolved"
    plan = api.client.get("/v1/accounts/A1/arrangements", headers=api.auth("reader")).json()[0]
    assert (plan["state"], plan["paid"], plan["excess"]) == ("kept", "200.00", "30.00")
    assert api.get_account("A1").json()["timeline"][-1]["event"] == "arrangement_kept"


def test_a_lump_sum_ahead_of_the_schedule_pays_the_plan_off(api: Api, account: str) -> None:
    arrange(api, {"arrangement_id": "P1", "instalments": PLAN})
    assert event(api, {"kind": "payment", "amount": "200.00"})["state"]["status"] == "resolved"
    assert api.store.load("A1").record.state.arrangements[0].status == "paid_off"


def test_cancel_resumes_the_ladder_and_cancelling_again_answers_the_same(api: Api, account: str) -> None:
    arrange(api, {"arrangement_id": "P1", "instalments": PLAN})
    response = api.client.delete("/v1/accounts/A1/arrangements/P1", headers=api.auth("events"))
    assert response.status_code == 200 and response.json()["state"] == "cancelled"
    assert response.json()["stage"] == "continuous"  # the stage the days past due give
    again = api.client.delete("/v1/accounts/A1/arrangements/P1", headers=api.auth("events"))
    assert again.status_code == 200 and again.json()["state"] == "cancelled"
    unknown = api.client.delete("/v1/accounts/A1/arrangements/NOPE", headers=api.auth("events"))
    assert unknown.status_code == 404 and unknown.json()["fields"][0]["field"] == "arrangement_id"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"instalments": [{"due": "2026-03-10", "amount": "200.00"}, {"due": "2026-04-10", "amount": "100.01"}]},
         "instalments"),
        ({"instalments": [{"due": "2026-03-01", "amount": "100.00"}]}, "instalments.0.due"),
        ({"instalments": [{"due": "2026-04-10", "amount": "50"}, {"due": "2026-04-10", "amount": "50"}]},
         "instalments.1.due"),
        ({"instalments": [{"due": "2026-04-10", "amount": "50"}, {"due": "2026-03-10", "amount": "50"}]},
         "instalments.1.due"),
        ({"instalments": PLAN, "currency": "EUR"}, "currency"),
        ({"instalments": [{"due": "2026-03-10", "amount": "0"}]}, "instalments.0.amount"),
        ({"instalments": []}, "instalments"),
        ({"offer": "instalment_99"}, "offer"),
        ({"offer": "minimum_payment"}, "offer"),
        ({"offer": "instalment_3", "instalments": PLAN}, "body"),
    ],
)  # fmt: skip
def test_bad_terms_are_refused_naming_the_field_and_nothing_is_written(
    api: Api, account: str, body: dict[str, Any], field: str
) -> None:
    before = written(api)
    status, answer = arrange(api, {"arrangement_id": "P1", **body})
    assert status == 422, answer
    assert field in [f["field"] for f in answer["fields"]], answer
    assert written(api) == before


def test_an_unknown_account_is_a_404(api: Api) -> None:
    status, answer = arrange(api, {"arrangement_id": "P1", "instalments": PLAN}, account_id="NOBODY")
    assert status == 404 and answer["fields"][0]["field"] == "account_id"


@pytest.mark.parametrize(
    "how",
    [
        {"kind": "payment", "amount": "300.00"},  # resolved
        {"kind": "outcome", "contact_id": "A1/legal/handoff/0", "outcome": "handed_off", "channel": "agency"},
        {"kind": "dispute", "reason": "not mine"},  # in dispute: refused (docs/api.md)
    ],
)
def test_a_resolved_handed_off_or_disputed_account_refuses_an_arrangement(
    api: Api, account: str, how: dict[str, Any]
) -> None:
    if how["kind"] == "outcome":
        from dispatcher.core.events import Outcome

        api.engine.record_event("A1", Outcome.model_validate(how))
    else:
        event(api, how)
    before = written(api)
    status, answer = arrange(api, {"arrangement_id": "P1", "instalments": PLAN})
    assert status == 409, answer
    assert answer["error"] == "conflict" and answer["fields"][0]["field"] == "account_id"
    assert written(api) == before


def test_a_second_active_arrangement_is_refused_until_the_first_is_cancelled(api: Api, account: str) -> None:
    arrange(api, {"arrangement_id": "P1", "instalments": PLAN})
    assert arrange(api, {"arrangement_id": "P2", "instalments": PLAN})[0] == 409
    api.client.delete("/v1/accounts/A1/arrangements/P1", headers=api.auth("events"))
    assert arrange(api, {"arrangement_id": "P2", "instalments": PLAN})[0] == 201


def test_the_instalments_may_add_up_to_less_than_the_balance(api: Api, account: str) -> None:
    status, body = arrange(api, {"arrangement_id": "P1", "instalments": PLAN})  # 200.00 of 300.00: a settlement
    assert status == 201 and Decimal(body["total"]) < Decimal("300.00")


def test_the_account_shows_the_offers_its_stage_presents_computed_for_it(api: Api, account: str) -> None:
    offers = api.get_account("A1").json()["offers"]  # the continuous stage: 300.00 owed
    assert offers["minimum_payment"]["amount"] == "100" and offers["minimum_payment"]["due"] == "2026-03-16"
    assert (offers["instalment_3"]["instalment"], offers["instalment_3"]["first_due"]) == ("100.00", "2026-03-09")
    assert offers["instalment_12"]["total"] == "318.00"  # 0.5 % a month for 12 months
    arrange(api, {"arrangement_id": "P1", "offer": "instalment_6"})
    assert api.get_account("A1").json()["offers"] == {}  # none while a plan is kept
