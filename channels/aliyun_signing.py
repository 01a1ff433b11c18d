"""Aliyun's RPC request signature (version 1.0, HMAC-SHA1), as the adapter signs and the sandbox checks it.

Every parameter, the common ones included (AccessKeyId, Action, Format, RegionId, SignatureMethod,
SignatureNonce, SignatureVersion, Timestamp, Version), is percent-encoded as RFC 3986 says (`A-Z a-z 0-9 - _
. ~` left alone, UTF-8, a space as %20), sorted by name and joined as `name=value&...`; the string signed is
`METHOD&%2F&` + that string percent-encoded once more; the key is the AccessKey secret followed by `&`; the
`Signature` parameter is the Base64 of the HMAC-SHA1.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from urllib.parse import quote

API_VERSION = "2017-05-25"
REGION = "cn-hangzhou"  # Dysmsapi has one region; the SDKs send this one
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def percent_encode(value: str) -> str:
    """RFC 3986 encoding: only unreserved characters stay (`quote` keeps `_.-~` and alphanumerics)."""
    return quote(value, safe="~", encoding="utf-8")


def canonical_query(params: Mapping[str, str]) -> str:
    return "&".join(f"{percent_encode(key)}={percent_encode(params[key])}" for key in sorted(params))


def signature(method: str, params: Mapping[str, str], secret: str) -> str:
    """The Signature of a request's parameters (without a Signature among them)."""
    to_sign = f"{method.upper()}&{percent_encode('/')}&{percent_encode(canonical_query(params))}"
    digest = hmac.new(f"{secret}&".encode(), to_sign.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def signed_params(
    action: str, params: Mapping[str, str], access_key_id: str, secret: str, now: datetime | None = None
) -> dict[str, str]:
    """The form of one RPC call: the action's parameters, the common ones, and their Signature (POST)."""
    common = {
        "AccessKeyId": access_key_id,
        "Action": action,
        "Format": "JSON",
        "RegionId": REGION,
        "SignatureMethod": "HMAC-SHA1",
        "SignatureNonce": uuid.uuid4().hex,
        "SignatureVersion": "1.0",
        "Timestamp": (now or datetime.now(UTC)).astimezone(UTC).strftime(TIMESTAMP_FORMAT),
        "Version": API_VERSION,
    }
    form = {**params, **common}
    form["Signature"] = signature("POST", form, secret)
    return form


def signature_matches(method: str, params: Mapping[str, str], secret: str) -> bool:
    """Whether the request's `Signature` is the one its other parameters give under `secret`."""
    given = params.get("Signature", "")
    unsigned = {key: value for key, value in params.items() if key != "Signature"}
    return bool(given) and hmac.compare_digest(signature(method, unsigned, secret).encode(), given.encode())
