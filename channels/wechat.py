"""WeChat: an official account's template messages, to the debtor's openid. A thin adapter over httpx, as the
agency's and the print vendor's are (why not wechatpy: docs/channels.md, "WeChat").

    POST {root}/cgi-bin/stable_token                 {"grant_type": "client_credential", "appid", "secret",
                                                     "force_refresh"} -> {"access_token", "expires_in": 7200}
    POST {root}/cgi-bin/message/template/send?access_token=...
                                                     {"touser", "template_id", "url", "data": {key: {"value"}},
                                                     "client_msg_id"} -> {"errcode": 0, "msgid"}

The token is shared by every worker through a `TokenStore` (Redis in the workers: dispatcher/state/
provider_state.py; in this process alone otherwise), refreshed by one of them `REFRESH_MARGIN` before it
expires. `client_msg_id` is derived from the contact id, so WeChat drops a repeat of the same contact
within its window. The message is the template `{name}.wechat.txt` rendered as `key: value` lines, one per
field of the approved template; `DISPATCHER_WECHAT_TEMPLATE_IDS` maps our template's name to its template_id.

Errors (errcode), translated here only: 40001/42001/40014 a stale token, refreshed once and sent again;
43004 the debtor unfollowed and 43101 refused the account's messages (`opted_out` of the channel); 40003 an
invalid openid (`invalid_address`); 40037 a template_id not approved, 47003 data fields the approved
template lacks, 48001 an API the account may not use, 40013/40125/40164 the AppID, the secret or our IP
(misconfigured: the breaker, the setting named); 45009 the daily quota (wait until midnight in Beijing);
-1 busy (transient). There is no API that lists template messages sent: `find_sent` cannot tell.
"""

from __future__ import annotations

import hashlib
import threading
import time
from datetime import datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import httpx

from channels import spec
from channels.base import (
    DeliveryError,
    Evidence,
    LookupUnavailable,
    OutboundMessage,
    PermanentDeliveryError,
    ProviderMisconfigured,
    Receipt,
    SentQuery,
    TransientDeliveryError,
    httpx_transport_error,
    parse_retry_after,
    pass_request_gate,
    seconds_until_midnight,
)
from config.settings import Settings

PROVIDER = "wechat"
TOKEN_PATH = "/cgi-bin/stable_token"
SEND_PATH = "/cgi-bin/message/template/send"
REFRESH_MARGIN = 300.0  # seconds before expiry when one worker refreshes; the others keep the old token
REFRESH_LOCK_SECONDS = 10.0
STALE_TOKEN = frozenset({40001, 40014, 42001})
OPTED_OUT = frozenset({43004, 43101})
_SETTING_OF = {
    40037: "DISPATCHER_WECHAT_TEMPLATE_IDS",
    47003: "DISPATCHER_WECHAT_TEMPLATE_IDS",
    48001: "DISPATCHER_WECHAT_APP_ID",
    40013: "DISPATCHER_WECHAT_APP_ID",
    40125: "DISPATCHER_WECHAT_APP_SECRET",
    40164: "DISPATCHER_WECHAT_APP_ID",  # our IP is not on the account's whitelist
}
_BASE_URL_SETTING = "DISPATCHER_WECHAT_API_BASE_URL"
_QUOTA_ZONE = ZoneInfo("Asia/Shanghai")  # WeChat's daily quotas reset at midnight, Beijing time


class TokenStore(Protocol):
    """Where the access token is kept and who refreshes it (dispatcher.state.provider_state.ProviderState)."""

    def read_token(self) -> tuple[str, float] | None: ...
    def write_token(self, token: str, expires_at: float) -> None: ...
    def forget_token(self, token: str) -> None: ...
    def try_refresh(self, seconds: float) -> bool: ...
    def refreshed(self) -> None: ...
    def remember_message(self, message_id: str, contact_id: str) -> None: ...


class LocalTokenStore:
    """The token for this process alone (a command, a test): the same contract, kept in memory."""

    def __init__(self) -> None:
        self._token: tuple[str, float] | None = None
        self._lock = threading.Lock()
        self._refreshing = False
        self.messages: dict[str, str] = {}

    def read_token(self) -> tuple[str, float] | None:
        return self._token

    def write_token(self, token: str, expires_at: float) -> None:
        self._token = (token, expires_at)

    def forget_token(self, token: str) -> None:
        if self._token is not None and self._token[0] == token:
            self._token = None

    def try_refresh(self, seconds: float) -> bool:
        with self._lock:
            if self._refreshing:
                return False
            self._refreshing = True
            return True

    def refreshed(self) -> None:
        self._refreshing = False

    def remember_message(self, message_id: str, contact_id: str) -> None:
        self.messages[message_id] = contact_id


def client_msg_id(contact_id: str) -> str:
    """The same for every send of one contact (WeChat drops a repeat within its window), 32 characters."""
    return hashlib.sha256(f"contact:{contact_id}".encode()).hexdigest()[:32]


def template_fields(text: str) -> dict[str, dict[str, str]]:
    """The rendered `key: value` lines as the template message's data; a line without a key is refused."""
    data: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        key, colon, value = line.partition(":")
        if not colon or not key.strip().isidentifier():
            raise PermanentDeliveryError(f"wechat template line {line!r} is not 'field: value'", "failed")
        data[key.strip()] = {"value": value.strip()}
    return data


class WechatAdapter:
    """Sends template messages; the token comes from `store` (shared by every worker when given one)."""

    name = PROVIDER

    def __init__(
        self, settings: Settings, *, store: TokenStore | None = None, timeout: float = 10.0, clock: Any = time.time
    ) -> None:
        self._root = settings.wechat_api_base_url.rstrip("/")
        self._app_id = settings.wechat_app_id
        self._secret = settings.wechat_app_secret.get_secret_value()
        self._template_ids = dict(settings.wechat_template_ids)
        self._store: TokenStore = store if store is not None else LocalTokenStore()
        self._clock = clock
        self._http = httpx.Client(timeout=timeout)
        self.token_fetches = 0  # what this adapter asked stable_token for (the tests count refreshes)

    def send(self, message: OutboundMessage) -> Receipt:
        template = str(message.extra.get("template", ""))
        template_id = self._template_ids.get(template)
        if not template_id:
            raise ProviderMisconfigured(
                f"wechat: no template_id for {template!r}", PROVIDER, "DISPATCHER_WECHAT_TEMPLATE_IDS"
            )
        body = {
            "touser": str(message.to),
            "template_id": template_id,
            "data": template_fields(message.text),
            "client_msg_id": client_msg_id(message.contact_id),
        }
        if message.extra.get("url"):
            body["url"] = str(message.extra["url"])
        token = self._token()
        answer = self._post_send(token, body)
        if answer.get("errcode") in STALE_TOKEN:  # expired or revoked mid-batch: refresh once, send again
            self._store.forget_token(token)
            answer = self._post_send(self._token(stale=token), body)
        errcode = answer.get("errcode", 0)
        if errcode != 0:
            raise translate_wechat_error(errcode, str(answer.get("errmsg", "")), self._clock())
        msgid = str(answer.get("msgid", ""))
        if msgid:
            self._store.remember_message(msgid, message.contact_id)
        return Receipt(provider_id=msgid, status="sent", detail={"client_msg_id": body["client_msg_id"]})

    def find_sent(self, query: SentQuery) -> Evidence:
        """WeChat has no API that lists template messages sent: a send in doubt stays `unknown` unless its
        TEMPLATESENDJOBFINISH push arrives (the reconciler then finds the callback already recorded)."""
        raise LookupUnavailable("wechat has no lookup of template messages sent")

    def close(self) -> None:
        self._http.close()

    def _post_send(self, token: str, body: dict[str, Any]) -> dict[str, Any]:
        pass_request_gate()
        try:
            response = self._http.post(f"{self._root}{SEND_PATH}", params={"access_token": token}, json=body)
        except httpx.TransportError as exc:
            raise httpx_transport_error(exc, PROVIDER, _BASE_URL_SETTING, "send", sent=True) from exc
        return _answer(response, "send")

    def _token(self, stale: str | None = None) -> str:
        """A valid token: the shared one, or a new one fetched by the one refresher (the rest wait for it)."""
        deadline = self._clock() + REFRESH_LOCK_SECONDS
        while True:
            now = self._clock()
            cached = self._store.read_token()
            usable = cached is not None and cached[1] > now and cached[0] != stale
            if usable and cached is not None and cached[1] - REFRESH_MARGIN > now:
                return cached[0]
            if self._store.try_refresh(REFRESH_LOCK_SECONDS):
                try:
                    return self._refresh(stale)
                finally:
                    self._store.refreshed()
            if usable and cached is not None:  # another worker is refreshing early: the old one still holds
                return cached[0]
            if now > deadline:
                raise TransientDeliveryError("wechat: waited too long for another worker's token refresh")
            time.sleep(0.05)

    def _refresh(self, stale: str | None) -> str:
        token, expires_in = self._fetch(force=False)
        if token == stale:  # WeChat still hands out the token it just refused: make it issue another
            token, expires_in = self._fetch(force=True)
        self._store.write_token(token, self._clock() + expires_in)
        return token

    def _fetch(self, force: bool) -> tuple[str, float]:
        self.token_fetches += 1
        body = {
            "grant_type": "client_credential",
            "appid": self._app_id,
            "secret": self._secret,
            "force_refresh": force,
        }
        try:
            response = self._http.post(f"{self._root}{TOKEN_PATH}", json=body)
        except httpx.TransportError as exc:
            raise httpx_transport_error(exc, PROVIDER, _BASE_URL_SETTING, "stable_token", sent=False) from exc
        answer = _answer(response, "stable_token")
        if answer.get("errcode", 0) != 0 or not answer.get("access_token"):
            raise translate_wechat_error(answer.get("errcode", -1), str(answer.get("errmsg", "")), self._clock())
        return str(answer["access_token"]), float(answer.get("expires_in", 7200))


def _compose(draft: spec.Draft) -> OutboundMessage:
    return draft.message(template=draft.template, url=str(draft.context.get("pay_url", "")))


SPEC = spec.ChannelSpec(name=PROVIDER, provider="wechat", adapter=WechatAdapter, compose=_compose, shared_state=True)


def translate_wechat_error(errcode: Any, errmsg: str, now: float) -> DeliveryError:
    label = f"wechat errcode {errcode}: {errmsg[:200]}"
    if errcode in OPTED_OUT:
        return PermanentDeliveryError(label, "opted_out")
    if errcode == 40003:
        return PermanentDeliveryError(label, "invalid_address")
    if errcode in _SETTING_OF:
        return ProviderMisconfigured(label, PROVIDER, _SETTING_OF[errcode])
    if errcode == 45009:
        return TransientDeliveryError(
            label, retry_after=seconds_until_midnight(datetime.fromtimestamp(now, _QUOTA_ZONE))
        )
    if errcode == -1 or errcode in STALE_TOKEN:  # busy, or a token refused twice in a row
        return TransientDeliveryError(label)
    return PermanentDeliveryError(label, "failed")


def _answer(response: httpx.Response, what: str) -> dict[str, Any]:
    """WeChat answers 200 with an errcode; a 404 is a wrong root, 429 and 5xx a proxy's trouble."""
    status = response.status_code
    if status == 404:
        raise ProviderMisconfigured(f"wechat {what} 404", PROVIDER, _BASE_URL_SETTING)
    if status == 429 or status >= 500:
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        raise TransientDeliveryError(f"wechat {what} {status}", retry_after=retry_after)
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if status != 200 or not isinstance(answer, dict):
        raise TransientDeliveryError(f"wechat {what} {status}: unreadable answer {response.text[:200]!r}")
    return answer
