"""API keys: made random, configured only as their SHA-256 with scopes, admin implying every scope."""

from __future__ import annotations

import pytest

from config.settings import SettingsError, load_settings
from dispatcher.api.auth import KeyRing, hash_key, new_api_key, token_of
from dispatcher.api.idempotency import key_problem


def test_a_new_key_comes_with_its_hashed_configuration_entry() -> None:
    key, entry = new_api_key(["events:write", "accounts:read"])
    digest, scopes = entry.split(":", 1)
    assert key.startswith("dsp_") and len(key) > 40
    assert digest == hash_key(key) and key not in entry
    assert scopes == "accounts:read+events:write"


def test_two_new_keys_differ() -> None:
    assert new_api_key(["admin"])[0] != new_api_key(["admin"])[0]


def test_unknown_or_no_scopes_are_refused() -> None:
    with pytest.raises(ValueError, match="scopes must be among"):
        new_api_key(["accounts:delete"])
    with pytest.raises(ValueError):
        new_api_key([])


def test_the_key_ring_knows_keys_by_hash_and_admin_implies_every_scope() -> None:
    reader, reader_entry = new_api_key(["accounts:read"])
    admin, admin_entry = new_api_key(["admin"])
    ring = KeyRing(f"{reader_entry}, {admin_entry}")
    assert ring.principal(reader).allows("accounts:read") and not ring.principal(reader).allows("events:write")
    assert all(ring.principal(admin).allows(scope) for scope in ("accounts:write", "events:write", "accounts:read"))
    assert ring.principal("dsp_unknown") is None and ring.principal(None) is None


def test_keys_may_be_configured_as_a_json_list() -> None:
    key, entry = new_api_key(["events:write"])
    assert KeyRing(f'["{entry}"]').principal(key).scopes == {"events:write"}


@pytest.mark.parametrize("raw", ["abc:admin", "0" * 64 + ":root", "0" * 64 + ":", "Z" * 64 + ":admin"])
def test_a_malformed_key_entry_stops_the_process_naming_the_variable(raw: str) -> None:
    with pytest.raises(SettingsError, match="DISPATCHER_API_KEYS"):
        load_settings(api_keys=raw, _env_file=None)


@pytest.mark.parametrize(
    ("header", "token"),
    [("Bearer abc", "abc"), ("bearer  abc ", "abc"), ("Basic abc", None), ("Bearer", None), (None, None)],
)
def test_only_a_bearer_header_carries_a_token(header: str | None, token: str | None) -> None:
    assert token_of(header) == token


@pytest.mark.parametrize(("key", "ok"), [("a", True), ("x" * 255, True), ("", False), ("x" * 256, False),
                                         ("tab\there", False), (None, False)])  # fmt: skip
def test_idempotency_keys_are_short_printable_ascii(key: str | None, ok: bool) -> None:
    assert (key_problem(key) is None) is ok
