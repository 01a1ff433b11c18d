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
import threading
from collections.abc import Mapping
from functools import lru_cache
from typing import Any
from urllib.parse import urlencode, urlsplit
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
        self._direct = not proxy  # no proxy: a request goes straight to its host's pool (see _send)
        self._timeouts: dict[float, urllib3.Timeout] = {}
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
            fields["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
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
        reply = self._send(method.upper(), uri, body, fields, allow_redirects, timeout or self.timeout)
        response = Response(reply.status, reply.data.decode("utf-8", errors="replace"), reply.headers)
        self._local.last = response
        return response

    def _send(
        self, method: str, uri: str, body: bytes | None, fields: dict[str, str], redirect: bool, seconds: float
    ) -> urllib3.BaseHTTPResponse:
        """Without a proxy or redirects, straight to the host's connection pool: what PoolManager.urlopen does
        then, less parsing the same URL and merging headers again for every request (about 40 µs of a
        worker's CPU per SMS, docs/benchmarks.md)."""
        timeout = self._timeouts.get(seconds)
        if timeout is None:
            timeout = self._timeouts[seconds] = urllib3.Timeout(total=seconds)
        if not self._direct or redirect:
            return self._pool.request(method, uri, body=body, headers=fields, redirect=redirect, timeout=timeout)
        url = _parsed(uri)
        pool = self._pool.connection_from_host(url.host, port=url.port, scheme=url.scheme)
        return pool.urlopen(
            method, url.request_uri, body=body, headers=fields, redirect=False, assert_same_host=False, timeout=timeout
        )

    def last_retry_after(self) -> float | None:
        response: Response | None = getattr(self._local, "last", None)
        if response is None or not response.headers:
            return None
        return parse_retry_after(response.headers.get("Retry-After"))

    def close(self) -> None:
        self._pool.clear()


@lru_cache(maxsize=256)
def _parsed(uri: str) -> urllib3.util.Url:
    return urllib3.util.parse_url(uri)


def transport_error(exc: urllib3.exceptions.HTTPError) -> TransientDeliveryError:
    """A connection that was never made never reached Twilio; anything later may have, so it is ambiguous."""
    reason = misconfiguration_of(exc)
    if reason is not None:  # a host that does not resolve, a TLS failure: the base URL setting
        return ProviderMisconfigured(f"twilio {reason}: {exc!r}", "twilio", "DISPATCHER_TWILIO_API_BASE_URL")
    never_sent = isinstance(exc, urllib3.exceptions.NewConnectionError | urllib3.exceptions.ConnectTimeoutError)
    return TransientDeliveryError(f"twilio transport: {exc.__class__.__name__}", ambiguous=not never_sent)


def urlencode_form(values: Mapping[str, object]) -> str:
    """Form or query encoding as the SDK's own client does it: lists repeat their key, None is left out."""
    return urlencode({key: value for key, value in values.items() if value is not None}, doseq=True)


def _proxy_for(base_url: str) -> str | None:
    parts = urlsplit(base_url)
    if not parts.hostname or proxy_bypass(parts.hostname):
        return None
    proxies = getproxies()
    return proxies.get(parts.scheme) or proxies.get("all")
