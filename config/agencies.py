"""DISPATCHER_AGENCIES: the collection agencies the agency channel places cases with, and which one an account
goes to.

    [{"name": "north", "url": "https://north.example/cases", "api_key": "...", "weight": 3},
     {"name": "south", "url": "https://south.example/cases", "api_key": "...", "weight": 1}]

Each agency is a provider of the agency channel (channels/agencies.py builds them; its key is `agency.NAME`,
so each has its own breaker, rate limit, adapter and reconciliation). Unset, the one agency of
DISPATCHER_AGENCY_URL takes every case, as before.

Placement is sticky, not a draw: weighted rendezvous hashing. Every agency scores the account by SHA-256 of
(agency name, account id), read as a number u in (0, 1), as -weight / ln(u); the highest score takes it. Over
many accounts each agency's share is its weight over the sum of weights; the same account with the same set
always goes to the same agency, in every process and under every PYTHONHASHSEED (Python's hash() is salted
per process, so it is never used). When the set changes, only what must move moves: an added agency takes
its share from every other one, a removed one's accounts spread over the rest, a weight change moves
accounts only to or from that agency. A case already placed stays where it went (its attempt names the
agency, and reconciliation asks only that one); the new placement applies to hand-offs not yet made.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

# The single agency's provider name (channels/agency.py): a listed agency may not take it.
SINGLE_AGENCY = "agency"
_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}\Z")


class Agency(BaseModel):
    """One agency: its name (the provider's, in the audit, the timeline, the metrics and its breaker's key
    `agency.NAME`), its case endpoint, its API key and its placement weight."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    url: str
    api_key: SecretStr = Field(min_length=1)
    weight: float = Field(gt=0, allow_inf_nan=False)

    @field_validator("name")
    @classmethod
    def _name_shape(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"{value!r} is not a name: lower-case letters, digits and '_', e.g. 'north'")
        if value == SINGLE_AGENCY:
            raise ValueError(f"{value!r} is the single agency's (DISPATCHER_AGENCY_URL); name the agency itself")
        return value

    @field_validator("url")
    @classmethod
    def _url_shape(cls, value: str) -> str:
        scheme, _, rest = value.partition("://")
        if scheme not in ("http", "https") or not rest or rest.startswith("/"):
            raise ValueError(f"{value!r} is not an http(s) URL, e.g. https://agency.example/cases")
        return value


def names_twice(agencies: Sequence[Agency]) -> list[str]:
    """The names listed more than once (config.settings refuses them, without echoing the list's keys)."""
    names = [agency.name for agency in agencies]
    return sorted({name for name in names if names.count(name) > 1})


Agencies = tuple[Agency, ...]


def unit_hash(*parts: str) -> float:
    """SHA-256 of the parts (joined by NUL) as a number in (0, 1): 53 bits, never 0 nor 1."""
    digest = hashlib.sha256("\0".join(parts).encode("utf-8")).digest()
    return ((int.from_bytes(digest[:8], "big") >> 11) + 0.5) / float(1 << 53)


def placement(account_id: str, agencies: Sequence[Agency]) -> Agency:
    """The agency an account's case goes to (weighted rendezvous hashing; the module says why)."""
    if not agencies:
        raise ValueError("no agency to place with")
    return max(agencies, key=lambda one: (-one.weight / math.log(unit_hash(one.name, account_id)), one.name))
