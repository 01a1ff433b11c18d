"""Lob's letter create as Lob documents it (lob/lob-openapi: resources/letters/letters.yml, letter_editable,
letter_base and shared/models/address), the real LetterAdapter against the sandbox, and the sandbox
refusing what Lob would refuse."""

from __future__ import annotations

import io
import json

import httpx
import pytest
from reportlab.lib.pagesizes import A4, LETTER
from reportlab.pdfgen.canvas import Canvas

from channels.base import OutboundMessage, PermanentDeliveryError, ProviderMisconfigured
from channels.letter import LetterAdapter
from channels.sandbox import Sandboxes
from config.settings import Settings
from tests import channel_fixtures

pytestmark = pytest.mark.integration

recorder = channel_fixtures.recorder
sandboxes = channel_fixtures.sandboxes
settings = channel_fixtures.settings

# What Lob requires of a letter create (letter_editable.yml `required`, letter_base.yml `required`).
LOB_REQUIRED = {"to", "from", "file", "color"}
# Lob's enums for the fields we send.
LOB_ENUMS = {
    "use_type": {"marketing", "operational"},
    "mail_type": {"usps_first_class", "usps_standard"},
    "address_placement": {"top_first_page", "insert_blank_page", "bottom_first_page_center", "bottom_first_page"},
    "color": {"true", "false"},
    "double_sided": {"true", "false"},
}
US_TO = {
    "name": "Jane Doe", "address_line1": "185 Berry St", "address_line2": "Ste 6100", "address_city": "San Francisco",
    "address_state": "CA", "address_zip": "94107", "address_country": "US",
}  # fmt: skip
CN_TO = {
    "name": "王小明", "address_line1": "南京西路1266号", "address_city": "上海市", "address_state": "上海",
    "address_zip": "200040", "address_country": "CN",
}  # fmt: skip


def letter(contact_id: str, to: dict[str, str] = US_TO, locale: str = "en") -> OutboundMessage:
    return OutboundMessage(contact_id, "acct-3", dict(to), locale, "Dear Jane,\n\nPlease pay.", extra={})


def created(sandboxes: Sandboxes, letter_id: str) -> dict[str, object]:
    return next(r for r in sandboxes.print_vendor.state.log.read() if r.get("letter", {}).get("id") == letter_id)


def test_the_url_setting_is_lobs_root_with_its_version(settings: Settings, sandboxes: Sandboxes) -> None:
    assert settings.print_vendor_url.endswith("/v1")  # as Lob's https://api.lob.com/v1
    receipt = LetterAdapter(settings).send(letter("acct-3/letter/0"))
    assert receipt.provider_id.startswith("ltr_")


def test_the_create_request_carries_every_field_lob_requires_in_its_form(
    settings: Settings, sandboxes: Sandboxes
) -> None:
    receipt = LetterAdapter(settings).send(letter("acct-3/letter/1"))
    record = created(sandboxes, receipt.provider_id)
    form = set(record["form"])  # type: ignore[arg-type]
    top_level = {name.split("[")[0] for name in form} | {"file"}
    assert top_level >= LOB_REQUIRED
    assert {f"to[{key}]" for key in US_TO} <= form  # deepObject, every address field
    assert {
        "from[name]",
        "from[address_line1]",
        "from[address_city]",
        "from[address_state]",
        "from[address_zip]",
    } <= form
    assert {"metadata[contact_id]", "metadata[account_id]"} <= form
    stored = record["letter"]
    assert isinstance(stored, dict)
    for field, allowed in LOB_ENUMS.items():
        value = stored[field]
        assert (str(value).lower() if isinstance(value, bool) else value) in allowed, field
    assert stored["use_type"] == "operational" and stored["address_placement"] == "top_first_page"
    assert stored["from"]["address_zip"] == settings.letter_from_address_zip  # the return address from settings


def test_a_saved_return_address_id_goes_as_from(settings: Settings, sandboxes: Sandboxes) -> None:
    saved = settings.model_copy(update={"letter_from_address_id": "adr_210a8d4b0b76d77b"})
    receipt = LetterAdapter(saved).send(letter("acct-3/letter/2", CN_TO, "zh-CN"))
    assert created(sandboxes, receipt.provider_id)["letter"]["from"] == "adr_210a8d4b0b76d77b"  # type: ignore[index]


def test_a_url_without_the_version_is_a_misconfiguration_naming_the_setting(settings: Settings) -> None:
    wrong = settings.model_copy(update={"print_vendor_url": settings.print_vendor_url.removesuffix("/v1")})
    with pytest.raises(ProviderMisconfigured) as caught:
        LetterAdapter(wrong).send(letter("acct-3/letter/3"))
    assert caught.value.setting == "DISPATCHER_PRINT_VENDOR_URL" and "404" in str(caught.value)


def test_a_wrong_key_or_an_unknown_host_is_a_misconfiguration(settings: Settings) -> None:
    key = settings.model_copy(update={"print_vendor_api_key": type(settings.print_vendor_api_key)("live_wrong")})
    with pytest.raises(ProviderMisconfigured) as caught:
        LetterAdapter(key).send(letter("acct-3/letter/4"))
    assert caught.value.setting == "DISPATCHER_PRINT_VENDOR_API_KEY"
    host = settings.model_copy(update={"print_vendor_url": "http://print-vendor.invalid/v1"})
    with pytest.raises(ProviderMisconfigured) as caught:
        LetterAdapter(host, timeout=5).send(letter("acct-3/letter/5"))
    assert caught.value.setting == "DISPATCHER_PRINT_VENDOR_URL" and "unknown host" in str(caught.value)


def test_a4_pages_at_lob_are_a_page_size_misconfiguration(settings: Settings) -> None:
    a4 = settings.model_copy(update={"letter_page_size": "a4"})
    with pytest.raises(ProviderMisconfigured) as caught:
        LetterAdapter(a4).send(letter("acct-3/letter/6"))
    assert caught.value.setting == "DISPATCHER_LETTER_PAGE_SIZE" and "8.5" in str(caught.value)


def test_an_incomplete_return_address_is_ours_and_an_incomplete_debtor_address_is_theirs(settings: Settings) -> None:
    no_zip = settings.model_copy(update={"letter_from_address_zip": ""})
    with pytest.raises(ProviderMisconfigured) as ours:
        LetterAdapter(no_zip).send(letter("acct-3/letter/7"))
    assert ours.value.setting == "DISPATCHER_LETTER_FROM_ADDRESS_LINE1" and "from.address_zip" in str(ours.value)
    with pytest.raises(PermanentDeliveryError) as theirs:
        LetterAdapter(settings).send(letter("acct-3/letter/8", {**US_TO, "address_state": "California"}))
    assert theirs.value.outcome_kind == "invalid_address" and not isinstance(theirs.value, ProviderMisconfigured)


def _pdf(size: tuple[float, float] = LETTER, font: str = "Helvetica") -> bytes:
    buffer = io.BytesIO()
    canvas = Canvas(buffer, pagesize=size)
    canvas.setFont(font, 12)
    canvas.drawString(72, 500, "Pay now")
    canvas.save()
    return buffer.getvalue()


def _form(**changes: str | None) -> dict[str, str]:
    form = {f"to[{k}]": v for k, v in US_TO.items()} | {f"from[{k}]": v for k, v in US_TO.items()}
    form |= {"color": "false", "use_type": "operational", "mail_type": "usps_first_class"}
    for key, value in changes.items():
        if value is None:
            form.pop(key, None)
        else:
            form[key] = value
    return form


@pytest.mark.parametrize(
    ("changes", "pdf_size", "problem"),
    [
        ({"color": None}, LETTER, "color is required"),
        ({"use_type": "collections"}, LETTER, "use_type must be one of"),
        ({"to[address_state]": None}, LETTER, "to.address_state"),
        ({"to[address_zip]": "9410"}, LETTER, "to.address_zip"),
        ({"to[name]": None}, LETTER, "to.name: name or company"),
        ({"from[address_line1]": None}, LETTER, "from.address_line1"),
        ({"address_placement": "middle"}, LETTER, "address_placement must be one of"),
        ({}, A4, '8.5"x11"'),
        ({}, (0, 0), "fonts must be embedded"),  # Helvetica is referenced, never embedded
    ],
)
def test_the_sandbox_refuses_what_lob_would(
    sandboxes: Sandboxes, settings: Settings, changes: dict[str, str | None], pdf_size: tuple[float, float],
    problem: str,
) -> None:  # fmt: skip
    pdf = _pdf(LETTER if pdf_size == (0, 0) else pdf_size)
    if pdf_size == LETTER and problem != "fonts must be embedded":
        from tests.letter_pages import example_letter

        pdf = example_letter("en")[0]  # an embedded font: only the field under test is wrong
    key = settings.print_vendor_api_key.get_secret_value()
    files = {"file": ("l.pdf", pdf, "application/pdf")}
    response = httpx.post(f"{settings.print_vendor_url}/letters", data=_form(**changes), files=files, auth=(key, ""))
    assert response.status_code == 422, response.text
    assert problem in json.loads(response.text)["error"]["message"]


def test_the_sandbox_refuses_a_body_that_is_not_multipart_and_a_wrong_key(settings: Settings) -> None:
    key = settings.print_vendor_api_key.get_secret_value()
    as_json = httpx.post(f"{settings.print_vendor_url}/letters", json={"to": US_TO}, auth=(key, ""))
    assert as_json.status_code == 422
    wrong = httpx.post(f"{settings.print_vendor_url}/letters", data=_form(), auth=("test_wrong", ""))
    assert wrong.status_code == 401
