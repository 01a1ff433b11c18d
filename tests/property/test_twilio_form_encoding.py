"""The Twilio client's own form encoding gives byte for byte what urlencode(doseq=True) gives."""

from __future__ import annotations

from urllib.parse import urlencode

from hypothesis import given
from hypothesis import strategies as st

from channels.twilio_http import urlencode_form

TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
VALUES = st.one_of(
    st.none(),
    TEXT,
    st.binary(max_size=10),
    st.integers(),
    st.booleans(),
    st.floats(allow_nan=False),
    st.lists(TEXT, max_size=3),
)


@given(st.dictionaries(TEXT, VALUES, max_size=6))
def test_form_encoding_is_urlencodes(values: dict[str, object]) -> None:
    expected = urlencode({key: value for key, value in values.items() if value is not None}, doseq=True)
    assert urlencode_form(values) == expected


def test_a_chinese_text_is_escaped_as_utf_8() -> None:
    assert (
        urlencode_form({"Body": "还款 a+b", "To": "+15551110000"}) == "Body=%E8%BF%98%E6%AC%BE+a%2Bb&To=%2B15551110000"
    )
