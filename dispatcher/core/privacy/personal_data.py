"""A debtor's personal data, by field name: the one list that everything hiding or erasing it reads.

A field named in PERSONAL_FIELDS is masked whatever it holds in every log line (dispatcher.logging.mask_pii)
and in the task arguments Flower shows (workers.task_base.PrivateArgsRequest), and is erased from the record
once the retention period has passed (dispatcher.record.retention): from the closed account, from its history
entries' details and from its archived audit entries. A field not named here is none of those, so the three
cannot drift apart (tests/integration/test_personal_data.py holds them to it). Free text is masked too
wherever it appears: phone numbers down to their last two digits, email addresses down to their domain.

Pure: no I/O here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

# The debtor's name, numbers and addresses as the account and the providers' messages name them (an SMS's
# to/from, a call's to_number/from_number, an email's recipient, a letter's address lines), a message's body,
# and an event's free-text note.
PERSONAL_FIELDS = frozenset(
    {"name", "address", "phone", "email", "to", "from", "from_number", "to_number", "recipient",
     "line1", "line2", "postal_code", "body", "note", "wechat_openid", "touser"}
)  # fmt: skip
MASK = "***"
_MAX_DEPTH = 6

# E.164 (possibly spaced or dashed), Chinese mobiles, North American and leading-zero national forms.
_PHONE = re.compile(
    r"(?<![\w.+])(?:"
    r"\+[1-9](?:[\s\-().]{0,2}\d){6,14}"
    r"|1[3-9]\d(?:[\s\-]?\d{4}){2}"
    r"|(?:\(\d{3}\)\s?|\d{3}[\s.\-])\d{3}[\s.\-]\d{4}"
    r"|0\d{1,3}[\s\-]?\d{3,4}[\s\-]?\d{4}"
    r")(?![\w])"
)
_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@([A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,})")


def mask_text(text: str) -> str:
    """The text with every phone number reduced to its last two digits and every email to its domain."""
    text = _EMAIL.sub(lambda match: f"{MASK}@{match.group(1)}", text)
    return _PHONE.sub(lambda match: MASK + re.sub(r"\D", "", match.group(0))[-2:], text)


def masked(value: Any, personal: bool = False, depth: int = 0) -> Any:
    """`value` with every personal field's value masked whatever it holds (`personal`: this value is one), and
    phone numbers and email addresses masked in every other text; numbers, booleans and None as they are."""
    if depth > _MAX_DEPTH:
        return MASK
    if isinstance(value, Mapping):
        return {key: masked(item, personal or key in PERSONAL_FIELDS, depth + 1) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [masked(item, personal, depth + 1) for item in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    if personal:
        return MASK
    return mask_text(value if isinstance(value, str) else str(value))
