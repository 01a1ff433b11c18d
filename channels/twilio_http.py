"""The HTTP client the twilio SDK sends through: urllib3's connection pool, without `requests` on top.

The SDK lets its HTTP client be swapped (it ships one on `requests` and one on aiohttp). Measured on the
send path, `requests` cost about 1 ms of CPU per message in request preparation alone (environment
look-ups, hooks, cookie jars, Protocol isinstance checks), a quarter of a worker's time per contact. This
client does what the SDK asks of it and no more: form or JSON body, Basic auth, a timeout, no redirects
unless asked, no retries (tenacity and the task decide those), and it keeps each thread's last response so
a 429's Retry-After survives TwilioRestException, which drops the headers.

Proxies and a custom CA bundle come from the usual environment variables (HTTPS_PROXY, NO_PROXY,
REQUESTS_CA_BUNDLE or SSL_CERT_FILE), read once when the client is built.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import threading
from collections.abc import Mapping
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit
from urllib.request import getproxies, proxy_bypass

import certifi
import urllib3
from twilio.http import HttpClient
from twilio.http.response import Response

from channels.base import (
    ProviderMisconfigured,
    TransientDeliveryError,
    misconfiguration_of,
    parse_retry_after,
    pass_request_gate,
)

_JSON_TYPES = ("application/json", "application/scim+json")
_logger = logging.getLogger("channels.twilio_http")


class PooledHttpClient(HttpClient):
    def __init__(self, timeout: float, base_url: str = "https://api.twilio.com", pool_size: int = 16) -> None:
        super().__init__(_logger, is_async=False, timeout=timeout)
        ca_bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("SSL_CERT_FILE") or certifi.where()
        options: dict[str, Any] = {"maxsize": pool_size, "block": False, "ca_certs": ca_bundle, "retries": False}
        proxy = _proxy_for(base_url)
        self._pool: urllib3.PoolManager = (
            urllib3.ProxyManager(proxy, **options) if proxy else urllib3.PoolManager(**options)
        )
        self._local = threading.local()

    def request(
        self,
        method: str,
        uri: str,
        params: Mapping[str, object] | None = None,
        data: Mapping[str, object] | None = None,
        headers: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        self._local.last = None
        fields = dict(headers or {})
        if auth is not None:
            fields["Authorization"] = _basic(auth)
        if params:
            uri += ("&" if "?" in uri else "?") + urlencode_form(params)
        body = None
        if data is not None:
            if fields.get("Content-Type") in _JSON_TYPES:
                body = json.dumps(data).encode()
            else:
                body = urlencode_form(data).encode()
                fields.setdefault("Content-Type", "application/x-www-form-urlencoded")
        pass_request_gate()
        reply = self._pool.request(
            method.upper(), uri, body=body, headers=fields, redirect=allow_redirects,
            timeout=urllib3.Timeout(total=timeout or self.timeout),
        )  # fmt: skip
        response = Response(reply.status, reply.data.decode("utf-8", errors="replace"), reply.headers)
        self._local.last = response
        return response

    def last_retry_after(self) -> float | None:
        response: Response | None = getattr(self._local, "last", None)
        if response is None or not response.headers:
            return None
        return parse_retry_after(response.headers.get("Retry-After"))

    def close(self) -> None:
        self._pool.clear()


@lru_cache(maxsize=8)
def _basic(auth: tuple[str, str]) -> str:
    return "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()


def transport_error(exc: urllib3.exceptions.HTTPError) -> TransientDeliveryError:
    """A connection that was never made never reached Twilio; anything later may have, so it is ambiguous."""
    reason = misconfiguration_of(exc)
    if reason is not None:  # a host that does not resolve, a TLS failure: the base URL setting
        return ProviderMisconfigured(f"twilio {reason}: {exc!r}", "twilio", "DISPATCHER_TWILIO_API_BASE_URL")
    never_sent = isinstance(exc, urllib3.exceptions.NewConnectionError | urllib3.exceptions.ConnectTimeoutError)
    return TransientDeliveryError(f"twilio transport: {exc.__class__.__name__}", ambiguous=not never_sent)


def urlencode_form(values: Mapping[str, object]) -> str:
    """Form or query encoding as the SDK's own client does it (urlencode with doseq): lists repeat their
    key, None is left out. Byte for byte what urlencode gives, but it escapes a run of bytes at once:
    urlencode looks every byte of a text up in turn, and a message in Chinese is nearly all escapes
    (about a tenth of a worker's CPU per SMS, measured in docs/benchmarks.md)."""
    pairs = []
    for key, value in values.items():
        if value is None:
            continue
        name = _form_quote(key if isinstance(key, str | bytes) else str(key))
        if isinstance(value, str | bytes):
            pairs.append(f"{name}={_form_quote(value)}")
        elif isinstance(value, list | tuple):
            pairs.extend(f"{name}={_form_quote(v if isinstance(v, str | bytes) else str(v))}" for v in value)
        else:
            pairs.append(f"{name}={_form_quote(str(value))}")
    return "&".join(pairs)


# What quote_plus leaves as it is (letters, digits, _.-~) besides the space it turns into '+'.
_UNSAFE_RUN = re.compile(rb"[^A-Za-z0-9_.~ -]+")


def _escape_run(match: re.Match[bytes]) -> bytes:
    return b"%" + match[0].hex("%").upper().encode()


def _form_quote(value: str | bytes) -> str:
    """quote_plus(value), for str (as UTF-8) or bytes."""
    raw = value.encode() if isinstance(value, str) else value
    return _UNSAFE_RUN.sub(_escape_run, raw).replace(b" ", b"+").decode("ascii")


def _proxy_for(base_url: str) -> str | None:
    parts = urlsplit(base_url)
    if not parts.hostname or proxy_bypass(parts.hostname):
        return None
    proxies = getproxies()
    return proxies.get(parts.scheme) or proxies.get("all")
