"""API keys as the settings hold them: the scopes a key may carry and the parser of DISPATCHER_API_KEYS.
Apart from settings.py so the production guard can read keys without importing the settings module."""

from __future__ import annotations

import json

API_SCOPES = ("accounts:write", "events:write", "accounts:read", "admin")


def parse_api_keys(raw: str) -> dict[str, frozenset[str]]:
    """`sha256hex:scope+scope` entries (comma-separated or a JSON list) as {hash: scopes}; ValueError if bad."""
    text = raw.strip()
    entries = json.loads(text) if text.startswith("[") else [part for part in text.split(",") if part.strip()]
    keys: dict[str, frozenset[str]] = {}
    for entry in entries:
        digest, _, scopes = str(entry).strip().partition(":")
        if len(digest) != 64 or any(char not in "0123456789abcdef" for char in digest):
            raise ValueError(f"{digest[:8]}...: expected the key's SHA-256 as 64 lowercase hex characters")
        names = frozenset(scope for scope in scopes.split("+") if scope)
        unknown = names - set(API_SCOPES)
        if not names or unknown:
            raise ValueError(f"{digest[:8]}...: scopes must be among {'+'.join(API_SCOPES)}, got {scopes!r}")
        keys[digest] = names
    return keys
