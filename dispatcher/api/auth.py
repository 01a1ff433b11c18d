"""Bearer API keys with scopes. Configuration holds only each key's SHA-256, never the key itself.

A key is a random 256-bit token; `new_api_key` makes one and the configuration entry to add to
DISPATCHER_API_KEYS (`sha256hex:scope+scope`). `admin` implies every scope. No or an unknown key is a
401; a known key without the route's scope is a 403 naming the scope it lacks.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from config.api_keys import API_SCOPES, parse_api_keys
from dispatcher.api.errors import ApiError

ACCOUNTS_WRITE, EVENTS_WRITE, ACCOUNTS_READ, ADMIN = API_SCOPES
KEY_PREFIX = "dsp_"

_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer dsp_...`.")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_api_key(scopes: Iterable[str]) -> tuple[str, str]:
    """(the key to hand to the client, the entry for DISPATCHER_API_KEYS); what `dispatcher api-key` prints."""
    names = sorted(set(scopes))
    unknown = set(names) - set(API_SCOPES)
    if not names or unknown:
        raise ValueError(f"scopes must be among {', '.join(API_SCOPES)}; got {', '.join(names) or 'none'}")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    return key, f"{hash_key(key)}:{'+'.join(names)}"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's hash (its identity in logs and idempotency keys) and its scopes."""

    key_hash: str
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or ADMIN in self.scopes

    @property
    def ident(self) -> str:
        return self.key_hash[:16]


class KeyRing:
    """The configured keys, by hash."""

    def __init__(self, raw: str) -> None:
        self._keys = parse_api_keys(raw)

    def principal(self, token: str | None) -> Principal | None:
        if not token:
            return None
        digest = hash_key(token)
        scopes = self._keys.get(digest)
        return None if scopes is None else Principal(digest, scopes)


def token_of(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, if that is what it holds."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def require(scope: str) -> Callable[..., Awaitable[Principal]]:
    """A FastAPI dependency: the caller's Principal, or 401 / 403 with a body that says what to do."""

    async def dependency(
        request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
    ) -> Principal:
        keys: KeyRing = request.app.state.keys
        if credentials is None:
            raise ApiError(
                401, "unauthorized", "missing API key: send `Authorization: Bearer <key>`",
                headers={"WWW-Authenticate": "Bearer"},
            )  # fmt: skip
        principal = keys.principal(credentials.credentials)
        if principal is None:
            raise ApiError(401, "unauthorized", "unknown API key", headers={"WWW-Authenticate": "Bearer"})
        if not principal.allows(scope):
            held = ", ".join(sorted(principal.scopes))
            raise ApiError(403, "forbidden", f"this API key lacks the scope {scope!r} (it has: {held})")
        request.state.principal = principal
        return principal

    return dependency
