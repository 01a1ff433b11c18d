"""Timestamped HMAC signatures on webhooks: hex HMAC-SHA256 over "{timestamp}.{raw body}" in one header,
the timestamp in another. The print vendor (Lob's `Lob-Signature`) and the email provider (`X-Signature`)
sign the same way; the timestamp bounds a replay to `max_age` seconds.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from channels.base import WebhookRejected

SIGNATURE_MAX_AGE = 300.0  # seconds; an older signed webhook may be a replay


@dataclass(frozen=True)
class TimestampedHmac:
    signature_header: str
    timestamp_header: str
    max_age: float = SIGNATURE_MAX_AGE
    milliseconds: bool = False  # whether a timestamp may come in milliseconds (Lob sends them)

    def sign(self, secret: str, timestamp: str, body: bytes) -> str:
        payload = timestamp.encode("ascii") + b"." + body
        return hmac.new(secret.encode("utf-8"), payload, hashlib.sha256).hexdigest()

    def headers(self, secret: str, body: bytes, now: float) -> dict[str, str]:
        """What a sender (a sandbox, a test) puts on a webhook signed at `now`."""
        timestamp = str(int(now))
        return {self.signature_header: self.sign(secret, timestamp, body), self.timestamp_header: timestamp}

    def verify(self, secret: str, headers: Mapping[str, str], body: bytes, now: float) -> None:
        """Raise WebhookRejected unless the headers sign this very body with `secret`, recently enough."""
        lowered = {key.lower(): value for key, value in headers.items()}
        signature = lowered.get(self.signature_header.lower(), "")
        timestamp = lowered.get(self.timestamp_header.lower(), "")
        if not signature or not timestamp.isdigit():
            raise WebhookRejected(f"missing {self.signature_header} or {self.timestamp_header}")
        if abs(now - self._seconds(timestamp)) > self.max_age:
            raise WebhookRejected(f"stale {self.timestamp_header}")
        if not hmac.compare_digest(self.sign(secret, timestamp, body), signature):
            raise WebhookRejected(f"{self.signature_header} does not match the body")

    def _seconds(self, timestamp: str) -> float:
        value = int(timestamp)
        return value / 1000 if self.milliseconds and value > 10**11 else float(value)


LOB_SIGNATURE = TimestampedHmac("Lob-Signature", "Lob-Signature-Timestamp", milliseconds=True)
EMAIL_SIGNATURE = TimestampedHmac("X-Signature", "X-Signature-Timestamp")
