"""A print-vendor stand-in shaped like Lob's letters API.

POST /v1/letters (Basic auth, API key as username; multipart/form-data with the PDF as `file` and the
object fields in deepObject form, `to[name]`, `from[address_city]`, `metadata[contact_id]`) stores the PDF,
honours Idempotency-Key (the same key answers the first letter again), and, when a callback base URL is
given, posts signed tracking webhooks: letter.mailed, letter.in_transit, then letter.delivered — or
letter.returned_to_sender when the `to` address_line1 contains 'RETURN'. Webhooks are signed with hex
HMAC-SHA256 over "{timestamp}.{raw body}".

It refuses with 422, as Lob documents (lob/lob-openapi, letter_editable and the address models), a letter
whose `to` or `from` lacks what Lob requires (name or company, address_line1; a US address also city,
2-letter state and a 12345[-1234] ZIP), without `color`, with a `use_type`, `mail_type`,
`address_placement` or boolean field outside Lob's values, metadata beyond 20 keys (keys up to 40
characters, values up to 500), and a PDF whose pages are not 8.5"x11" or whose fonts are not embedded.
`refusing` (set by tests, or POST /_sandbox/refuse {"status": 404}) answers every API request with that
status, as a wrong URL or key would.

GET /v1/letters lists letters as Lob does, from memory, most recent first: `limit` (1..100, default 10),
`after`/`before` cursors, `metadata[key]=value` (deepObject; every pair must match), `date_created[gt|gte|
lt|lte]=ISO 8601`, `include[]=total_count`; the answer is Lob's list object {"data": [...], "object":
"list", "next_url", "previous_url", "count"}. Every route checks the API key.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import io
import json
import operator
import re
import secrets
import time
from datetime import UTC, datetime
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pypdf import PdfReader
from pypdf.errors import PdfReadError
from starlette.datastructures import QueryParams

from channels.callbacks import PRINT_VENDOR, callback_url
from channels.postal import address_problems
from channels.sandbox.server import EventLog, FaultInjector

OBJECT_FIELDS = ("to", "from", "metadata")
USE_TYPES = ("marketing", "operational")
MAIL_TYPES = ("usps_first_class", "usps_standard")
PLACEMENTS = ("top_first_page", "insert_blank_page", "bottom_first_page_center", "bottom_first_page")
LETTER_POINTS = (612.0, 792.0)  # 8.5 x 11 inches: the only size Lob prints
LIST_DEFAULT_LIMIT = 10
LIST_MAX_LIMIT = 100
EVENT_NAMES = {
    "mailed": "Mailed",
    "in_transit": "In Transit",
    "delivered": "Delivered",
    "returned_to_sender": "Returned to Sender",
}
DATE_OPS = {"gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le}


def iso_now() -> str:
    """Lob's timestamps: ISO 8601 in UTC with milliseconds, e.g. 2019-08-08T17:09:14.514Z."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _instant(value: str) -> datetime:
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def lob_error(status: int, message: str) -> dict[str, Any]:
    return {"error": {"message": message, "status_code": status}}


def deep_objects(fields: dict[str, Any]) -> dict[str, Any]:
    """`to[name]`-style form fields as objects; `from` may instead be a saved address id (adr_...)."""
    objects: dict[str, Any] = {}
    for key, value in fields.items():
        match = re.fullmatch(r"(to|from|metadata)\[([A-Za-z0-9_\-]+)\]", key)
        if match and isinstance(value, str):
            objects.setdefault(match[1], {})[match[2]] = value
    for name in ("to", "from"):
        if isinstance(fields.get(name), str):
            objects[name] = fields[name]
    return objects


def letter_problems(fields: dict[str, Any], objects: dict[str, Any], pdf: Any) -> list[str]:
    """What Lob would refuse in a letter create, as `field: problem`."""
    problems: list[str] = []
    for role in ("to", "from"):
        address = objects.get(role)
        if isinstance(address, str):
            if not re.fullmatch(r"adr_[a-z0-9]+", address):
                problems.append(f"{role}: an address id (adr_...) or an address object is required")
        elif not address:
            problems.append(f"{role} is required")
        else:
            problems += address_problems(address, role)
    if fields.get("color") not in ("true", "false"):
        problems.append("color is required (true or false)")
    for name, allowed in (("use_type", USE_TYPES), ("mail_type", MAIL_TYPES), ("address_placement", PLACEMENTS)):
        if name in fields and fields[name] not in allowed:
            problems.append(f"{name} must be one of {', '.join(allowed)}")
    if fields.get("use_type") not in USE_TYPES:
        problems.append("use_type is required (marketing or operational)")
    if "double_sided" in fields and fields["double_sided"] not in ("true", "false"):
        problems.append("double_sided must be true or false")
    metadata = objects.get("metadata") or {}
    if len(metadata) > 20 or any(len(k) > 40 or len(v) > 500 for k, v in metadata.items()):
        problems.append("metadata: at most 20 keys of up to 40 characters, values up to 500")
    problems += pdf_problems(pdf)
    return problems


def pdf_problems(pdf: Any) -> list[str]:
    """A PDF file Lob prints: every page 8.5x11 inches, every font embedded."""
    if not isinstance(pdf, bytes) or not pdf.startswith(b"%PDF"):
        return ["file: a PDF is required"]
    try:
        reader = PdfReader(io.BytesIO(pdf))
        sizes = [(float(page.mediabox.width), float(page.mediabox.height)) for page in reader.pages]
        fonts = [font for page in reader.pages for font in _fonts(page)]
    except (PdfReadError, ValueError, KeyError) as exc:
        return [f"file: not a readable PDF ({exc})"]
    problems = []
    if any(abs(w - LETTER_POINTS[0]) > 1 or abs(h - LETTER_POINTS[1]) > 1 for w, h in sizes):
        problems.append('file: all pages of a PDF must be sized at 8.5"x11"')
    unembedded = sorted({name for name, embedded in fonts if not embedded})
    if unembedded:
        problems.append(f"file: fonts must be embedded ({', '.join(unembedded)})")
    return problems


def _fonts(page: Any) -> list[tuple[str, bool]]:
    found = []
    for ref in ((page.get("/Resources") or {}).get("/Font") or {}).values():
        font = ref.get_object()
        descriptor = font.get("/FontDescriptor")
        if descriptor is None and "/DescendantFonts" in font:
            descriptor = font["/DescendantFonts"][0].get_object().get("/FontDescriptor")
        keys = descriptor.get_object() if descriptor is not None else {}
        found.append((str(font.get("/BaseFont")), any(k in keys for k in ("/FontFile", "/FontFile2", "/FontFile3"))))
    return found


def parse_multipart(content_type: str, body: bytes) -> dict[str, Any]:
    """Form fields (str) and files (bytes) of a multipart/form-data body, with the stdlib parser."""
    head = f"Content-Type: {content_type}\r\n\r\n".encode()
    message = BytesParser(EmailMessage, policy=HTTP).parsebytes(head + body)
    fields: dict[str, Any] = {}
    for part in message.iter_parts() if message.is_multipart() else []:
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        fields[str(name)] = data if part.get_filename() else data.decode("utf-8")
    return fields


class PrintVendorSandbox:
    def __init__(self, state_dir: Path, api_key: str, webhook_secret: str, callback_base_url: str | None) -> None:
        self.letters_dir = state_dir / "letters"
        self.letters_dir.mkdir(parents=True, exist_ok=True)
        self.log = EventLog(state_dir / "print_vendor.ndjson")
        self.api_key = api_key
        self.webhook_secret = webhook_secret
        self.webhook_url = callback_url(callback_base_url, PRINT_VENDOR) if callback_base_url else None
        self.faults = FaultInjector()
        self.letters: dict[str, dict[str, Any]] = {}
        self.by_idempotency_key: dict[str, str] = {}
        self.refusing: int | None = None  # a status every API request gets (404: a wrong URL, 401: a wrong key)
        self._tasks: set[asyncio.Task[None]] = set()

    def refusal(self) -> JSONResponse | None:
        status = self.refusing
        if status is None:
            return None
        messages = {401: "Your API key is not valid.", 403: "Forbidden.", 404: "The requested resource does not exist."}
        return JSONResponse(lob_error(status, messages.get(status, "Refused.")), status)

    def authorized(self, request: Request) -> bool:
        expected = base64.b64encode(f"{self.api_key}:".encode()).decode()
        return request.headers.get("authorization") == f"Basic {expected}"

    def create(self, fields: dict[str, Any]) -> JSONResponse:
        pdf = fields.get("file")
        decoded = deep_objects(fields)
        problems = letter_problems(fields, decoded, pdf)
        if problems:
            return JSONResponse(lob_error(422, "; ".join(problems)), 422)
        assert isinstance(pdf, bytes)
        letter_id = "ltr_" + secrets.token_hex(8)
        (self.letters_dir / f"{letter_id}.pdf").write_bytes(pdf)
        now = iso_now()
        letter = {
            "id": letter_id,
            "object": "letter",
            "pages": len(re.findall(rb"/Type\s*/Page\b", pdf)),
            "mail_type": fields.get("mail_type") or "usps_first_class",
            "use_type": fields.get("use_type"),
            "color": fields.get("color") == "true",
            "double_sided": fields.get("double_sided", "true") == "true",
            "address_placement": fields.get("address_placement") or "top_first_page",
            "metadata": {},
            "status": "rendered",
            "tracking_events": [],
            "date_created": now,
            "date_modified": now,
            **decoded,
        }
        self.letters[letter_id] = letter
        form = sorted(name for name in fields if name != "file")  # the field names as they came, for contract tests
        self.log.append({"event": "letter.created", "letter": letter, "form": form})
        self._schedule_tracking(letter)
        return JSONResponse(letter, 200)

    def _schedule_tracking(self, letter: dict[str, Any]) -> None:
        if self.webhook_url:
            task = asyncio.get_running_loop().create_task(self._post_tracking(letter))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _post_tracking(self, letter: dict[str, Any]) -> None:
        returned = "RETURN" in str(letter.get("to", {}).get("address_line1", "")).upper()
        events = ["mailed", "in_transit", "returned_to_sender" if returned else "delivered"]
        async with httpx.AsyncClient(timeout=5.0) as client:
            for name in events:
                await asyncio.sleep(0.02)
                await self._post_event(client, f"letter.{name}", letter)

    async def _post_event(self, client: httpx.AsyncClient, event_type: str, letter: dict[str, Any]) -> None:
        name = event_type.removeprefix("letter.")
        letter["tracking_events"] = [
            *letter.get("tracking_events", []),
            {
                "id": "evnt_" + secrets.token_hex(8),
                "object": "tracking_event",
                "type": "normal",
                "name": EVENT_NAMES.get(name, name),
                "time": iso_now(),
            },
        ]
        letter["date_modified"] = iso_now()
        event = {
            "id": "evt_" + secrets.token_hex(8),
            "object": "event",
            "event_type": {"id": event_type},
            "body": letter,
        }
        body = json.dumps(event, ensure_ascii=False).encode("utf-8")
        timestamp = str(int(time.time() * 1000))
        signature = hmac.new(self.webhook_secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        headers = {"Content-Type": "application/json", "Lob-Signature": signature, "Lob-Signature-Timestamp": timestamp}
        record = {"event": "webhook.posted", "event_type": event_type, "letter_id": letter["id"]}
        try:
            response = await client.post(str(self.webhook_url), content=body, headers=headers)
            self.log.append({**record, "status": response.status_code})
        except httpx.HTTPError as exc:
            self.log.append({**record, "error": repr(exc)})

    def list_letters(self, base_url: str, query: QueryParams) -> JSONResponse:
        """One page of Lob's letter list: filters, cursors and the list object, most recent first."""
        try:
            limit = int(query.get("limit") or LIST_DEFAULT_LIMIT)
            offset = _cursor(query.get("after") or query.get("before") or "")
            bounds = [
                (DATE_OPS[op], _instant(query[f"date_created[{op}]"]))
                for op in DATE_OPS
                if query.get(f"date_created[{op}]")
            ]
        except (ValueError, KeyError, TypeError):
            return JSONResponse(lob_error(422, "invalid limit, cursor or date_created filter"), 422)
        if not 1 <= limit <= LIST_MAX_LIMIT:
            return JSONResponse(lob_error(422, f"limit must be between 1 and {LIST_MAX_LIMIT}"), 422)
        wanted = {key[len("metadata[") : -1]: value for key, value in query.items() if key.startswith("metadata[")}
        letters = [
            letter
            for letter in reversed(list(self.letters.values()))
            if all(str(letter.get("metadata", {}).get(key)) == value for key, value in wanted.items())
            and all(test(_instant(letter["date_created"]), bound) for test, bound in bounds)
        ]
        if query.get("before"):
            offset = max(0, offset - limit)
        page = letters[offset : offset + limit]
        filters = {key: value for key, value in query.items() if key not in ("after", "before")}

        def url(cursor_name: str, at: int) -> str:
            return f"{base_url}v1/letters?{urlencode({**filters, cursor_name: _encode_cursor(at)})}"

        listing: dict[str, Any] = {
            "data": page,
            "object": "list",
            "next_url": url("after", offset + limit) if offset + limit < len(letters) else None,
            "previous_url": url("before", offset) if offset > 0 else None,
            "count": len(page),
        }
        if "total_count" in query.getlist("include[]") + query.getlist("include"):
            listing["total_count"] = len(letters)
        return JSONResponse(listing)


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode()


def _cursor(value: str) -> int:
    if not value:
        return 0
    offset = json.loads(base64.urlsafe_b64decode(value.encode()))["offset"]
    if not isinstance(offset, int) or offset < 0:
        raise ValueError("bad cursor")
    return offset


def create_app(sandbox: PrintVendorSandbox) -> FastAPI:
    app = FastAPI(title="Print vendor sandbox")
    sandbox.faults.mount(app)

    @app.post("/_sandbox/refuse")
    async def refuse(request: Request) -> dict[str, Any]:
        sandbox.refusing = (await request.json()).get("status")
        return {"refusing": sandbox.refusing}

    async def _turned_away(request: Request) -> Response | None:
        """What a Lob API request meets before its handler: injected faults, a refusal, the API key."""
        fault = await sandbox.faults.intercept(lambda status: lob_error(status, "Injected fault"))
        if fault is not None:
            return fault
        refused = sandbox.refusal()
        if refused is not None:
            return refused
        if not sandbox.authorized(request):
            return JSONResponse(lob_error(401, "Your API key is not valid."), 401)
        return None

    @app.post("/v1/letters")
    async def create_letter(request: Request) -> Response:
        turned_away = await _turned_away(request)
        if turned_away is not None:
            return turned_away
        key = request.headers.get("idempotency-key")
        if key and key in sandbox.by_idempotency_key:
            return JSONResponse(sandbox.letters[sandbox.by_idempotency_key[key]], 200)
        content_type = request.headers.get("content-type", "")
        if not content_type.startswith("multipart/form-data"):
            return JSONResponse(lob_error(422, "a PDF file is uploaded as multipart/form-data"), 422)
        response = sandbox.create(parse_multipart(content_type, await request.body()))
        if key and response.status_code == 200:
            sandbox.by_idempotency_key[key] = json.loads(bytes(response.body))["id"]
        return response

    @app.get("/v1/letters")
    async def list_letters(request: Request) -> Response:
        turned_away = await _turned_away(request)
        if turned_away is not None:
            return turned_away
        return sandbox.list_letters(str(request.base_url), request.query_params)

    @app.get("/v1/letters/{letter_id}")
    async def fetch_letter(request: Request, letter_id: str) -> Response:
        if not sandbox.authorized(request):
            return JSONResponse(lob_error(401, "Your API key is not valid."), 401)
        letter = sandbox.letters.get(letter_id)
        return JSONResponse(letter) if letter else JSONResponse(lob_error(404, "letter not found"), 404)

    @app.delete("/v1/letters/{letter_id}")
    async def cancel_letter(request: Request, letter_id: str) -> Response:
        if not sandbox.authorized(request):
            return JSONResponse(lob_error(401, "Your API key is not valid."), 401)
        if sandbox.letters.pop(letter_id, None) is None:
            return JSONResponse(lob_error(404, "letter not found"), 404)
        sandbox.log.append({"event": "letter.canceled", "letter_id": letter_id})
        return JSONResponse({"id": letter_id, "deleted": True})

    return app
