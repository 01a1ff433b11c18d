"""Business events, agent dispositions and ad-hoc contacts through a real uvicorn server."""

# ruff: noqa: F811 - the fixtures imported from tests.api_fixtures come back as test parameters

from __future__ import annotations

import pytest

from tests.api_fixtures import Api, account_body, api, api_keys, api_settings  # noqa: F401

pytestmark = pytest.mark.integration


@pytest.fixture
def account(api: Api) -> str:
    assert api.put_account("A1", account_body()).status_code == 201
    return "A1"


def event(api: Api, body: dict, account_id: str = "A1", **kwargs) -> dict:
    response = api.post(f"/v1/accounts/{account_id}/events", body, **kwargs)
    return {"status_code": response.status_code, **response.json()}


def test_a_payment_in_full_resolves_the_account(api: Api, account: str) -> None:
    result = event(api, {"kind": "payment", "amount": "5000.00"})
    assert (result["status_code"], result["status"], result["state"]["status"]) == (200, "applied", "resolved")
    assert result["next_wakeup"] is None


@pytest.mark.parametrize(
    ("body", "check"),
    [
        ({"kind": "promise_to_pay", "amount": "500", "due": "2026-03-09"}, lambda s: s["promise"]["amount"] == "500"),
        ({"kind": "dispute", "reason": "not mine"}, lambda s: "dispute" in s["holds"]),
        ({"kind": "hardship", "days": 10}, lambda s: s["holds"]["hardship"] == "2026-03-12"),
        ({"kind": "opt_out", "channel": "sms"}, lambda s: s["opted_out"] == ["sms"]),
        ({"kind": "do_not_contact"}, lambda s: s["do_not_contact"] is True),
    ],
)
def test_each_business_event_changes_the_state(api: Api, account: str, body: dict, check) -> None:
    result = event(api, body)
    assert result["status_code"] == 200, result
    assert check(result["state"])


def test_opt_in_and_dispute_resolved_undo_their_counterparts(api: Api, account: str) -> None:
    event(api, {"kind": "opt_out", "channel": "email"})
    event(api, {"kind": "dispute"})
    assert event(api, {"kind": "opt_in", "channel": "email"})["state"]["opted_out"] == []
    assert event(api, {"kind": "dispute_resolved"})["state"]["holds"] == {}


def test_a_repeated_event_id_is_applied_once(api: Api, account: str) -> None:
    body = {"kind": "payment", "amount": "10.00", "event_id": "bank-tx-1"}
    assert event(api, body)["status"] == "applied"
    assert event(api, body)["status"] == "duplicate"
    assert api.store.load("A1").record.state.paid == 10


def test_a_promise_in_the_past_is_rejected_naming_due(api: Api, account: str) -> None:
    result = event(api, {"kind": "promise_to_pay", "amount": "500", "due": "2026-02-01"})
    assert (result["status_code"], result["fields"][0]["field"]) == (422, "due")


def test_an_unknown_kind_and_a_bad_amount_name_their_fields(api: Api, account: str) -> None:
    assert event(api, {"kind": "bribe"})["fields"][0]["field"] == "kind"
    result = event(api, {"kind": "payment", "amount": "-1"})
    assert (result["status_code"], result["fields"][0]["field"]) == (422, "amount")


def test_an_event_for_an_unknown_account_is_404_naming_account_id(api: Api) -> None:
    result = event(api, {"kind": "dispute"}, account_id="GHOST")
    assert (result["status_code"], result["fields"][0]["field"]) == (404, "account_id")


def test_agent_wrong_number_invalidates_the_phone(api: Api, account: str) -> None:
    result = event(api, {"kind": "agent_disposition", "disposition": "wrong_number"})
    assert result["state"]["invalid_addresses"] == ["phone"]


def test_agent_promise_needs_its_terms_and_then_pauses_the_account(api: Api, account: str) -> None:
    missing = event(api, {"kind": "agent_disposition", "disposition": "promise"})
    assert missing["status_code"] == 422
    assert {item["field"] for item in missing["fields"]} == {"amount", "due"}
    result = event(api, {"kind": "agent_disposition", "disposition": "promise", "amount": "800", "due": "2026-03-06"})
    assert result["state"]["promise"]["due"] == "2026-03-06"


def test_agent_right_party_starts_the_quiet_period_for_calls(api: Api, account: str) -> None:
    assert event(api, {"kind": "agent_disposition", "disposition": "right_party"})["status"] == "applied"
    decision = api.post(
        "/v1/contacts", {"account_id": "A1", "channel": "voice", "template": "reminder_call", "key": "k1"}
    )
    assert decision.status_code == 200
    assert (decision.json()["verdict"], decision.json()["rule"]) == ("defer", "quiet:voice:7d")


def test_an_adhoc_contact_in_the_window_is_queued(api: Api, account: str) -> None:
    response = api.post("/v1/contacts", {"account_id": "A1", "channel": "email", "template": "reminder_email",
                                         "key": "agent-42"})  # fmt: skip
    assert response.status_code == 200
    assert response.json() == {"contact_id": "A1/adhoc/agent-42/0", "account_id": "A1", "verdict": "send",
                               "rule": None, "until": None, "queued": True}  # fmt: skip
    assert api.store.claims("A1")["A1/adhoc/agent-42/0"] == "queued"


def test_an_adhoc_contact_on_an_opted_out_channel_is_denied_by_rule(api: Api, account: str) -> None:
    event(api, {"kind": "opt_out", "channel": "sms"})
    response = api.post("/v1/contacts", {"account_id": "A1", "channel": "sms", "template": "reminder_sms", "key": "x"})
    assert (response.json()["verdict"], response.json()["rule"], response.json()["queued"]) == (
        "deny", "opted_out:sms", False)  # fmt: skip


def test_an_adhoc_contact_needs_a_known_template_and_account(api: Api, account: str) -> None:
    bad = api.post("/v1/contacts", {"account_id": "A1", "channel": "sms", "template": "no_such", "key": "x"})
    assert (bad.status_code, bad.json()["fields"][0]["field"]) == (422, "template")
    ghost = api.post("/v1/contacts", {"account_id": "Z9", "channel": "sms", "template": "reminder_sms", "key": "x"})
    assert (ghost.status_code, ghost.json()["fields"][0]["field"]) == (404, "account_id")


def test_an_adhoc_key_already_sent_is_a_conflict_naming_key(api: Api, account: str) -> None:
    body = {"account_id": "A1", "channel": "email", "template": "reminder_email", "key": "once"}
    assert api.post("/v1/contacts", body).json()["queued"] is True
    contact = next(c for c in api.engine.replan_many(["A1"])[0].plan.contacts if c.id == "A1/adhoc/once/0")
    assert api.engine.gate.claim(contact).verdict == "send"
    again = api.post("/v1/contacts", body)
    assert (again.status_code, again.json()["fields"][0]["field"]) == (409, "key")
