"""Input at its edges, through the real API (uvicorn over the real Redis), the importer (CSV and NDJSON
into the same store) and the Celery entry: a signed zero, a phone number's extension, an account id with
a slash, a payment in another currency. Each is stored as it should be or refused naming its field."""

# ruff: noqa: F811 - the fixtures imported from tests.api_fixtures come back as test parameters

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis

from dispatcher import deadletters
from dispatcher.engine import Engine
from dispatcher.importer import import_accounts
from dispatcher.store import Store
from tests.api_fixtures import Api, account_body, api, api_keys, api_settings  # noqa: F401
from tests.conftest import make_account
from tests.worker_fixtures import eventually
from workers.runtime import WorkerRuntime

pytestmark = pytest.mark.integration

CSV_HEADER = "id,name,balance,minimum_payment,due_date,timezone,phone\n"


def stored_account(store: Store, account_id: str) -> dict[str, Any]:
    """The account as Redis holds it, not as a model would read it back."""
    raw = store.redis.hget(f"{{a:{account_id}}}:acct", "d")
    assert raw is not None, account_id
    account: dict[str, Any] = json.loads(raw)["account"]
    return account


def import_file(engine: Engine, tmp_path: Path, name: str, rows: list[dict[str, str]]) -> dict[int, str]:
    """Write the rows as CSV or NDJSON (by the name's suffix), import them; the errors by line."""
    path = tmp_path / name
    if name.endswith(".csv"):
        columns = CSV_HEADER.strip().split(",")
        lines = [",".join(row.get(column, "") for column in columns) for row in rows]
        path.write_text(CSV_HEADER + "\n".join(lines) + "\n", encoding="utf-8")
    else:
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return dict(import_accounts(engine, path).errors)


def row(account_id: str, **overrides: str) -> dict[str, str]:
    fields = {"id": account_id, "name": "Li Na", "balance": "10.00", "minimum_payment": "1.00",
              "due_date": "2026-03-01", "timezone": "Asia/Shanghai", "phone": "+8613800138000"}  # fmt: skip
    return {**fields, **overrides}


# A signed zero and other spellings of an amount are stored as the amount.
AMOUNTS = [("-0.00", "0.00"), ("-0", "0"), ("1E+2", "100"), ("5.000", "5.00"), ("12.5", "12.5")]


@pytest.mark.parametrize(("given", "stored"), AMOUNTS)
def test_an_amount_is_stored_in_plain_notation_without_a_minus_zero_through_the_api(
    api: Api, given: str, stored: str
) -> None:
    response = api.put_account("A1", account_body(balance=given, minimum_payment=given))
    assert response.status_code == 201, response.json()
    account = stored_account(api.store, "A1")
    assert account["balance"] == stored, account  # "-0.00" was kept with its minus sign
    assert api.get_account("A1").json()["account"]["balance"] == stored


@pytest.mark.parametrize("suffix", [".csv", ".ndjson"])
def test_an_amount_is_stored_in_plain_notation_without_a_minus_zero_through_the_importer(
    engine: Engine, tmp_path: Path, suffix: str
) -> None:
    rows = [row(f"I{n}", balance=given) for n, (given, _) in enumerate(AMOUNTS)]
    assert import_file(engine, tmp_path, "accounts" + suffix, rows) == {}
    assert [stored_account(engine.store, f"I{n}")["balance"] for n in range(len(AMOUNTS))] == [s for _, s in AMOUNTS]


# A phone number with an extension: neither an SMS nor an automated call can reach it, so it is refused.
EXTENDED = ["+8613800138000x", "+8613800138000x123", "+8613800138000 ext. 5", "+8613800138000;ext=5",
            "+8613800138000#5", "+1 800 FLOWERS"]  # fmt: skip


@pytest.mark.parametrize("phone", EXTENDED)
def test_a_phone_number_with_an_extension_or_letters_is_refused_naming_phone_through_the_api(
    api: Api, phone: str
) -> None:
    response = api.put_account("A1", account_body(phone=phone))
    body = response.json()
    assert (response.status_code, [f["field"] for f in body["fields"]]) == (422, ["phone"]), body  # was 201
    assert api.store.load("A1").record is None


def test_the_phone_message_says_what_is_wrong_and_what_is_allowed(api: Api) -> None:
    extension = api.put_account("A1", account_body(phone="+8613800138000x123")).json()["fields"][0]["message"]
    assert "extension" in extension and "+8613800138000" in extension
    letters = api.put_account("A1", account_body(phone="+1 800 FLOWERS")).json()["fields"][0]["message"]
    assert "digits" in letters


def test_a_phone_number_with_a_trailing_newline_is_refused_not_stored_with_it(api: Api) -> None:
    # The E.164 fast path's "$" matched before a final newline: the number was stored with the newline.
    response = api.put_account("A1", account_body(phone="+8613800138000\n"))
    assert (response.status_code, response.json()["fields"][0]["field"]) == (422, "phone"), response.json()
    assert api.store.load("A1").record is None


def test_an_email_address_with_a_trailing_newline_is_refused_naming_email(api: Api) -> None:
    # The same "$" let "name@example.com\n" through, stored with the newline that would reach a mail header.
    response = api.put_account("A1", account_body(email="xiaoming@example.com\n"))
    assert (response.status_code, response.json()["fields"][0]["field"]) == (422, "email"), response.json()


def test_a_phone_number_with_spaces_and_dashes_is_still_taken_in_e164(api: Api) -> None:
    assert api.put_account("A1", account_body(phone="+86 138-0013-8000")).status_code == 201
    assert stored_account(api.store, "A1")["phone"] == "+8613800138000"


@pytest.mark.parametrize("suffix", [".csv", ".ndjson"])
def test_a_phone_number_with_an_extension_is_refused_by_line_through_the_importer(
    engine: Engine, tmp_path: Path, suffix: str
) -> None:
    rows = [row("G1"), *(row(f"X{n}", phone=phone) for n, phone in enumerate(EXTENDED))]
    errors = import_file(engine, tmp_path, "accounts" + suffix, rows)
    first = 3 if suffix == ".csv" else 2  # the CSV's header is line 1
    assert sorted(errors) == list(range(first, first + len(EXTENDED)))
    assert all(message.startswith("phone: ") for message in errors.values()), errors
    assert engine.store.load("G1").record is not None
    assert all(engine.store.load(f"X{n}").record is None for n in range(len(EXTENDED)))


def test_the_batch_route_stores_a_plain_zero_and_refuses_an_extension_naming_phone(api: Api) -> None:
    lines = [json.dumps(account_body("B1", balance="-0.00")), json.dumps(account_body("B2", phone=EXTENDED[1])),
             json.dumps(account_body("B3/x"))]  # fmt: skip
    response = api.post("/v1/accounts:batch", content="\n".join(lines) + "\n",
                        headers={"Content-Type": "application/x-ndjson"})  # fmt: skip
    results = [json.loads(line) for line in response.text.splitlines()]
    assert results[0] == {"line": 1, "account_id": "B1", "status": "created"}
    assert stored_account(api.store, "B1")["balance"] == "0.00"
    assert [(r["line"], [e["field"] for e in r["errors"]]) for r in results[1:3]] == [(2, ["phone"]), (3, ["id"])]
    assert api.store.load("B2").record is None


# An account id with a slash cannot be a path segment: the answer names account_id and what it may hold.
SLASHED = [("GET", "/v1/accounts/A%2F1"), ("PUT", "/v1/accounts/A%2F1"), ("GET", "/v1/accounts/A/1"),
           ("PUT", "/v1/accounts/A/1"), ("POST", "/v1/accounts/A%2F1/events"), ("POST", "/v1/accounts/A/1/events"),
           ("GET", "/v1/accounts/")]  # fmt: skip


@pytest.mark.parametrize(("method", "path"), SLASHED)
def test_an_account_id_with_a_slash_is_refused_naming_account_id_and_what_is_allowed(
    api: Api, method: str, path: str
) -> None:
    body = account_body(id=None) if method == "PUT" else {"kind": "dispute"}
    headers = {**api.auth(), "Idempotency-Key": "k-slash"}
    response = api.client.request(method, path, json=body if method != "GET" else None, headers=headers)
    answer = response.json()
    assert response.status_code in (404, 422), answer
    assert [f["field"] for f in answer["fields"]] == ["account_id"], answer  # was a bare routing 404
    assert "letters, digits" in answer["message"] and "'/'" in answer["message"], answer
    assert not api.store.redis.keys("{a:*")


def test_an_account_id_with_a_slash_is_refused_naming_id_through_the_importer(engine: Engine, tmp_path: Path) -> None:
    errors = import_file(engine, tmp_path, "accounts.ndjson", [row("A/1"), row("A2")])
    assert list(errors) == [1] and errors[1].startswith("id: "), errors
    assert engine.store.load("A2").record is not None


# A payment states its currency; one in another currency than the account's is refused naming `currency`.
def test_a_payment_in_another_currency_is_refused_naming_currency_and_nothing_is_recorded(api: Api) -> None:
    assert api.put_account("A1", account_body(currency="CNY")).status_code == 201
    before = len(api.store.load("A1").history)
    response = api.post("/v1/accounts/A1/events", {"kind": "payment", "amount": "5000.00", "currency": "USD"})
    body = response.json()
    assert (response.status_code, [f["field"] for f in body["fields"]]) == (422, ["currency"]), body  # was 422 "extra"
    assert "USD" in body["message"] and "CNY" in body["message"], body
    assert len(api.store.load("A1").history) == before
    assert api.store.load("A1").record.state.paid == 0  # type: ignore[union-attr]


def test_a_payment_in_the_accounts_currency_is_applied_and_keeps_its_currency(api: Api) -> None:
    assert api.put_account("A1", account_body(currency="CNY")).status_code == 201
    stated = api.post("/v1/accounts/A1/events", {"kind": "payment", "amount": "100.00", "currency": "CNY"})
    assert (stated.status_code, stated.json()["state"]["paid"]) == (200, "100.00"), stated.json()
    implied = api.post("/v1/accounts/A1/events", {"kind": "payment", "amount": "50.00"})  # the account's currency
    assert (implied.status_code, implied.json()["state"]["paid"]) == (200, "150.00")
    payments = [e.detail for e in api.store.load("A1").history if e.event == "payment"]
    assert payments == [{"amount": "100.00", "currency": "CNY"}, {"amount": "50.00"}]


@pytest.mark.parametrize("currency", ["usd", "US", "", "CNYX"])
def test_a_payment_currency_must_be_an_iso_4217_code(api: Api, currency: str) -> None:
    assert api.put_account("A1", account_body()).status_code == 201
    response = api.post("/v1/accounts/A1/events", {"kind": "payment", "amount": "1.00", "currency": currency})
    assert (response.status_code, [f["field"] for f in response.json()["fields"]]) == (422, ["currency"])


def test_a_payment_in_another_currency_through_celery_is_a_dead_letter_naming_currency(
    runtime: WorkerRuntime, celery_worker: object
) -> None:
    from workers.app import app

    runtime.engine.upsert(make_account("CEL1", currency="CNY"))
    app.send_task("dispatcher.ingest_event", args=["CEL1", {"kind": "payment", "amount": "5000.00",
                                                            "currency": "USD"}], queue="plan")  # fmt: skip
    app.send_task("dispatcher.ingest_event", args=["CEL1", {"kind": "payment", "amount": "10.00",
                                                            "currency": "CNY"}], queue="plan")  # fmt: skip
    eventually(lambda: runtime.engine.store.load("CEL1").record.state.paid == 10)  # type: ignore[union-attr]
    client = redis.Redis.from_url(runtime.settings.redis_url)
    reasons = eventually(lambda: [letter.reason for letter in deadletters.listing(client, count=100)])
    assert any(reason.startswith("currency: ") for reason in reasons), reasons  # type: ignore[union-attr]
    assert runtime.engine.store.load("CEL1").record.state.status == "active"  # type: ignore[union-attr]


def test_the_schema_gains_only_the_payments_optional_currency(api: Api) -> None:
    schema = api.client.get("/openapi.json").json()["components"]["schemas"]
    payment = schema["Payment"]
    assert payment["properties"]["currency"]["anyOf"][0] == {"pattern": "^[A-Z]{3}$", "type": "string"}
    assert "currency" not in payment.get("required", [])
    # The amount normaliser must not turn a constraint into a keyword JSON Schema does not know.
    amount = schema["AgentDisposition"]["properties"]["amount"]["anyOf"][0]
    assert amount == {"exclusiveMinimum": 0.0, "minimum": 0.0, "type": "number"}

    def keys(node: object) -> set[str]:
        if isinstance(node, dict):
            return set(node) | {k for value in node.values() for k in keys(value)}
        return {k for value in node for k in keys(value)} if isinstance(node, list) else set()

    assert not keys(schema) & {"gt", "ge", "lt", "le"}
