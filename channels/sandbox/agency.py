"""A collection-agency stand-in: stores case files as JSON, idempotent by Idempotency-Key.

A new key answers 201; the same key with the same body answers 200 (a replay); the same key with a
different body answers 409. Bearer auth with the agency API key.

Faults as every sandbox, and `accept_then_hang=N`: the next N new cases are stored, then the answer is held
`accept_hang_seconds` (a read timeout after the case arrived: a hand-off in doubt).

GET /cases?reference={contact id} (or ?idempotency_key=...) lists the cases received under that reference
(the case file's `contact_id`, else its Idempotency-Key): {"object": "list", "data": [{"id", "reference",
"account_id", "status", "received_at"}], "count": n}. No filter lists every case, most recent first.
"""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from channels.sandbox.server import EventLog, FaultInjector

CASES_PATH = "/cases"


class AgencySandbox:
    def __init__(self, state_dir: Path, api_key: str) -> None:
        self.cases_dir = state_dir / "cases"
        self.cases_dir.mkdir(parents=True, exist_ok=True)
        self.log = EventLog(state_dir / "agency.ndjson")
        self.api_key = api_key
        self.faults = FaultInjector()
        self.by_key: dict[str, tuple[str, Any]] = {}  # idempotency key -> (case id, body)
        self.cases: dict[str, dict[str, Any]] = {}  # case id -> what the list shows of it

    def receive(self, key: str, case_file: Any) -> JSONResponse:
        if key in self.by_key:
            case_id, first = self.by_key[key]
            status = 200 if first == case_file else 409
            return JSONResponse({"id": case_id, "duplicate": True}, status)
        case_id = "case_" + secrets.token_hex(8)
        (self.cases_dir / f"{case_id}.json").write_text(json.dumps(case_file, ensure_ascii=False, indent=2), "utf-8")
        self.by_key[key] = (case_id, case_file)
        reference = case_file.get("contact_id") if isinstance(case_file, dict) else None
        self.cases[case_id] = {
            "id": case_id,
            "object": "case",
            "reference": str(reference or key),
            "idempotency_key": key,
            "account_id": case_file.get("account_id") if isinstance(case_file, dict) else None,
            "status": "accepted",
            "received_at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        }
        self.log.append({"event": "case.received", "case_id": case_id, "idempotency_key": key})
        return JSONResponse({"id": case_id, "status": "accepted"}, 201)

    def list_cases(self, reference: str | None, idempotency_key: str | None) -> JSONResponse:
        data = [
            case
            for case in reversed(list(self.cases.values()))
            if (reference is None or case["reference"] == reference)
            and (idempotency_key is None or case["idempotency_key"] == idempotency_key)
        ]
        return JSONResponse({"object": "list", "data": data, "count": len(data)})


def create_app(sandbox: AgencySandbox) -> FastAPI:
    app = FastAPI(title="Agency sandbox")
    sandbox.faults.mount(app)

    @app.post(CASES_PATH)
    async def receive_case(request: Request) -> Response:
        fault = await sandbox.faults.intercept(lambda status: {"error": "injected fault", "status": status})
        if fault is not None:
            return fault
        if request.headers.get("authorization") != f"Bearer {sandbox.api_key}":
            return JSONResponse({"error": "unauthorized"}, 401)
        key = request.headers.get("idempotency-key")
        if not key:
            return JSONResponse({"error": "Idempotency-Key header is required"}, 400)
        try:
            case_file = json.loads(await request.body())
        except ValueError:
            return JSONResponse({"error": "body is not JSON"}, 400)
        answer = sandbox.receive(key, case_file)
        if answer.status_code == 201:
            await sandbox.faults.hold_after_accept(sandbox.log)
        return answer

    @app.get(CASES_PATH)
    async def list_cases(request: Request) -> Response:
        fault = await sandbox.faults.intercept(lambda status: {"error": "injected fault", "status": status})
        if fault is not None:
            return fault
        if request.headers.get("authorization") != f"Bearer {sandbox.api_key}":
            return JSONResponse({"error": "unauthorized"}, 401)
        query = request.query_params
        return sandbox.list_cases(query.get("reference"), query.get("idempotency_key"))

    return app
