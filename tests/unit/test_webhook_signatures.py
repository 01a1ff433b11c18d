"""The print vendor's and the email provider's webhook signatures: one timestamped HMAC, two headers."""

from __future__ import annotations

import time

import pytest

from channels.base import WebhookRejected
from channels.signatures import EMAIL_SIGNATURE, LOB_SIGNATURE, TimestampedHmac

BODY = b'{"type": "hard", "contact_id": "A1/early/email/0"}'


@pytest.mark.parametrize("scheme", [LOB_SIGNATURE, EMAIL_SIGNATURE], ids=["lob", "email"])
def test_a_signature_holds_for_its_body_its_secret_and_a_recent_moment_only(scheme: TimestampedHmac) -> None:
    now = time.time()
    headers = scheme.headers("s", BODY, now)
    scheme.verify("s", {name.upper(): value for name, value in headers.items()}, BODY, now + 299)
    with pytest.raises(WebhookRejected, match=f"{scheme.signature_header} does not match the body"):
        scheme.verify("s", headers, BODY + b" ", now)
    with pytest.raises(WebhookRejected, match=f"{scheme.signature_header} does not match the body"):
        scheme.verify("other", headers, BODY, now)
    with pytest.raises(WebhookRejected, match=f"stale {scheme.timestamp_header}"):
        scheme.verify("s", headers, BODY, now + 301)
    with pytest.raises(WebhookRejected, match=f"missing {scheme.signature_header}"):
        scheme.verify("s", {scheme.signature_header: headers[scheme.signature_header]}, BODY, now)


def test_one_providers_headers_do_not_pass_for_the_other() -> None:
    now = time.time()
    with pytest.raises(WebhookRejected, match="missing X-Signature"):
        EMAIL_SIGNATURE.verify("s", LOB_SIGNATURE.headers("s", BODY, now), BODY, now)


def test_only_the_print_vendor_dates_its_signatures_in_milliseconds() -> None:
    now = time.time()
    millis = str(int(now * 1000))
    LOB_SIGNATURE.verify(
        "s", {"Lob-Signature": LOB_SIGNATURE.sign("s", millis, BODY), "Lob-Signature-Timestamp": millis}, BODY, now
    )
    with pytest.raises(WebhookRejected, match="stale X-Signature-Timestamp"):
        EMAIL_SIGNATURE.verify(
            "s", {"X-Signature": EMAIL_SIGNATURE.sign("s", millis, BODY), "X-Signature-Timestamp": millis}, BODY, now
        )
