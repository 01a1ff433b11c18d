"""Verify an outcome callback (Standard Webhooks): `v1` HMAC-SHA256 over "id.timestamp.body" with the secret's
bytes, any of the space-separated signatures, the timestamp within `tolerance` seconds of now."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any


class WebhookVerificationError(Exception):
    """The request is not a valid callback of this secret: refuse it (answer 400)."""


def verify_webhook(
    secret: str, headers: Mapping[str, str], body: bytes, tolerance: float = 300, now: float | None = None
) -> dict[str, Any]:
    """The callback's payload if the headers sign `body` (the raw bytes) with `secret`; else raises."""
    lowered = {key.lower(): value for key, value in headers.items()}
    message_id = lowered.get("webhook-id")
    timestamp = lowered.get("webhook-timestamp")
    signatures = lowered.get("webhook-signature")
    if not (message_id and timestamp and signatures):
        raise WebhookVerificationError("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        sent = int(timestamp)
    except ValueError:
        raise WebhookVerificationError("webhook-timestamp is not a Unix time") from None
    if abs((time.time() if now is None else now) - sent) > tolerance:
        raise WebhookVerificationError("webhook-timestamp is too old or too new")
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{message_id}.{sent}.".encode() + body, hashlib.sha256).digest()
    expected = ("v1," + base64.b64encode(mac).decode()).encode()
    if not any(hmac.compare_digest(expected, given.encode()) for given in signatures.split()):
        raise WebhookVerificationError("no signature matches this secret")
    payload: dict[str, Any] = json.loads(body)
    return payload
