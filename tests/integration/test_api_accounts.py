"""Accounts through a real uvicorn server: upsert, read with its timeline, and the streamed NDJSON batch."""

# ruff: noqa: F811 - the fixtures imported from tests.api_fixtures come back as test parameters

from __future__ import annotations

import json

import pytest

from tests.api_fixtures import Api, account_body, api, api_keys, api_settings  # noqa: F401

pytestmark = pytest.mark.integration


def ndjson(response_text: str) -> list[dict]:
    return [json.loads(line) for line in response_text.splitlines() if line]


def test_put_creates_the_account_plans_it_and_queues_its_first_contact(api: Api) -> None:
    response = api.put_account("A1", account_body())
    assert response.status_code == 201
    assert response.json()["status"] == "created"
    assert response.json()["stage"] == "reminder"
    assert response.json()["queued"] == ["A1/reminder/sms/0"]
    assert response.headers["x-request-id"]


def test_putting_the_same_account_again_changes_nothing(api: Api) -> None:
    api.put_account("A1", account_body())
    again = api.put_account("A1", account_body())
    assert (again.status_code, again.json()["status"], again.json()["queued"]) == (200, "unchanged", [])
    assert api.put_account("A1", account_body(balance="4000.00")).json()["status"] == "updated"


def test_the_body_may_leave_out_the_id_but_may_not_contradict_the_path(api: Api) -> None:
    body = account_body()
    del body["id"]
    assert api.put_account("A2", body).status_code == 201
    clash = api.put_account("A3", account_body("A4"))
    assert clash.status_code == 422
    assert clash.json()["fields"][0]["field"] == "id"


def test_a_bad_account_gets_422_naming_every_bad_field(api: Api) -> None:
    response = api.put_account("A1", account_body(balance="-5", phone="12", address={"city": "x"}))
    body = response.json()
    assert (response.status_code, body["error"]) == (422, "validation")
    fields = {item["field"] for item in body["fields"]}
    assert {"balance", "phone", "address.line1", "address.postal_code"} <= fields
    assert api.store.load("A1").record is None


def test_a_bad_account_id_in_the_path_is_named(api: Api) -> None:
    response = api.client.put("/v1/accounts/%20bad", json=account_body(), headers=api.auth())
    assert response.status_code == 422
    assert response.json()["fields"][0]["field"] == "account_id"


def test_get_shows_state_stage_next_wakeup_timeline_and_decisions(api: Api) -> None:
    api.put_account("A1", account_body())
    view = api.get_account("A1").json()
    assert view["stage"] == "reminder"
    assert view["state"]["status"] == "active"
    assert view["next_wakeup"] == "2026-03-03T03:00:00Z"
    assert view["claims"] == {"A1/reminder/sms/0": "queued"}
    assert [row["event"] for row in view["timeline"]] == ["account_created"]
    assert {(d["contact_id"], d["verdict"]) for d in view["decisions"]} >= {("A1/reminder/sms/0", "send")}
    assert view["account"]["phone"] == "+8613800138000"


def test_get_of_an_unknown_account_is_404_naming_account_id(api: Api) -> None:
    response = api.get_account("NOPE")
    assert response.status_code == 404
    assert response.json()["fields"] == [{"field": "account_id", "message": response.json()["message"]}]


def test_a_batch_takes_the_good_lines_and_reports_the_bad_with_line_and_field(api: Api) -> None:
    lines = [
        json.dumps(account_body("B1")),
        "",
        "{not json",
        json.dumps(account_body("B2", balance="lots")),
        json.dumps([1, 2]),
        json.dumps(account_body("B3", phone="+8613900139000")),
    ]
    response = api.post("/v1/accounts:batch", content="\n".join(lines) + "\n",
                        headers={"Content-Type": "application/x-ndjson"})  # fmt: skip
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-ndjson")
    rows = ndjson(response.text)
    assert rows[0] == {"line": 1, "account_id": "B1", "status": "created"}
    assert rows[1]["line"] == 3 and rows[1]["errors"][0]["field"] == "line"
    assert rows[2]["line"] == 4 and rows[2]["errors"][0]["field"] == "balance"
    assert rows[3]["line"] == 5 and "JSON object" in rows[3]["errors"][0]["message"]
    assert rows[4] == {"line": 6, "account_id": "B3", "status": "created"}
    assert rows[5] == {"summary": {"lines": 5, "created": 2, "updated": 0, "unchanged": 0, "rejected": 3}}
    assert api.store.load("B1").record is not None and api.store.load("B2").record is None


def test_a_batch_repeating_an_id_applies_the_lines_in_order(api: Api) -> None:
    lines = [account_body("C1"), account_body("C1", balance="100.00"), account_body("C1", balance="100.00")]
    body = "".join(json.dumps(line) + "\n" for line in lines)
    rows = ndjson(api.post("/v1/accounts:batch", content=body).text)
    assert [row.get("status") for row in rows[:3]] == ["created", "updated", "unchanged"]
    assert api.store.load("C1").record.account.balance == 100


def test_a_batch_streams_thousands_of_lines_with_a_result_each(api: Api) -> None:
    count = 3000

    def body():
        for index in range(count):
            yield (json.dumps(account_body(f"D{index}", phone=f"+86139{index:08d}")) + "\n").encode()

    response = api.post("/v1/accounts:batch", content=body())
    rows = ndjson(response.text)
    assert len(rows) == count + 1
    assert rows[-1]["summary"]["created"] == count
    assert [row["line"] for row in rows[:-1]] == list(range(1, count + 1))


def test_an_overlong_line_is_reported_and_the_next_is_taken(api: Api) -> None:
    body = json.dumps(account_body("E1", name="x" * 70_000)) + "\n" + json.dumps(account_body("E2")) + "\n"
    rows = ndjson(api.post("/v1/accounts:batch", content=body).text)
    assert rows[0]["line"] == 1 and "longer than" in rows[0]["errors"][0]["message"]
    assert rows[1] == {"line": 2, "account_id": "E2", "status": "created"}
