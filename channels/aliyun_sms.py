"""SMS to mainland Chinese mobiles through Aliyun (Dysmsapi 2017-05-25), beside Twilio under the sms channel.

Signed HTTP over httpx, as the WeChat, agency and print-vendor adapters are (why not the vendor's SDK:
docs/architecture.md, "Dependencies"); the signature is channels/aliyun_signing.py's.

    POST {endpoint}/  Action=SendSms          PhoneNumbers, SignName, TemplateCode, TemplateParam (a JSON object of
                                              strings), OutId (our contact id) -> {"Code": "OK", "BizId"}
    POST {endpoint}/  Action=QuerySendDetails PhoneNumber, SendDate (yyyyMMdd, the last 30 days), BizId (optional),
                                              PageSize (<= 50), CurrentPage -> {"Code": "OK", "TotalCount",
                                              "SmsSendDetailDTOs": {"SmsSendDetailDTO": [{"OutId", "SendStatus", ...}]}}

Only approved templates send: the message is a TemplateCode and its parameters, never our rendered text. The
provider's `compose` turns the draft into the parameters (amounts and dates formatted as strings in the
debtor's locale); the adapter finds the TemplateCode of the template and locale in
DISPATCHER_ALIYUN_TEMPLATES, as the WeChat adapter finds its template_id, and a template without one is
refused before anything leaves. Numbers are sent as the 11 national digits: `+86` is stripped, which is the
form QuerySendDetails takes and the reports carry; a number outside +86 is not Aliyun's to send.

Errors (`Code`), translated in `translate_aliyun_error` only: isv.MOBILE_NUMBER_ILLEGAL the debtor's number
(`invalid_address`); isv.BUSINESS_LIMIT_CONTROL the number's daily limit (`RecipientLimited`: this contact
waits for the next day in Beijing, nothing else changes); a refused signature, template or parameters, an
empty balance, a key or signature refused (misconfigured: the breaker, the setting named); isp.SYSTEM_ERROR,
throttling and 5xx (transient); a timeout after the request left (ambiguous). SendSms is not idempotent: a
send in doubt is looked up with QuerySendDetails by number, day and OutId (`find_sent`), never sent again.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from babel.dates import format_date
from babel.numbers import format_currency, format_decimal

from channels import spec
from channels.aliyun_signing import signed_params
from channels.base import (
    ContactDeferred,
    DeliveryError,
    Evidence,
    LookupUnavailable,
    OutboundMessage,
    PermanentDeliveryError,
    ProviderMisconfigured,
    ProviderRefused,
    Receipt,
    SentQuery,
    TransientDeliveryError,
    httpx_transport_error,
    parse_retry_after,
    pass_request_gate,
    seconds_until_midnight,
)
from channels.render import babel_locale
from config.settings import Settings

NAME = "aliyun"
GATEWAY_ZONE = ZoneInfo("Asia/Shanghai")  # SendDate, the daily limits and the reports are Beijing time
LOOKUP_DAYS = 30  # QuerySendDetails answers for the last 30 days only
LOOKUP_PAGE_SIZE = 50  # its largest page
LOOKUP_MAX_PAGES = 10  # 500 messages to one number in a day: far past the 50 a day Aliyun allows
SEND_STATUS = {1: "waiting", 2: "failed", 3: "delivered"}  # QuerySendDetails' SendStatus
# What `make demo` and `dispatcher up` with the sandboxes set DISPATCHER_ROUTES to: Chinese debtors' texts go to
# Aliyun first, Twilio after it; everyone else's to Twilio.
CHINA_FIRST_ROUTES: dict[str, dict[str, list[str]]] = {"sms": {"CN": ["aliyun", "twilio"], "*": ["twilio"]}}
_MAINLAND = re.compile(r"\+86(\d{5,15})\Z")
_TEMPLATES = "DISPATCHER_ALIYUN_TEMPLATES"
_SETTING_OF = {
    "isv.SMS_SIGNATURE_ILLEGAL": "DISPATCHER_ALIYUN_SIGN_NAME",
    "isv.SMS_SIGNATURE_SCENE_ILLEGAL": "DISPATCHER_ALIYUN_SIGN_NAME",
    "isv.SIGN_NAME_ILLEGAL": "DISPATCHER_ALIYUN_SIGN_NAME",
    "isv.SMS_TEMPLATE_ILLEGAL": _TEMPLATES,
    "isv.TEMPLATE_MISSING_PARAMETERS": _TEMPLATES,
    "isv.INVALID_JSON_PARAM": _TEMPLATES,
    "isv.TEMPLATE_PARAMS_ILLEGAL": _TEMPLATES,
    "isv.PARAM_LENGTH_LIMIT": _TEMPLATES,
    "isv.AMOUNT_NOT_ENOUGH": "DISPATCHER_ALIYUN_ACCESS_KEY_ID",  # the account's balance: top it up
    "isv.OUT_OF_SERVICE": "DISPATCHER_ALIYUN_ACCESS_KEY_ID",
    "isv.ACCOUNT_NOT_EXISTS": "DISPATCHER_ALIYUN_ACCESS_KEY_ID",
    "isv.ACCOUNT_ABNORMAL": "DISPATCHER_ALIYUN_ACCESS_KEY_ID",
    "isv.PRODUCT_UN_SUBSCRIPT": "DISPATCHER_ALIYUN_ACCESS_KEY_ID",
    "InvalidAccessKeyId.NotFound": "DISPATCHER_ALIYUN_ACCESS_KEY_ID",
    "InvalidAccessKeyId.Inactive": "DISPATCHER_ALIYUN_ACCESS_KEY_ID",
    "Forbidden.RAM": "DISPATCHER_ALIYUN_ACCESS_KEY_ID",
    "isv.RAM_PERMISSION_DENY": "DISPATCHER_ALIYUN_ACCESS_KEY_ID",
    "SignatureDoesNotMatch": "DISPATCHER_ALIYUN_ACCESS_KEY_SECRET",
    "IncompleteSignature": "DISPATCHER_ALIYUN_ACCESS_KEY_SECRET",
}
_TRANSIENT = frozenset(
    {"isp.SYSTEM_ERROR", "isp.RAM_PERMISSION_DENY", "SignatureNonceUsed", "ServiceUnavailable", "InternalError",
     "Throttling", "Throttling.User", "Throttling.Api", "InvalidTimeStamp.Expired"}
)  # fmt: skip


class RecipientLimited(ContactDeferred):
    """isv.BUSINESS_LIMIT_CONTROL: this number has had all the texts Aliyun lets one signature and template
    send it today. The contact waits until the next day in Beijing (`retry_after`); it is not the provider's
    fault (no failover, no weight penalty) and not the debtor's outcome."""


class NotMainlandMobile(ProviderRefused):
    """The contact's number is not a +86 number: Aliyun's domestic SMS cannot carry it. Nothing left (a definite
    non-send), so the contact goes through the channel's next provider, or ends `failed` with none left."""


def mainland_number(to: object) -> str:
    """The national digits of a +86 number (`+8613800138000` -> `13800138000`), the form Aliyun takes."""
    match = _MAINLAND.match(str(to).strip())
    if match is None:
        raise NotMainlandMobile(f"aliyun sends to +86 numbers only, not {str(to)[:6]}…")
    return match.group(1)


def template_params(draft: spec.Draft) -> dict[str, str]:
    """The approved templates' variables, every one a string (Aliyun refuses any other JSON value)."""
    context, locale = draft.context, babel_locale(draft.locale)

    def money(amount: Decimal) -> str:
        return format_currency(amount, str(context["currency"]), locale=locale)

    return {
        "name": str(context["name"]),
        "account_ref": str(context["account_ref"]),
        "amount": money(context["amount"]),
        "minimum": money(context["minimum_payment"]),
        "days": format_decimal(int(context["days_past_due"]), locale=locale),
        "due_date": format_date(context["due_date"], format="long", locale=locale),
        "pay_url": str(context["pay_url"]),
        "phone": str(context["phone"]),
    }


def _compose(draft: spec.Draft) -> OutboundMessage:
    return draft.message(template=draft.template, template_param=template_params(draft))


def _sender(settings: Settings) -> str:
    return settings.aliyun_sign_name


def template_code(templates: Mapping[str, Mapping[str, str]], template: str, locale: str) -> str | None:
    """The TemplateCode of a template in a locale: the exact locale, else its language (en-US -> en)."""
    codes = templates.get(template) or {}
    return codes.get(locale) or codes.get(locale.split("-")[0])


def count_segments(text: str) -> int:
    """Aliyun bills 70 characters (the signature included) as one text, 67 a part when longer."""
    length = len(text)
    return 1 if length <= 70 else math.ceil(length / 67)


class AliyunSmsAdapter:
    """Sends through Dysmsapi (or its sandbox, by settings.aliyun_endpoint) and looks sends up in it."""

    name = NAME

    def __init__(
        self, settings: Settings, *, timeout: float = 10.0, clock: Callable[[], datetime] | None = None
    ) -> None:
        self._endpoint = settings.aliyun_endpoint.rstrip("/") + "/"
        self._key_id = settings.aliyun_access_key_id
        self._secret = settings.aliyun_access_key_secret.get_secret_value()
        self._sign_name = settings.aliyun_sign_name
        self._templates = {name: dict(codes) for name, codes in settings.aliyun_templates.items()}
        self._clock = clock or (lambda: datetime.now(UTC))
        self._http = httpx.Client(timeout=timeout)

    def send(self, message: OutboundMessage) -> Receipt:
        template = str(message.extra.get("template", ""))
        code = template_code(self._templates, template, message.locale)
        if not code:
            label = f"aliyun: no TemplateCode for {template!r} in {message.locale}"
            raise ProviderMisconfigured(label, NAME, _TEMPLATES)
        params = message.extra.get("template_param") or {}
        form = {
            "PhoneNumbers": mainland_number(message.to),
            "SignName": self._sign_name,
            "TemplateCode": code,
            "TemplateParam": json.dumps(params, ensure_ascii=False, separators=(",", ":")),
            "OutId": message.contact_id,
        }
        answer = self._call("SendSms", form, lookup=False)
        return Receipt(
            provider_id=str(answer.get("BizId") or f"out:{message.contact_id}"),
            status="sent",
            segments=count_segments(f"【{self._sign_name}】{message.text}"),
            detail={"template_code": code, "request_id": answer.get("RequestId")},
        )

    def find_sent(self, query: SentQuery) -> Evidence:
        """Whether Aliyun holds a message of this claim: QuerySendDetails for the number on each Beijing day the
        claim spans (two when it spans midnight), a message whose OutId is the contact id. No BizId is known
        for a claim in doubt (its answer never came), and the details carry none: the evidence's id is the
        OutId's. A claim older than Aliyun keeps details for cannot be told (LookupUnavailable)."""
        try:
            phone = mainland_number(query.to)
        except NotMainlandMobile as exc:
            raise LookupUnavailable(str(exc)) from None
        first, last = (moment.astimezone(GATEWAY_ZONE).date() for moment in (query.since, query.until))
        today = self._clock().astimezone(GATEWAY_ZONE).date()
        if first <= today - timedelta(days=LOOKUP_DAYS):
            raise LookupUnavailable(f"aliyun keeps send details {LOOKUP_DAYS} days; the claim is from {first}")
        found: list[dict[str, Any]] = []
        day = first
        while day <= min(last, today):
            found += [d for d in self.query_details(phone, day) if d.get("OutId") == query.contact_id]
            day += timedelta(days=1)
        if not found:
            return Evidence.absent()
        earliest = min(found, key=lambda detail: str(detail.get("SendDate") or ""))
        return Evidence(found=True, provider_id=f"out:{query.contact_id}", status=send_status(earliest))

    def query_details(self, phone: str, day: date, biz_id: str | None = None) -> list[dict[str, Any]]:
        """Every message Aliyun sent `phone` (11 digits) on `day` (Beijing), or the one of `biz_id`, page by page."""
        details: list[dict[str, Any]] = []
        for page in range(1, LOOKUP_MAX_PAGES + 1):
            form = {"PhoneNumber": phone, "SendDate": day.strftime("%Y%m%d"), "PageSize": str(LOOKUP_PAGE_SIZE),
                    "CurrentPage": str(page), **({"BizId": biz_id} if biz_id else {})}  # fmt: skip
            answer = self._call("QuerySendDetails", form, lookup=True)
            listed = (answer.get("SmsSendDetailDTOs") or {}).get("SmsSendDetailDTO") or []
            if not isinstance(listed, list):
                raise TransientDeliveryError("aliyun lookup: SmsSendDetailDTO is not a list")
            details += [detail for detail in listed if isinstance(detail, dict)]
            try:
                total = int(answer.get("TotalCount") or 0)
            except (TypeError, ValueError):
                raise TransientDeliveryError("aliyun lookup: TotalCount is not a number") from None
            if len(listed) < LOOKUP_PAGE_SIZE or len(details) >= total:
                return details
        raise LookupUnavailable(f"aliyun lookup: more than {len(details)} messages to one number in a day")

    def close(self) -> None:
        self._http.close()

    def _call(self, action: str, params: Mapping[str, str], *, lookup: bool) -> dict[str, Any]:
        form = signed_params(action, params, self._key_id, self._secret, self._clock())
        if not lookup:
            pass_request_gate()
        try:
            response = self._http.post(self._endpoint, data=form)
        except httpx.TransportError as exc:
            raise httpx_transport_error(exc, NAME, "DISPATCHER_ALIYUN_ENDPOINT", "transport", sent=not lookup) from exc
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            label = f"aliyun {action} {response.status_code}: unreadable {response.text[:200]!r}"
            if response.status_code == 404:
                raise ProviderMisconfigured(label, NAME, "DISPATCHER_ALIYUN_ENDPOINT")
            # A 200 we cannot read may be an acceptance we cannot see: a send in doubt, never sent again.
            raise TransientDeliveryError(label, ambiguous=not lookup and response.status_code == 200)
        code = str(answer.get("Code") or "")
        if response.status_code == 200 and code == "OK":
            return answer
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        error = translate_aliyun_error(code, str(answer.get("Message") or ""), response.status_code, self._clock())
        if lookup:
            raise lookup_error(error, retry_after)
        if type(error) is TransientDeliveryError and retry_after is not None:
            raise TransientDeliveryError(str(error), retry_after=retry_after)
        raise error


# The sms channel's second provider (channels.EXTRA_PROVIDERS); routes choose it by the debtor's country.
PROVIDER = spec.ProviderSpec(name=NAME, channel="sms", adapter=AliyunSmsAdapter, compose=_compose, sender=_sender)


def send_status(detail: Mapping[str, Any]) -> str:
    """A send detail's SendStatus as a word: waiting (for the carrier's receipt), failed or delivered."""
    try:
        return SEND_STATUS.get(int(detail.get("SendStatus") or 0), "unknown")
    except (TypeError, ValueError):
        return "unknown"


def translate_aliyun_error(code: str, message: str, status: int, now: datetime) -> DeliveryError:
    """What a refused SendSms means for the contact, the provider, or the setting to fix."""
    label = f"aliyun {status} {code or '(no code)'}: {message[:200]}"
    if code == "isv.MOBILE_NUMBER_ILLEGAL":
        return PermanentDeliveryError(label, "invalid_address")
    if code == "isv.BUSINESS_LIMIT_CONTROL":
        return RecipientLimited(label, retry_after=until_next_day(now))
    if code == "isv.DAY_LIMIT_CONTROL":  # the account's own daily total: every contact waits for tomorrow
        return TransientDeliveryError(label, retry_after=until_next_day(now))
    if code in _SETTING_OF:
        return ProviderMisconfigured(label, NAME, _SETTING_OF[code])
    if code in _TRANSIENT or code.startswith("Throttling") or status == 429 or status >= 500:
        return TransientDeliveryError(label)
    if status == 404:
        return ProviderMisconfigured(label, NAME, "DISPATCHER_ALIYUN_ENDPOINT")
    if status in (401, 403):
        return ProviderMisconfigured(label, NAME, "DISPATCHER_ALIYUN_ACCESS_KEY_ID")
    return PermanentDeliveryError(label, "failed")  # any other refusal: sending it again will not help


def lookup_error(error: DeliveryError, retry_after: float | None) -> DeliveryError:
    """For find_sent: a refusal of ours (key, signature, endpoint), throttling or a fault means ask again later,
    never absence; a refusal of the question itself means it cannot be told this way."""
    if isinstance(error, TransientDeliveryError):
        return TransientDeliveryError(f"lookup: {error}", retry_after=retry_after or error.retry_after)
    return LookupUnavailable(f"lookup: {error}")


def until_next_day(now: datetime) -> float:
    """Seconds until midnight in Beijing, when Aliyun's daily limits start again."""
    return seconds_until_midnight(now.astimezone(GATEWAY_ZONE))
