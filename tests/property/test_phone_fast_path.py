"""The E.164 fast path must agree with phonenumbers whenever it answers."""

from __future__ import annotations

import phonenumbers
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.core.models import _canonical_e164

COUNTRY_CODES = [1, 7, 20, 33, 39, 44, 49, 55, 61, 65, 81, 82, 86, 91, 852, 886, 971, 998]


def _slow(number: str) -> str | None:
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


@settings(max_examples=3000, deadline=None)
@given(st.sampled_from(COUNTRY_CODES), st.text(alphabet="0123456789", min_size=4, max_size=13))
def test_the_fast_path_accepts_only_what_phonenumbers_accepts_unchanged(country_code: int, national: str) -> None:
    number = f"+{country_code}{national}"
    fast = _canonical_e164(number)
    if fast is not None:
        assert fast == _slow(number) == number


def test_common_mobile_numbers_take_the_fast_path() -> None:
    for number in ("+8613800138000", "+12125550123", "+447700900123", "+6591234567"):
        assert _canonical_e164(number) == number
