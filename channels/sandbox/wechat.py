"""A WeChat official-account stand-in: `cgi-bin/stable_token` and `cgi-bin/message/template/send`, answering
WeChat's errcodes for what WeChat refuses, and pushing TEMPLATESENDJOBFINISH in safe mode to our webhook.

    POST /cgi-bin/stable_token          {"grant_type": "client_credential", "appid", "secret", "force_refresh"}
                                        -> {"access_token", "expires_in": 7200}; a wrong appid 40013, secret 40125.
                                        Normal mode hands out the current token while it is valid; force_refresh
                                        issues another (the old one stays valid, as WeChat keeps it a while)
    POST /cgi-bin/message/template/send?access_token=...
        40001  a token it never issued
        42001  a token expired (`expire_tokens()` expires them all now, `expire_tokens_after = N` after N sends)
        40003  an openid not shaped like one    43004  an openid that unfollowed (starts `o-unfollowed`)
        43101  one that refused the messages (starts `o-refused`)
        40037  a template_id not approved (`remove_template(id)` withdraws one)
        47003  a data field the approved template has that the message lacks (or an empty value)
        45009  the daily quota spent (`daily_quota`)
        0      accepted: {"msgid"}; a repeated client_msg_id answers the first msgid and sends nothing again

An accepted message's result is pushed `push_delay` seconds later to {callback_base_url}/v1/webhooks/wechat,
encrypted and signed with the account's Token and EncodingAESKey (safe mode): `success`, or `failed:user
block` for an openid starting `o-blocked`, `failed: system failed` for one starting `o-sysfail`. Faults
(429/503, latency, hang) through `faults.set(...)` as every sandbox; down is `stop()`. Log: wechat.ndjson.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from channels import callbacks
from channels.sandbox.server import EventLog, FaultInjector
from channels.wechat_crypto import SafeModeCipher, encrypted_envelope

TOKEN_SECONDS = 7200
_OPENID = re.compile(r"o[A-Za-z0-9_-]{27}\Z")
DEFAULT_FIELDS = ("first", "keyword1", "keyword2", "keyword3", "remark")


class WechatSandbox:
    def __init__(
        self,
        state_dir: Path,
        app_id: str,
        app_secret: str,
        token: str,
        encoding_aes_key: str,
        templates: dict[str, tuple[str, ...]],
        callback_base_url: str | None,
        push_delay: float = 0.05,
    ) -> None:
        self.log = EventLog(state_dir / "wechat.ndjson")
        self.faults = FaultInjector()
        self.app_id, self.app_secret, self.push_token = app_id, app_secret, token
        self.cipher = SafeModeCipher(encoding_aes_key, app_id)
        self.templates = dict(templates)  # approved template_id -> the fields its data must carry
        self.callback_base_url = callback_base_url
        self.push_delay = push_delay
        self.daily_quota: int | None = None
        self.expire_tokens_after: int | None = None  # every token expires once this many more are accepted
        self.tokens: dict[str, float] = {}  # token -> expires at
        self.current: str | None = None
        self.sent: dict[str, dict[str, Any]] = {}  # msgid -> the message
        self.by_client_id: dict[str, str] = {}  # client_msg_id -> msgid
        self._tasks: set[asyncio.Task[None]] = set()

    def expire_tokens(self) -> None:
        """Every token issued so far expires now (as after 7200 s): sends with them answer 42001."""
        self.tokens = dict.fromkeys(self.tokens, 0.0)
        self.log.append({"event": "tokens.expired"})

    def remove_template(self, template_id: str) -> None:
        self.templates.pop(template_id, None)
        self.log.append({"event": "template.removed", "template_id": template_id})

    def messages(self) -> list[dict[str, Any]]:
        return [record for record in self.log.read() if record["event"] == "message.sent"]

    def pushes(self) -> list[dict[str, Any]]:
        return [record for record in self.log.read() if record["event"] == "push.posted"]

    def issue_token(self, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("grant_type") != "client_credential":
            return {"errcode": 40002, "errmsg": "invalid grant_type"}
        if body.get("appid") != self.app_id:
            return {"errcode": 40013, "errmsg": "invalid appid"}
        if body.get("secret") != self.app_secret:
            return {"errcode": 40125, "errmsg": "invalid appsecret"}
        now = time.time()
        if body.get("force_refresh") or self.current is None or self.tokens.get(self.current, 0.0) <= now:
            self.current = "sbx_" + secrets.token_urlsafe(24)
            self.tokens[self.current] = now + TOKEN_SECONDS
        self.log.append({"event": "token.issued", "force_refresh": bool(body.get("force_refresh"))})
        return {"access_token": self.current, "expires_in": int(self.tokens[self.current] - now)}

    def send(self, access_token: str, body: Any) -> dict[str, Any]:
        refusal = self._refusal(access_token, body)
        if refusal is not None:
            self.log.append({"event": "message.refused", **refusal})
            return refusal
        client_id = str(body.get("client_msg_id") or "")
        if client_id and client_id in self.by_client_id:
            self.log.append({"event": "message.repeat", "client_msg_id": client_id})
            return {"errcode": 0, "errmsg": "ok", "msgid": int(self.by_client_id[client_id])}
        msgid = str(10**9 + len(self.sent) + 1)
        self.sent[msgid] = body
        if client_id:
            self.by_client_id[client_id] = msgid
        self.log.append({"event": "message.sent", "msgid": msgid, "touser": body["touser"],
                         "template_id": body["template_id"], "client_msg_id": client_id})  # fmt: skip
        if self.callback_base_url:
            self._spawn(self._push(msgid, body["touser"]))
        if self.expire_tokens_after is not None:
            self.expire_tokens_after -= 1
            if self.expire_tokens_after <= 0:
                self.expire_tokens_after = None
                self.expire_tokens()
        return {"errcode": 0, "errmsg": "ok", "msgid": int(msgid)}

    def _refusal(self, access_token: str, body: Any) -> dict[str, Any] | None:
        if access_token not in self.tokens:
            return {"errcode": 40001, "errmsg": "invalid credential, access_token is invalid or not latest"}
        if self.tokens[access_token] <= time.time():
            return {"errcode": 42001, "errmsg": "access_token expired"}
        if not isinstance(body, dict):
            return {"errcode": 47001, "errmsg": "data format error"}
        openid, template_id, data = body.get("touser"), body.get("template_id"), body.get("data")
        if not isinstance(openid, str) or not _OPENID.match(openid):
            return {"errcode": 40003, "errmsg": "invalid openid"}
        if openid.startswith("o-unfollowed"):
            return {"errcode": 43004, "errmsg": "require subscribe"}
        if openid.startswith("o-refused"):
            return {"errcode": 43101, "errmsg": "user refuse to accept the msg"}
        if template_id not in self.templates:
            return {"errcode": 40037, "errmsg": "invalid template_id"}
        for name in self.templates[template_id]:
            field = data.get(name) if isinstance(data, dict) else None
            if not isinstance(field, dict) or not str(field.get("value") or "").strip():
                return {"errcode": 47003, "errmsg": f"argument invalid! data.{name}.value empty"}
        if self.daily_quota is not None and len(self.sent) >= self.daily_quota:
            return {"errcode": 45009, "errmsg": "reach max api daily quota limit"}
        return None

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _push(self, msgid: str, openid: str) -> None:
        await asyncio.sleep(self.push_delay)
        status = "success"
        if openid.startswith("o-blocked"):
            status = "failed:user block"
        elif openid.startswith("o-sysfail"):
            status = "failed: system failed"
        timestamp, nonce = str(int(time.time())), secrets.token_hex(5)
        event = (
            f"<xml><ToUserName><![CDATA[gh_sandbox]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>"
            f"<CreateTime>{timestamp}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
            f"<Event><![CDATA[TEMPLATESENDJOBFINISH]]></Event><MsgID>{msgid}</MsgID>"
            f"<Status><![CDATA[{status}]]></Status></xml>"
        )
        query, body = encrypted_envelope(self.cipher, self.push_token, event, timestamp, nonce)
        url = f"{str(self.callback_base_url).rstrip('/')}{callbacks.WECHAT}?{urlencode(query)}"
        record = {"event": "push.posted", "msgid": msgid, "status": status}
        try:
            async with httpx.AsyncClient(timeout=5.0) as client:
                response = await client.post(url, content=body, headers={"Content-Type": "text/xml"})
            self.log.append({**record, "answer": response.status_code})
        except httpx.HTTPError as exc:
            self.log.append({**record, "error": repr(exc)})


def create_app(sandbox: WechatSandbox) -> FastAPI:
    app = FastAPI(title="WeChat sandbox")
    sandbox.faults.mount(app)

    def busy(status: int) -> dict[str, Any]:
        return {"errcode": -1, "errmsg": f"system error (injected {status})"}

    async def answer(request: Request, handle: Callable[[Any], dict[str, Any]]) -> Response:
        """An injected fault if one is set, WeChat's 47001 for a body that is not JSON, else `handle`'s answer."""
        fault = await sandbox.faults.intercept(busy)
        if fault is not None:
            return fault
        try:
            body = json.loads(await request.body())
        except ValueError:
            return JSONResponse({"errcode": 47001, "errmsg": "data format error"})
        return JSONResponse(handle(body))

    @app.post("/cgi-bin/stable_token")
    async def stable_token(request: Request) -> Response:
        return await answer(request, lambda body: sandbox.issue_token(body if isinstance(body, dict) else {}))

    @app.post("/cgi-bin/message/template/send")
    async def template_send(request: Request) -> Response:
        token = request.query_params.get("access_token", "")
        return await answer(request, lambda body: sandbox.send(token, body))

    return app
