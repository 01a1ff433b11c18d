"""An Aliyun SMS (Dysmsapi 2017-05-25) stand-in: SendSms and QuerySendDetails, signed as Aliyun's RPC API is,
refusing what Aliyun refuses, and pushing SmsReport and SmsUp to our webhooks as Aliyun does.

    POST / (or GET /)  Action=SendSms, QuerySendDetails; every request signed (channels/aliyun_signing.py)
        404 InvalidAccessKeyId.NotFound   an AccessKeyId it does not know
        400 SignatureDoesNotMatch         a Signature that is not the secret's; InvalidTimeStamp.Expired
                                          a Timestamp 15 minutes off; SignatureNonceUsed a nonce used again
    SendSms, answered 200 with Aliyun's Code:
        isv.MOBILE_NUMBER_ILLEGAL         PhoneNumbers not a mainland mobile (11 digits, 1[3-9]...)
        isv.SMS_SIGNATURE_ILLEGAL         a SignName not approved
        isv.SMS_TEMPLATE_ILLEGAL          a TemplateCode not approved (`remove_template(code)` withdraws one)
        isv.INVALID_JSON_PARAM            TemplateParam not a JSON object of strings
        isv.TEMPLATE_MISSING_PARAMETERS   a variable of the approved template missing
        isv.AMOUNT_NOT_ENOUGH             the balance spent (`balance = 0`; None is unlimited)
        isv.BUSINESS_LIMIT_CONTROL        the number's daily limit (`daily_limit_per_number`, 50) reached
        isp.SYSTEM_ERROR                  the next `system_errors` sends
        OK                                {"BizId"}; the message kept for QuerySendDetails, its report pushed
    QuerySendDetails  PhoneNumber, SendDate (yyyyMMdd, the last 30 days), BizId, PageSize (1..50), CurrentPage

A report is pushed `push_delay` seconds after the send: SendStatus 3 DELIVERED, or 2 for a number ending
0001 (ErrCode MK:0001). Pushes go to {callback_base_url}/v1/webhooks/aliyun/{token}/sms-report (SmsUp, from
`POST /_sandbox/sms-up {"phone_number", "content"}`, to .../sms-up) as a JSON array; an answer other than
{"code": 0} is pushed again after 1, 5 and 10 minutes, each divided by `clock_factor` (the demo's clock).
Faults as every sandbox: `faults.set(fail_503=N, fail_429=N, latency=s, hang=s, accept_then_hang=N)`; down is
`stop()`. `now` gives the sandbox's time (a test sets it). Log: aliyun.ndjson.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from collections import Counter
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from channels import callbacks
from channels.aliyun_signing import TIMESTAMP_FORMAT, signature_matches
from channels.sandbox.server import EventLog, FaultInjector

ZONE = ZoneInfo("Asia/Shanghai")
DEFAULT_VARIABLES = ("name", "account_ref", "amount", "pay_url")  # what every approved sandbox template uses
RETRY_MINUTES = (1, 5, 10)
_MOBILE = re.compile(r"1[3-9]\d{9}\Z")
_FRESH = timedelta(minutes=15)


class AliyunSandbox:
    def __init__(
        self,
        state_dir: Path,
        access_key_id: str,
        access_key_secret: str,
        sign_names: tuple[str, ...],
        templates: dict[str, tuple[str, ...]],
        callback_base_url: str | None,
        webhook_token: str,
        clock_factor: float = 1.0,
        push_delay: float = 0.05,
    ) -> None:
        self.log = EventLog(state_dir / "aliyun.ndjson")
        self.faults = FaultInjector()
        self.access_key_id, self.access_key_secret = access_key_id, access_key_secret
        self.sign_names = set(sign_names)
        self.templates = dict(templates)  # approved TemplateCode -> the variables its text uses
        self.callback_base_url, self.webhook_token = callback_base_url, webhook_token
        self.clock_factor, self.push_delay = clock_factor, push_delay
        self.daily_limit_per_number = 50
        self.balance: int | None = None  # texts left; None: never runs out
        self.system_errors = 0  # the next N sends answer isp.SYSTEM_ERROR
        self.now: Callable[[], datetime] = lambda: datetime.now(UTC)
        self.sent: list[dict[str, Any]] = []  # QuerySendDetails' records, with BizId and the day
        self._per_number: Counter[tuple[str, str]] = Counter()
        self._nonces: dict[str, datetime] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def remove_template(self, code: str) -> None:
        self.templates.pop(code, None)
        self.log.append({"event": "template.removed", "template_code": code})

    def messages(self) -> list[dict[str, Any]]:
        return [record for record in self.log.read() if record["event"] == "message.sent"]

    def pushes(self) -> list[dict[str, Any]]:
        return [record for record in self.log.read() if record["event"] == "push.posted"]

    def handle(self, method: str, params: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """The HTTP status and JSON answer of one API request."""
        refusal = self._unauthenticated(method, params)
        if refusal is not None:
            self.log.append({"event": "request.refused", "action": params.get("Action"), **refusal[1]})
            return refusal
        action = params.get("Action")
        if action == "SendSms":
            return 200, self._send(params)
        if action == "QuerySendDetails":
            return self._query(params)
        return 404, _error("InvalidAction.NotFound", f"Specified api {action!r} is not found.")

    def _unauthenticated(self, method: str, params: dict[str, str]) -> tuple[int, dict[str, Any]] | None:
        if params.get("AccessKeyId") != self.access_key_id:
            return 404, _error("InvalidAccessKeyId.NotFound", "Specified access key is not found.")
        if not signature_matches(method, params, self.access_key_secret):
            return 400, _error("SignatureDoesNotMatch", "Specified signature is not matched with our calculation.")
        try:
            stamp = datetime.strptime(params.get("Timestamp", ""), TIMESTAMP_FORMAT).replace(tzinfo=UTC)
        except ValueError:
            return 400, _error("MissingTimestamp", "Timestamp is mandatory for this action.")
        now = self.now()
        if abs(now - stamp) > _FRESH:
            return 400, _error("InvalidTimeStamp.Expired", "Specified time stamp or date value is expired.")
        self._nonces = {nonce: at for nonce, at in self._nonces.items() if now - at <= _FRESH}
        nonce = params.get("SignatureNonce", "")
        if not nonce or nonce in self._nonces:
            return 400, _error("SignatureNonceUsed", "Specified signature nonce was used already.")
        self._nonces[nonce] = now
        return None

    def _send(self, params: dict[str, str]) -> dict[str, Any]:
        refusal = self._refusal(params)
        if refusal is not None:
            self.log.append({"event": "message.refused", "code": refusal["Code"], "phone": params.get("PhoneNumbers"),
                             "out_id": params.get("OutId")})  # fmt: skip
            return refusal
        now = self.now().astimezone(ZONE)
        phone = params["PhoneNumbers"]
        self._per_number[phone, now.strftime("%Y%m%d")] += 1
        if self.balance is not None:
            self.balance -= 1
        biz_id = f"{secrets.randbelow(10**15):015d}^{secrets.randbelow(10**10):010d}"
        values = json.loads(params["TemplateParam"] or "{}")
        record = {
            "BizId": biz_id, "PhoneNum": phone, "SendStatus": 1, "ErrCode": "", "TemplateCode": params["TemplateCode"],
            "Content": f"【{params['SignName']}】" + " ".join(f"{k}={v}" for k, v in values.items()),
            "SendDate": now.strftime("%Y-%m-%d %H:%M:%S"), "ReceiveDate": "", "OutId": params.get("OutId", ""),
        }  # fmt: skip
        self.sent.append(record)
        self.log.append({"event": "message.sent", "biz_id": biz_id, "phone": phone, "out_id": record["OutId"],
                         "template_code": record["TemplateCode"], "params": values})  # fmt: skip
        self._spawn(self._report(record))
        return {"Code": "OK", "Message": "OK", "BizId": biz_id, "RequestId": _request_id()}

    def _refusal(self, params: dict[str, str]) -> dict[str, Any] | None:
        phone, code = params.get("PhoneNumbers", ""), params.get("TemplateCode", "")
        if self.system_errors > 0:
            self.system_errors -= 1
            return _error("isp.SYSTEM_ERROR", "isp.SYSTEM_ERROR")
        if not _MOBILE.match(phone):
            return _error("isv.MOBILE_NUMBER_ILLEGAL", "非法手机号")
        if params.get("SignName") not in self.sign_names:
            return _error("isv.SMS_SIGNATURE_ILLEGAL", "该账号下找不到对应签名")
        if code not in self.templates:
            return _error("isv.SMS_TEMPLATE_ILLEGAL", "该账号下找不到对应模板")
        try:
            values = json.loads(params.get("TemplateParam") or "{}")
        except ValueError:
            values = None
        if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
            return _error("isv.INVALID_JSON_PARAM", "JSON参数不合法，只接受字符串值")
        missing = [name for name in self.templates[code] if not values.get(name)]
        if missing:
            return _error("isv.TEMPLATE_MISSING_PARAMETERS", f"模板缺少变量 {', '.join(missing)}")
        if self.balance is not None and self.balance <= 0:
            return _error("isv.AMOUNT_NOT_ENOUGH", "账户余额不足")
        if self._per_number[phone, self.now().astimezone(ZONE).strftime("%Y%m%d")] >= self.daily_limit_per_number:
            return _error("isv.BUSINESS_LIMIT_CONTROL", "触发号码天级流控")
        return None

    def _query(self, params: dict[str, str]) -> tuple[int, dict[str, Any]]:
        phone, day, biz_id = params.get("PhoneNumber", ""), params.get("SendDate", ""), params.get("BizId")
        try:
            size, page = int(params.get("PageSize", "")), int(params.get("CurrentPage", ""))
            asked = datetime.strptime(day, "%Y%m%d").date()
        except ValueError:
            return 400, _error("isv.INVALID_PARAMETERS", "PageSize, CurrentPage or SendDate is not valid")
        today = self.now().astimezone(ZONE).date()
        if not 1 <= size <= 50 or page < 1 or not today - timedelta(days=29) <= asked <= today:
            return 400, _error("isv.INVALID_PARAMETERS", "SendDate must be within 30 days; PageSize 1 to 50")
        dashed = asked.isoformat()
        found = [
            {key: value for key, value in record.items() if key != "BizId"}  # the details carry no BizId
            for record in self.sent
            if record["PhoneNum"] == phone and record["SendDate"].startswith(dashed)
            and (not biz_id or record["BizId"] == biz_id)
        ]  # fmt: skip
        listed = found[(page - 1) * size : page * size]
        return 200, {"Code": "OK", "Message": "OK", "RequestId": _request_id(), "TotalCount": len(found),
                     "SmsSendDetailDTOs": {"SmsSendDetailDTO": listed}}  # fmt: skip

    def reply(self, phone: str, content: str) -> None:
        """The debtor answers a text: pushed as SmsUp (on the sandbox's loop: other threads POST /_sandbox/sms-up)."""
        up = {"phone_number": phone, "send_time": self.now().astimezone(ZONE).strftime("%Y-%m-%d %H:%M:%S"),
              "content": content, "sign_name": next(iter(sorted(self.sign_names)), ""), "dest_code": "",
              "sequence_id": secrets.randbelow(10**12)}  # fmt: skip
        self._spawn(self._push(callbacks.ALIYUN_SMS_UP, [up]))

    async def _report(self, record: dict[str, Any]) -> None:
        await asyncio.sleep(self.push_delay)
        failed = record["PhoneNum"].endswith("0001")
        record.update(SendStatus=2 if failed else 3, ErrCode="MK:0001" if failed else "DELIVERED",
                      ReceiveDate=self.now().astimezone(ZONE).strftime("%Y-%m-%d %H:%M:%S"))  # fmt: skip
        report = {"phone_number": record["PhoneNum"], "send_time": record["SendDate"],
                  "report_time": record["ReceiveDate"], "success": not failed, "err_code": record["ErrCode"],
                  "err_msg": "用户接收失败" if failed else "用户接收成功", "sms_size": "1",
                  "biz_id": record["BizId"], "out_id": record["OutId"]}  # fmt: skip
        await self._push(callbacks.ALIYUN_SMS_REPORT, [report])

    async def _push(self, path: str, body: list[dict[str, Any]]) -> None:
        """POST the array; again after 1, 5 and 10 minutes (scaled by the clock factor) until it is {"code": 0}."""
        if not self.callback_base_url:
            return
        url = self.callback_base_url.rstrip("/") + path.replace("{token}", self.webhook_token)
        for attempt, wait in enumerate((0, *RETRY_MINUTES)):
            await asyncio.sleep(wait * 60 / self.clock_factor)
            record = {"event": "push.posted", "kind": path.rsplit("/", 1)[-1], "attempt": attempt, "body": body}
            try:
                async with httpx.AsyncClient(timeout=5.0) as client:
                    response = await client.post(url, json=body)
                answer = response.json() if response.status_code == 200 else None
            except (httpx.HTTPError, ValueError) as exc:
                self.log.append({**record, "error": repr(exc)})
                continue
            self.log.append({**record, "status": response.status_code, "answer": answer})
            if isinstance(answer, dict) and answer.get("code") == 0:
                return

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _error(code: str, message: str) -> dict[str, Any]:
    return {"Code": code, "Message": message, "RequestId": _request_id()}


def _request_id() -> str:
    raw = secrets.token_hex(16).upper()
    return f"{raw[:8]}-{raw[8:12]}-{raw[12:16]}-{raw[16:20]}-{raw[20:]}"


def create_app(sandbox: AliyunSandbox) -> FastAPI:
    app = FastAPI(title="Aliyun SMS sandbox")
    sandbox.faults.mount(app)

    def unavailable(status: int) -> dict[str, Any]:
        if status == 429:
            return _error("Throttling.User", "Request was denied due to user flow control.")
        return _error("ServiceUnavailable", "The request has failed due to a temporary failure of the server.")

    @app.api_route("/", methods=["GET", "POST"])
    async def rpc(request: Request) -> Response:
        fault = await sandbox.faults.intercept(unavailable)
        if fault is not None:
            return fault
        params = dict(request.query_params)
        if request.method == "POST":
            params.update(parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True))
        status, answer = sandbox.handle(request.method, params)
        if status == 200 and params.get("Action") == "SendSms" and answer.get("Code") == "OK":
            await sandbox.faults.hold_after_accept(sandbox.log)
        return JSONResponse(answer, status_code=status)

    @app.post("/_sandbox/sms-up")
    async def sms_up(request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            body = None
        if not isinstance(body, dict) or not body.get("phone_number"):
            return JSONResponse({"error": 'expected {"phone_number": "138...", "content": "..."}'}, status_code=400)
        sandbox.reply(str(body["phone_number"]), str(body.get("content", "")))
        return JSONResponse({"queued": True})

    return app
