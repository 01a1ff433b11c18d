"""Aliyun SMS's pushes: delivery reports (SmsReport) and replies (SmsUp), each a JSON array.

Aliyun signs neither, so the URLs configured at Aliyun carry a secret path segment
(DISPATCHER_ALIYUN_WEBHOOK_TOKEN, compared in constant time); any other path is a 404, read and written
nothing. The token only keeps strangers out: a report is believed only when Aliyun's own QuerySendDetails,
asked with the report's number, day and BizId, holds a message with the report's OutId (our contact id) and
a final status, and the outcome recorded is the one QuerySendDetails gives (a forged or altered report
changes nothing). A report QuerySendDetails cannot confirm yet (still waiting, or the lookup failed) is
answered with a non-zero code, so Aliyun pushes it again after 1, 5 and 10 minutes; every other push is
answered `{"code": 0}`.

A reply of STOP, TD, T or 退订 (the whole reply, trimmed, in any case) opts every account of that number out of
sms, as a STOP to Twilio does.
"""

from __future__ import annotations

import hmac
import json
import re
from datetime import datetime
from typing import Annotated, Any

import anyio
import structlog
from fastapi import APIRouter, Path, Request
from pydantic import BaseModel

from channels import callbacks
from channels.aliyun_sms import AliyunSmsAdapter, send_status
from channels.base import DeliveryError, ProviderOutcome
from config.settings import Settings
from dispatcher.api.errors import ApiError, FieldError, responses
from dispatcher.api.webhooks.recorder import FINAL_RANK, AppSettings, Callbacks
from dispatcher.core.models import CONTACT_ID, Channel

router = APIRouter(tags=["webhooks"])
log = structlog.get_logger("dispatcher.api.webhooks")
OPT_OUT_REPLIES = frozenset({"stop", "td", "t", "退订"})
OUTCOME_OF = {"delivered": "delivered", "failed": "undelivered"}
Token = Annotated[str, Path(description="The secret path token given to Aliyun: DISPATCHER_ALIYUN_WEBHOOK_TOKEN.")]
ARRAY_BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": {"type": "array", "items": {"type": "object"}}}}}}  # fmt: skip


class AliyunAnswer(BaseModel):
    """What Aliyun expects back: code 0 when the push was taken; anything else and it pushes again."""

    code: int
    msg: str


ROUTE: dict[str, Any] = {"response_model": AliyunAnswer, "responses": responses(404, 422), "openapi_extra": ARRAY_BODY}


def _check_token(settings: Settings, token: str) -> None:
    expected = settings.aliyun_webhook_token.get_secret_value().encode()
    if not hmac.compare_digest(token.encode(), expected):
        raise ApiError(404, "not_found", "no such webhook")


def _array(body: bytes) -> list[dict[str, Any]]:
    try:
        value = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        value = None
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        message = "the body must be a JSON array of objects"
        raise ApiError(422, "validation", message, [FieldError(field="body", message=message)])
    return value


def confirmed_all(settings: Settings, reports: list[dict[str, Any]]) -> list[ProviderOutcome | str]:
    """Each report's verdict (`confirmed`), asked through one client."""
    adapter = AliyunSmsAdapter(settings, timeout=5.0)
    try:
        return [confirmed(adapter, report) for report in reports]
    finally:
        adapter.close()


def confirmed(adapter: AliyunSmsAdapter, report: dict[str, Any]) -> ProviderOutcome | str:
    """The outcome QuerySendDetails confirms for a report; 'later' when it cannot yet, 'ignored' when it does not."""
    out_id, biz_id = str(report.get("out_id") or ""), str(report.get("biz_id") or "")
    phone = re.sub(r"\D", "", str(report.get("phone_number") or ""))[-11:]
    try:
        day = datetime.strptime(str(report.get("send_time") or ""), "%Y-%m-%d %H:%M:%S").date()
    except ValueError:
        return "ignored"
    if not CONTACT_ID.match(out_id) or len(phone) != 11:
        return "ignored"
    try:
        details = adapter.query_details(phone, day, biz_id or None)
    except DeliveryError as exc:
        log.warning("aliyun.report_unconfirmed", contact_id=out_id, reason=str(exc))
        return "later"
    ours = [detail for detail in details if detail.get("OutId") == out_id]
    if not ours:
        return "ignored"  # Aliyun sent no such message: forged, or not ours
    status = send_status(ours[0])
    if status not in OUTCOME_OF:
        return "later"  # still waiting for the carrier: Aliyun's next push will find it final
    detail = {"status": status, "err_code": ours[0].get("ErrCode"), "template_code": ours[0].get("TemplateCode")}
    return ProviderOutcome(out_id, OUTCOME_OF[status], biz_id or f"out:{out_id}", detail)


@router.post(callbacks.ALIYUN_SMS_REPORT, summary="Aliyun SMS delivery reports (SmsReport), believed when "
             "QuerySendDetails agrees", operation_id="aliyunSmsReport", **ROUTE)  # fmt: skip
async def sms_report(token: Token, request: Request, settings: AppSettings, recorder: Callbacks) -> AliyunAnswer:
    _check_token(settings, token)
    later = 0
    reports = _array(await request.body())
    verdicts = await anyio.to_thread.run_sync(confirmed_all, settings, reports)
    for report, verdict in zip(reports, verdicts, strict=True):
        if isinstance(verdict, ProviderOutcome):
            await recorder.outcomes([verdict], Channel.SMS, FINAL_RANK, "aliyun", provider="aliyun")
        elif verdict == "later":
            later += 1
        else:
            log.warning("aliyun.report_ignored", out_id=str(report.get("out_id"))[:80])
    if later:
        return AliyunAnswer(code=1, msg=f"{later} report(s) not confirmed yet; push again")
    return AliyunAnswer(code=0, msg="接收成功")


@router.post(callbacks.ALIYUN_SMS_UP, summary="Aliyun SMS replies (SmsUp): STOP, TD, T, 退订 opt out of sms",
             operation_id="aliyunSmsUp", **ROUTE)  # fmt: skip
async def sms_up(token: Token, request: Request, settings: AppSettings, recorder: Callbacks) -> AliyunAnswer:
    _check_token(settings, token)
    for reply in _array(await request.body()):
        digits = re.sub(r"\D", "", str(reply.get("phone_number") or ""))
        digits = digits[2:] if len(digits) == 13 and digits.startswith("86") else digits
        content = str(reply.get("content") or "").strip().casefold()
        if content in OPT_OUT_REPLIES and len(digits) == 11:
            sequence = str(reply.get("sequence_id") or "")
            accounts = await recorder.consent(f"+86{digits}", "opt_out", sequence, source="aliyun")
            log.info("sms.inbound", provider="aliyun", intent="opt_out", accounts=accounts)
        else:
            log.info("sms.inbound", provider="aliyun", intent=None)
    return AliyunAnswer(code=0, msg="接收成功")
