"""One-click unsubscribe (RFC 8058): POST /v1/unsubscribe/{token} opts the token's account out of email.

Mail providers (Gmail, Yahoo) POST `List-Unsubscribe=One-Click` to the https URI in List-Unsubscribe; no
API key, no cookie, no login: the signed token (dispatcher.core.privacy.unsubscribe) is the credential. A GET only shows
a page with the button, because link scanners fetch every link in a message and must not unsubscribe
anyone. An unknown, forged or cut token gets 404 and changes nothing; a repeat is harmless (the opt-out
carries one event id per account, so it is recorded once).
"""

from __future__ import annotations

from html import escape
from typing import Any

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from dispatcher.core.events import OptOut
from dispatcher.core.models import Channel
from dispatcher.core.privacy.unsubscribe import account_of_token
from dispatcher.engine import UnknownAccount

router = APIRouter(prefix="/v1/unsubscribe", tags=["unsubscribe"])
log = structlog.get_logger("dispatcher.api")

PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Unsubscribe</title></head>
<body><form method="post" action="{action}"><input type="hidden" name="List-Unsubscribe" value="One-Click">
<p>Stop collection emails about this account? / 不再接收此账户的催收邮件？</p>
<button type="submit">Unsubscribe / 退订</button></form></body></html>"""
NOT_FOUND = {"error": "not_found", "message": "unknown unsubscribe token", "fields": []}
DONE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Unsubscribed</title></head>
<body><p>You will get no more emails about this account. / 您将不再收到此账户的邮件。</p></body></html>"""


def _secret(request: Request) -> str:
    return str(request.app.state.settings.unsubscribe_secret.get_secret_value())


_UNKNOWN_TOKEN: dict[int | str, dict[str, Any]] = {404: {"description": "The token is not one we signed"}}


@router.get("/{token}", response_class=HTMLResponse, summary="The unsubscribe page (a button; GET changes nothing)",
            operation_id="unsubscribePage", responses=_UNKNOWN_TOKEN)  # fmt: skip
def unsubscribe_page(token: str, request: Request) -> HTMLResponse:
    if account_of_token(_secret(request), token) is None:
        return HTMLResponse("<p>Not found.</p>", status_code=404)
    return HTMLResponse(PAGE.format(action=escape(str(request.url.path))))


@router.post("/{token}", summary="One-click unsubscribe (RFC 8058): opt the account out of email",
             operation_id="unsubscribeOneClick", responses=_UNKNOWN_TOKEN)  # fmt: skip
def unsubscribe(token: str, request: Request) -> Response:
    account_id = account_of_token(_secret(request), token)
    if account_id is None:
        return JSONResponse(NOT_FOUND, 404)
    event = OptOut(channel=Channel.EMAIL, event_id=f"unsubscribe-email-{account_id}")
    try:
        request.app.state.engine.record_event(account_id, event)
    except UnknownAccount:
        return JSONResponse(NOT_FOUND, 404)
    log.info("unsubscribe.email", account_id=account_id)
    if "text/html" in request.headers.get("accept", ""):
        return HTMLResponse(DONE)
    return JSONResponse({"status": "unsubscribed", "channel": "email"})
