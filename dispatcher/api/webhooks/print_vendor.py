"""The print vendor's letter tracking webhook (Lob-shaped, signed with `Lob-Signature`)."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request

from channels import callbacks
from channels.letter import tracking_outcomes
from channels.signatures import LOB_SIGNATURE
from dispatcher.api.errors import ApiError, FieldError
from dispatcher.api.webhooks.recorder import (
    JSON_BODY,
    STATUS_ROUTE,
    AppSettings,
    Callbacks,
    WebhookResult,
    json_object,
    verified,
)
from dispatcher.core.models import Channel

router = APIRouter(tags=["webhooks"])
LETTER_RANK = {"sent": 1, "delivered": 2, "returned": 2}


@router.post(callbacks.PRINT_VENDOR, summary="Print-vendor letter tracking (Lob-Signature)",
             operation_id="printVendorTracking", **{**STATUS_ROUTE, "openapi_extra": JSON_BODY})  # fmt: skip
async def print_vendor(request: Request, settings: AppSettings, recorder: Callbacks) -> WebhookResult:
    secret = settings.print_vendor_webhook_secret.get_secret_value()
    body = await request.body()
    verified(lambda: LOB_SIGNATURE.verify(secret, request.headers, body, now=time.time()), "Lob-Signature")
    try:
        outcomes = tracking_outcomes(json_object(body))
    except (AttributeError, TypeError, ValueError) as exc:  # signed, but not shaped like a tracking event
        raise ApiError(422, "validation", str(exc), [FieldError(field="body", message=str(exc))]) from None
    rank = max((LETTER_RANK.get(o.kind, 0) for o in outcomes), default=0)
    return await recorder.outcomes(outcomes, Channel.LETTER, rank, "lob")
