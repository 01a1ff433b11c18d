"""Business events, agent dispositions and ad-hoc contacts through a real uvicorn server."""

# ruff: noqa: F811 - the fixtures imported from tests.api_fixtures come back as test parameters

from __future__ import annotations

from datetime import timedelta

import pytest

from dispatcher.core.events import Outcome
from dispatcher.core.models import ClaimStatus
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
    # Seven days is past the ad-hoc maximum deferral: the answer is a denial naming the wait, not a deferral.
    assert (decision.json()["verdict"], decision.json()["rule"]) == ("deny", "max_deferral:quiet:voice:7d")


def make_the_ladder_text(api: Api) -> None:
    """The ladder's text of 10:00 goes out (claimed and sent): the debtor was contacted now."""
    contact = next(c for c in api.engine.replan_many(["A1"])[0].plan.contacts if c.channel == "sms")
    assert api.engine.gate.claim(contact).verdict == "send"
    api.engine.gate.end_claim(contact, ClaimStatus.SENT)


def test_an_adhoc_contact_in_the_window_is_queued(api: Api, account: str) -> None:
    make_the_ladder_text(api)
    api.clock.advance(timedelta(hours=2))  # the spacing since the ladder's text
    response = api.post("/v1/contacts", {"account_id": "A1", "channel": "email", "template": "reminder_email",
                                         "key": "agent-42"})  # fmt: skip
    assert response.status_code == 200
    body = response.json()
    assert {k: body[k] for k in ("contact_id", "verdict", "rule", "until", "lapses_at", "queued")} == {
        "contact_id": "A1/adhoc/agent-42/0", "verdict": "send", "rule": None, "until": None, "lapses_at": None,
        "queued": True}  # fmt: skip
    assert api.store.claims("A1")["A1/adhoc/agent-42/0"] == "queued"


def adhoc_body(key: str, channel: str = "sms", template: str = "reminder_sms") -> dict:
    return {"account_id": "A1", "channel": channel, "template": template, "key": key}


def history_kinds(api: Api) -> list[str]:
    return [e.event or e.kind for e in api.store.load("A1").history]


@pytest.mark.parametrize(
    ("body", "rule"),
    [({"kind": "dispute"}, "hold:dispute"), ({"kind": "do_not_contact"}, "do_not_contact")],
)
def test_an_adhoc_contact_on_a_held_or_closed_account_is_denied_and_only_the_denial_recorded(
    api: Api, account: str, body: dict, rule: str
) -> None:
    # Acceptance found a 409 "no longer plannable" here, the request recorded and sent when the hold ended.
    event(api, body)
    response = api.post("/v1/contacts", adhoc_body("agent-9"))
    assert response.status_code == 200
    assert (response.json()["verdict"], response.json()["rule"], response.json()["queued"]) == ("deny", rule, False)
    kinds = history_kinds(api)
    assert "adhoc_denied" in kinds and "adhoc_contact" not in kinds
    if body["kind"] == "dispute":
        event(api, {"kind": "dispute_resolved"})
        plan = api.engine.replan_many(["A1"])[0].plan
        assert plan is not None and all("adhoc" not in d.contact_id for d in plan.decisions)


def test_an_adhoc_contact_on_a_handed_off_account_is_denied_not_a_conflict(api: Api, account: str) -> None:
    api.engine.record_event("A1", Outcome(contact_id="A1/legal/handoff/0", outcome="handed_off", channel="agency"))
    response = api.post("/v1/contacts", adhoc_body("agent-10"))
    assert (response.status_code, response.json()["verdict"], response.json()["rule"]) == (200, "deny", "handed_off")


def test_a_deferred_adhoc_contact_says_until_when_and_lapses_after_the_maximum_deferral(api: Api, account: str) -> None:
    make_the_ladder_text(api)
    response = api.post("/v1/contacts", adhoc_body("agent-11", "email", "reminder_email")).json()
    assert (response["verdict"], response["rule"], response["queued"]) == ("defer", "spacing", False)
    assert response["until"] is not None and response["lapses_at"] is not None
    limit = api.engine.strategy.compliance.pressure.adhoc_max_deferral_hours
    api.clock.advance(timedelta(hours=limit, minutes=1))
    api.engine.replan_many(["A1"])
    kinds = history_kinds(api)
    assert kinds.count("adhoc_lapsed") == 1
    assert [e for e in api.store.audit("A1") if e.get("event") == "adhoc_lapsed"]
    assert not [e for e in api.store.load("A1").history if e.kind == "attempt" and "adhoc" in (e.contact_id or "")]


def test_a_request_that_would_wait_past_the_maximum_deferral_is_denied(api: Api, account: str) -> None:
    event(api, {"kind": "agent_disposition", "disposition": "right_party"})  # calls rest for seven days
    response = api.post("/v1/contacts", adhoc_body("agent-12", "voice", "reminder_call")).json()
    assert (response["verdict"], response["rule"]) == ("deny", "max_deferral:quiet:voice:7d")
    assert "adhoc_contact" not in history_kinds(api)


def test_a_payment_repeated_under_another_event_id_with_the_same_reference_counts_once(api: Api, account: str) -> None:
    first = event(api, {"kind": "payment", "amount": "10.00", "event_id": "feed-a-1", "reference": "TX-77"})
    second = event(api, {"kind": "payment", "amount": "10.00", "event_id": "feed-b-9", "reference": "TX-77"})
    assert (first["status"], second["status"]) == ("applied", "duplicate")
    assert second["state"]["paid"] == "10.00"  # a duplicate's reply carries the account's state
    assert api.store.load("A1").record.state.paid == 10


def test_a_duplicate_event_reply_carries_the_state(api: Api, account: str) -> None:
    body = {"kind": "opt_out", "channel": "sms", "event_id": "ops-1"}
    event(api, body)
    again = event(api, body)
    assert (again["status"], again["state"]["opted_out"], again["stage"]) == ("duplicate", ["sms"], "reminder")


@pytest.mark.parametrize("kind", ["hold_lapsed", "promise_kept", "promise_broken", "adhoc_lapsed"])
def test_internal_event_kinds_are_refused_over_http(api: Api, account: str, kind: str) -> None:
    assert event(api, {"kind": kind})["status_code"] == 422


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
