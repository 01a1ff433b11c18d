"""Where a callback may go: the URL's shape, and no address inside the bank's own network.

A callback endpoint is a URL an API caller names, and the dispatcher then makes requests to it from inside
the deployment: named carelessly (or on purpose), it would reach the cloud's metadata service
(169.254.169.254), the Redis next door or an admin page on loopback. So the host's addresses are checked
when the endpoint is registered and again before every round of sends, since a name may resolve differently
later: any address that is not global (loopback, private, link-local, shared, reserved, multicast,
unspecified, or an IPv6 form of one of those) refuses the target, unless the host is listed in
DISPATCHER_WEBHOOK_ALLOWED_HOSTS (for local use: 127.0.0.1). Production takes https only; no redirect is
ever followed, so an answer cannot send the request elsewhere.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Collection
from typing import Any
from urllib.parse import urlsplit

from config.errors import InputRejected

Resolver = Callable[..., list[tuple[Any, ...]]]  # socket.getaddrinfo's shape
MAX_URL = 2000


class TargetRefused(InputRejected, ValueError):
    """The callback URL is malformed or reaches an address the dispatcher does not call."""

    def __init__(self, message: str):
        super().__init__(f"url: {message}")
        self.field = "url"


def check_url(url: str, production: bool) -> tuple[str, int]:
    """(host, port) of a well-formed callback URL; https only in production, no credentials in it."""
    if len(url) > MAX_URL:
        raise TargetRefused(f"longer than {MAX_URL} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise TargetRefused(f"not a URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise TargetRefused(f"the scheme must be https (or http outside production), not {parts.scheme!r}")
    if production and parts.scheme != "https":
        raise TargetRefused("DISPATCHER_ENV=production takes https callback URLs only")
    if not parts.hostname:
        raise TargetRefused("no host in the URL")
    if parts.username or parts.password:
        raise TargetRefused("no credentials in the URL; the signature authenticates the dispatcher")
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


def _inside(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def check_target(
    url: str, allowed_hosts: Collection[str], production: bool, resolver: Resolver = socket.getaddrinfo
) -> None:
    """Refuse a URL whose host resolves (or is) an address inside the network, unless the host is allowed."""
    host, port = check_url(url, production)
    if host in allowed_hosts:
        return
    try:
        found = resolver(host, port, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError) as exc:
        raise TargetRefused(f"{host} does not resolve ({exc})") from None
    addresses = sorted({str(info[4][0]) for info in found})
    if not addresses:
        raise TargetRefused(f"{host} does not resolve")
    inside = [address for address in addresses if _inside(address)]
    if inside:
        raise TargetRefused(
            f"{host} resolves to {', '.join(inside)}: a loopback, private or link-local address is not called "
            "(list the host in DISPATCHER_WEBHOOK_ALLOWED_HOSTS to allow it, e.g. for local use)"
        )
