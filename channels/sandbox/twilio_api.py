"""A Twilio-compatible stand-in for Messages.json and Calls.json (API 2010-04-01).

Checks HTTP Basic auth, answers Twilio-shaped JSON, and posts status callbacks to the StatusCallback URL
signed with X-Twilio-Signature exactly as Twilio signs them. What happens depends on the To number:

| To ends in | SMS                                   | voice                                       |
|------------|---------------------------------------|---------------------------------------------|
| 0001       | undelivered, ErrorCode 30003          | failed                                      |
| 0002       | delivered                             | no-answer                                   |
| 0003       | delivered                             | busy                                        |
| 0004       | delivered                             | completed, AnsweredBy machine_end_beep      |
| 0005       | 400, code 21211 (invalid To)          | 400, code 21211                             |
| 0006       | 400, code 21610 (recipient opted out) | completed, AnsweredBy machine_start         |
| anything   | delivered                             | completed, AnsweredBy human (if AMD asked)  |

unless `callee` says how a call to the number ends (twilio_people: the people behind the numbers, and the
inbound SMS they send back through `POST /_sandbox/inbound`).

Every request and every callback is appended to twilio.ndjson in the state dir.

Lists answer as Twilio's do, from the sandbox's memory, most recent first, with Twilio's paging fields
(`first_page_uri`, `next_page_uri`, `previous_page_uri`, `page`, `page_size`, `start`, `end`, `uri`):

    GET .../Messages.json   To, From, DateSent, DateSent<, DateSent>, PageSize (default 50, at most 1000),
                            Page, PageToken -> {"messages": [...], ...}
    GET .../Calls.json      To, From, Status, StartTime, StartTime<, StartTime>, EndTime, EndTime<, EndTime>,
                            PageSize, Page, PageToken -> {"calls": [...], ...}

A date filter never matches a resource whose date is still null (a message not yet sent, a call not yet
started), which is why find_sent filters by number and reads date_created itself.

Creates are refused as Twilio refuses them (twilio/twilio-oai `spec/json/twilio_api_v2010.json`, CreateMessage
and CreateCall, and Twilio's error dictionary): 400 with Twilio's code.

    Messages.json   21604 no To; 21603 neither From nor MessagingServiceSid; 21602 none of Body, MediaUrl,
                    ContentSid (21619 when sent through a MessagingServiceSid); 21617 Body over 1,600 characters;
                    21624 ValidityPeriod not an integer from 1 to 36000; 21609 StatusCallback not an absolute
                    http(s) URL or with `_` in its host name.
    Calls.json      21201 no To; 21213 no From; 21205 none of Url, Twiml, ApplicationSid, or a Url that is not
                    absolute; 32018 Twiml over 4,000 characters; 21209 Method, FallbackMethod or
                    StatusCallbackMethod not GET or POST; 21626 a StatusCallbackEvent not initiated, ringing,
                    answered or completed; 21234 MachineDetection not Enable or DetectMessageEnd, AsyncAmd not
                    true or false, or MachineDetectionTimeout not an integer.

Geo permissions, as a Twilio account sets them: a To number starting with one of the sandbox's
`closed_prefixes` (e.g. ("+86",)) is refused with 400, code 21408 (permission to send to that region is not
enabled) on Messages.json: the provider's refusal, not the debtor's.

Faults: `accept_then_hang=N` makes the next N creates succeed (stored, callbacks scheduled) and then hold
the answer `accept_hang_seconds`: the client times out after its request left (an ambiguous send).
"""

from __future__ import annotations

import asyncio
import base64
import secrets
from collections.abc import Coroutine, Mapping
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qsl

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from twilio.request_validator import RequestValidator

from channels.sandbox.server import EventLog, FaultInjector
from channels.sandbox.twilio_checks import call_refusal, message_refusal
from channels.sandbox.twilio_lists import list_resources, twilio_error
from channels.sandbox.twilio_people import Callee, call_ending, mount_inbound

API_PREFIX = "/2010-04-01/Accounts/{account_sid}"
SMS_REJECTIONS = {
    "0005": (21211, "The 'To' number is not a valid phone number."),
    "0006": (21610, "Attempt to send to unsubscribed recipient"),
}
SMS_FINAL = {"0001": ("undelivered", "30003")}
GEO_CLOSED = 21408  # permission to send an SMS has not been enabled for the region
CALL_FINAL = {
    "0001": ("failed", None),
    "0002": ("no-answer", None),
    "0003": ("busy", None),
    "0004": ("completed", "machine_end_beep"),
    "0006": ("completed", "machine_start"),
}
_GSM7 = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà^{}\\[~]|€\f"
)


def num_segments(body: str) -> int:
    """Twilio's billing segments; kept apart from channels.sms on purpose, as the provider's own count."""
    if all(char in _GSM7 for char in body):
        length, single, multi = len(body) + sum(char in "^{}\\[~]|€\f" for char in body), 160, 153
    else:
        length, single, multi = len(body.encode("utf-16-le")) // 2, 70, 67
    return 1 if length <= single else -(-length // multi)


CALLBACK_CONCURRENCY = 16


class TwilioSandbox:
    """State of one Twilio stand-in: credentials, resources created, the log and the fault injector."""

    def __init__(
        self, log: EventLog, account_sid: str, auth_token: str, callback_delay: float = 0.02,
        inbound_url: str | None = None,
    ) -> None:  # fmt: skip
        self.log = log
        # The people behind the numbers (twilio_people): who picks up, and where their replies are posted.
        self.callee: Callee | None = None
        self.inbound_url = inbound_url
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.validator = RequestValidator(auth_token)
        self.faults = FaultInjector()
        self.resources: dict[str, dict[str, Any]] = {}
        self.callback_delay = callback_delay
        self.closed_prefixes: tuple[str, ...] = ()  # To prefixes this account's geo permissions leave closed
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None
        # Thousands of callbacks waiting inside httpx's own pool cost time quadratic in their number
        # (measured: a whole core for minutes); waiting here in line is cheap.
        self._posting = asyncio.Semaphore(CALLBACK_CONCURRENCY)

    def authorized(self, request: Request, account_sid: str) -> bool:
        expected = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        return account_sid == self.account_sid and request.headers.get("authorization") == f"Basic {expected}"

    def messages(self) -> list[dict[str, Any]]:
        return [record for record in self.log.read() if record["event"] == "message.created"]

    def calls(self) -> list[dict[str, Any]]:
        return [record for record in self.log.read() if record["event"] == "call.created"]

    def callbacks(self) -> list[dict[str, Any]]:
        return [record for record in self.log.read() if record["event"] == "callback.posted"]

    def _callback_client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=5.0)
        return self._client

    def schedule_callbacks(self, url: str | None, updates: list[dict[str, str]]) -> None:
        if url:
            self._spawn(self._post_callbacks(url, updates))

    def twiml_fetched(self) -> list[dict[str, Any]]:
        return [record for record in self.log.read() if record["event"] == "call.twiml"]

    def schedule_twiml_fetch(
        self, url: str, params: dict[str, str], status_url: str | None, status: dict[str, str]
    ) -> None:
        self._spawn(self._fetch_twiml(url, params, status_url, status))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run after the answer, as the provider does; the set keeps the task alive until it ends."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _fetch_twiml(
        self, url: str, params: dict[str, str], status_url: str | None, status: dict[str, str]
    ) -> None:
        client = self._callback_client()
        await asyncio.sleep(self.callback_delay)
        signature = self.validator.compute_signature(url, params)
        record: dict[str, Any] = {"event": "call.twiml", "url": url, "params": params, "call_sid": params["CallSid"]}
        try:
            async with self._posting:
                response = await client.post(url, data=params, headers={"X-Twilio-Signature": signature})
            self.log.append({**record, "status": response.status_code, "twiml": response.text})
        except httpx.HTTPError as exc:
            self.log.append({**record, "error": repr(exc)})  # Twilio would speak "an application error"
        if status_url:
            await self._post_callbacks(status_url, [status])

    async def _post_callbacks(self, url: str, updates: list[dict[str, str]]) -> None:
        client = self._callback_client()  # one per sandbox: a new one per message re-reads the CA bundle
        for params in updates:
            await asyncio.sleep(self.callback_delay)
            signature = self.validator.compute_signature(url, params)
            resource = self.resources.get(params.get("MessageSid") or params.get("CallSid") or "")
            if resource is not None:
                _update_status(resource, params)
            record = {"event": "callback.posted", "url": url, "params": params, "signature": signature}
            try:
                async with self._posting:
                    response = await client.post(url, data=params, headers={"X-Twilio-Signature": signature})
                self.log.append({**record, "status": response.status_code})
            except httpx.HTTPError as exc:
                self.log.append({**record, "error": repr(exc)})


def _now() -> str:
    return format_datetime(datetime.now(UTC))


def _update_status(resource: dict[str, Any], params: Mapping[str, str]) -> None:
    """A status callback's news, written into the resource as Twilio's own record would show it."""
    now = _now()
    resource["date_updated"] = now
    if "MessageStatus" in params:
        resource["status"] = params["MessageStatus"]
        if resource.get("date_sent") is None and params["MessageStatus"] in ("sent", "delivered", "undelivered"):
            resource["date_sent"] = now
        if params.get("ErrorCode"):
            resource["error_code"] = int(params["ErrorCode"])
        return
    resource["status"] = params.get("CallStatus")
    if params.get("CallStatus") in ("completed", "in-progress") and resource.get("start_time") is None:
        resource["start_time"] = now
    if params.get("CallStatus") in ("completed", "busy", "no-answer", "failed", "canceled"):
        resource["end_time"] = now
        resource["duration"] = params.get("CallDuration", "0")
        resource["answered_by"] = params.get("AnsweredBy")


async def _form(request: Request) -> dict[str, str]:
    return dict(parse_qsl((await request.body()).decode("utf-8"), keep_blank_values=True))


def _resource(sandbox: TwilioSandbox, prefix: str, kind: str, form: Mapping[str, str]) -> dict[str, Any]:
    sid = prefix + secrets.token_hex(16)
    now = _now()
    return {
        "sid": sid,
        "account_sid": sandbox.account_sid,
        "to": form.get("To"),
        "from": form.get("From"),
        "status": "queued",
        "date_created": now,
        "date_updated": now,
        "api_version": "2010-04-01",
        "price": None,
        "price_unit": "USD",
        "uri": f"/2010-04-01/Accounts/{sandbox.account_sid}/{kind}/{sid}.json",
    }


def _message(sandbox: TwilioSandbox, form: Mapping[str, str]) -> JSONResponse:
    refusal = message_refusal(form)
    if refusal is not None:
        return JSONResponse(twilio_error(400, *refusal), 400)
    to, body = form["To"], form.get("Body", "")
    if to.startswith(tuple(sandbox.closed_prefixes)):
        return JSONResponse(
            twilio_error(400, GEO_CLOSED, f"Permission to send an SMS has not been enabled for {to}"), 400
        )
    if to[-4:] in SMS_REJECTIONS:
        code, text = SMS_REJECTIONS[to[-4:]]
        return JSONResponse(twilio_error(400, code, text), 400)
    message = _resource(sandbox, "SM", "Messages", form) | {
        "body": body,
        "num_segments": str(num_segments(body)),
        "messaging_service_sid": form.get("MessagingServiceSid"),
        "direction": "outbound-api",
        "date_sent": None,
        "num_media": "0",
        "error_code": None,
        "error_message": None,
    }
    sandbox.resources[message["sid"]] = message
    sandbox.log.append({"event": "message.created", "message": message, "form": dict(form)})
    final, error = SMS_FINAL.get(to[-4:], ("delivered", None))
    base = {"MessageSid": message["sid"], "AccountSid": sandbox.account_sid, "To": to, "From": form.get("From", "")}
    updates = [
        base | {"MessageStatus": "sent"},
        base | {"MessageStatus": final} | ({"ErrorCode": error} if error else {}),
    ]
    sandbox.schedule_callbacks(form.get("StatusCallback"), updates)
    return JSONResponse(message, 201)


def _call(sandbox: TwilioSandbox, form: Mapping[str, str], events: list[str] | None = None) -> JSONResponse:
    refusal = call_refusal(form, events or [])
    if refusal is not None:
        return JSONResponse(twilio_error(400, *refusal), 400)
    to = form["To"]
    if to.endswith("0005"):
        return JSONResponse(twilio_error(400, 21211, "The 'To' number is not a valid phone number."), 400)
    call = _resource(sandbox, "CA", "Calls", form) | {
        "direction": "outbound-api",
        "parent_call_sid": None,
        "start_time": None,
        "end_time": None,
        "duration": None,
        "answered_by": None,
    }
    sandbox.resources[call["sid"]] = call
    sandbox.log.append({"event": "call.created", "call": call, "form": dict(form)})
    final, answered_by = call_ending(sandbox.callee, to) or CALL_FINAL.get(to[-4:], ("completed", "human"))
    params = {
        "CallSid": call["sid"],
        "AccountSid": sandbox.account_sid,
        "To": to,
        "From": form["From"],
        "CallStatus": final,
    }
    if final == "completed":
        params["CallDuration"] = "27"
        if form.get("MachineDetection"):
            params["AnsweredBy"] = answered_by or "human"
        if form.get("Url"):
            # Connected: fetch the call's TwiML as Twilio does, with the detection result, before the status.
            answered = {k: v for k, v in params.items() if k != "CallDuration"} | {"CallStatus": "in-progress"}
            sandbox.schedule_twiml_fetch(form["Url"], answered, form.get("StatusCallback"), params)
            return JSONResponse(call, 201)
    sandbox.schedule_callbacks(form.get("StatusCallback"), [params])
    return JSONResponse(call, 201)


def create_app(sandbox: TwilioSandbox) -> FastAPI:
    app = FastAPI(title="Twilio sandbox")
    sandbox.faults.mount(app)
    mount_inbound(app, sandbox)

    async def guarded(request: Request, account_sid: str) -> Response | dict[str, str]:
        fault = await sandbox.faults.intercept(lambda status: twilio_error(status, 20000 + status, "Injected fault"))
        if fault is not None:
            return fault
        if not sandbox.authorized(request, account_sid):
            return JSONResponse(twilio_error(401, 20003, "Authenticate"), 401)
        return await _form(request)

    async def created(response: JSONResponse) -> Response:
        if response.status_code == 201:
            await sandbox.faults.hold_after_accept(sandbox.log)
        return response

    @app.post(API_PREFIX + "/Messages.json")
    async def create_message(request: Request, account_sid: str) -> Response:
        form = await guarded(request, account_sid)
        return form if isinstance(form, Response) else await created(_message(sandbox, form))

    @app.post(API_PREFIX + "/Calls.json")
    async def create_call(request: Request, account_sid: str) -> Response:
        form = await guarded(request, account_sid)
        if isinstance(form, Response):
            return form
        pairs = parse_qsl((await request.body()).decode("utf-8"), keep_blank_values=True)
        events = [value for name, value in pairs if name == "StatusCallbackEvent"]  # repeated, one per event
        return await created(_call(sandbox, form, events))

    async def listing(request: Request, account_sid: str, kind: str) -> Response:
        fault = await sandbox.faults.intercept(lambda status: twilio_error(status, 20000 + status, "Injected fault"))
        if fault is not None:
            return fault
        if not sandbox.authorized(request, account_sid):
            return JSONResponse(twilio_error(401, 20003, "Authenticate"), 401)
        return list_resources(sandbox.resources, sandbox.account_sid, kind, request.query_params)

    @app.get(API_PREFIX + "/Messages.json")
    async def list_messages(request: Request, account_sid: str) -> Response:
        return await listing(request, account_sid, "Messages")

    @app.get(API_PREFIX + "/Calls.json")
    async def list_calls(request: Request, account_sid: str) -> Response:
        return await listing(request, account_sid, "Calls")

    @app.get(API_PREFIX + "/{kind}/{sid}.json")
    async def fetch(request: Request, account_sid: str, kind: str, sid: str) -> Response:
        if not sandbox.authorized(request, account_sid):
            return JSONResponse(twilio_error(401, 20003, "Authenticate"), 401)
        found = sandbox.resources.get(sid)
        return JSONResponse(found) if found else JSONResponse(twilio_error(404, 20404, "Not found"), 404)

    return app
