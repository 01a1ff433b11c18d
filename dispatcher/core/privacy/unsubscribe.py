"""Unsubscribe tokens: what List-Unsubscribe and an email's opt-out link carry instead of any account data
an outsider could guess or forge.

    token = base64url(account_id) "." base64url(HMAC-SHA256(secret, "unsubscribe/v1/email/" + account_id)[:16])

128 bits of MAC make a token unguessable; only the holder of DISPATCHER_UNSUBSCRIBE_SECRET can mint one.
The token names the account (an email address can be shared by several), never the debtor's details.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

MAC_BYTES = 16


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: str, account_id: str) -> bytes:
    message = f"unsubscribe/v1/email/{account_id}".encode()
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).digest()[:MAC_BYTES]


def unsubscribe_token(secret: str, account_id: str) -> str:
    """The signed token for opting `account_id` out of email."""
    return f"{_b64(account_id.encode('utf-8'))}.{_b64(_mac(secret, account_id))}"


def account_of_token(secret: str, token: str) -> str | None:
    """The account a genuine token names; None for anything forged, truncated or malformed."""
    head, _, tail = token.partition(".")
    try:
        account_id = _unb64(head).decode("utf-8")
        mac = _unb64(tail)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    if not account_id or not hmac.compare_digest(mac, _mac(secret, account_id)):
        return None
    return account_id
