"""The email provider's webhooks, signed with `X-Signature`: a bounce or complaint in the provider's JSON,
and the bounce mailbox's raw RFC 3464 delivery status notifications."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request

from channels import callbacks
from channels.base import ProviderOutcome
from channels.dsn import dsn_outcomes
from channels.signatures import EMAIL_SIGNATURE
from dispatcher.api.webhooks.recorder import (
    FINAL_RANK,
    JSON_BODY,
    STATUS_ROUTE,
    AppSettings,
    Callbacks,
    WebhookResult,
    json_object,
    verified,
)
from dispatcher.core.models import Channel, OutcomeKind

router = APIRouter(tags=["webhooks"])
EMAIL_BOUNCE_KIND = {"hard": OutcomeKind.BOUNCED, "complaint": OutcomeKind.OPTED_OUT}


async def _signed_body(request: Request, settings: AppSettings) -> bytes:
    secret = settings.email_webhook_secret.get_secret_value()
    body = await request.body()
    verified(lambda: EMAIL_SIGNATURE.verify(secret, request.headers, body, time.time()), "X-Signature")
    return body


@router.post(callbacks.EMAIL_BOUNCE, summary="Email bounce or complaint (X-Signature)",
             operation_id="emailBounce", **{**STATUS_ROUTE, "openapi_extra": JSON_BODY})  # fmt: skip
async def email_bounce(request: Request, settings: AppSettings, recorder: Callbacks) -> WebhookResult:
    payload = json_object(await _signed_body(request, settings))
    kind = EMAIL_BOUNCE_KIND.get(str(payload.get("type", "")))
    contact_id = str(payload.get("contact_id") or "")
    if kind is None or not contact_id:
        return WebhookResult(status="ignored", reason="not a hard bounce or complaint with a contact_id")
    outcome = ProviderOutcome(contact_id, kind.value, str(payload.get("id", "")), {"type": payload["type"]})
    return await recorder.outcomes([outcome], Channel.EMAIL, FINAL_RANK, "email")


@router.post(callbacks.EMAIL_DSN, summary="An RFC 3464 delivery status notification, raw (X-Signature)",
             operation_id="emailDsn", **STATUS_ROUTE)  # fmt: skip
async def email_dsn(request: Request, settings: AppSettings, recorder: Callbacks) -> WebhookResult:
    """The bounce mailbox's DSNs, as received: a permanent failure invalidates the address, as an SMTP
    rejection does; delays and reports about messages that are not ours are ignored."""
    body = await _signed_body(request, settings)
    outcomes = dsn_outcomes(body, settings.unsubscribe_secret.get_secret_value())
    if not outcomes:
        return WebhookResult(status="ignored", reason="not a permanent failure of a message of ours")
    return await recorder.outcomes(outcomes, Channel.EMAIL, FINAL_RANK, "dsn")
