"""Letters to the Lob-shaped print-vendor sandbox and case files to the agency sandbox, over loopback HTTP."""

from __future__ import annotations

import io

import pytest
from pypdf import PdfReader

from channels.agency import AgencyAdapter
from channels.base import OutboundMessage, PermanentDeliveryError
from channels.letter import LetterAdapter
from channels.sandbox import Sandboxes
from config.settings import Settings
from tests import channel_fixtures
from tests.channel_fixtures import CallbackRecorder

pytestmark = pytest.mark.integration

# The shared fixtures, bound here so pytest finds them (no conftest or plugin needed).
recorder = channel_fixtures.recorder
sandboxes = channel_fixtures.sandboxes
settings = channel_fixtures.settings

LETTER_ZH = "催款函\n\n尊敬的张三：\n\n您尾号1234的信用卡已逾期65天，逾期金额¥12,345.67。"


def letter(contact_id: str, line1: str = "1 Main Street", text: str = LETTER_ZH) -> OutboundMessage:
    to = {
        "name": "张三", "address_line1": line1, "address_city": "上海市", "address_state": "上海",
        "address_zip": "200000", "address_country": "CN",
    }  # fmt: skip
    return OutboundMessage(contact_id, "acct-9", to, "zh-CN", text)


def webhooks_for(recorder: CallbackRecorder, letter_id: str, count: int) -> list:
    return recorder.wait_for(
        lambda r: r.url.endswith("/v1/webhooks/print-vendor") and letter_id.encode() in r.body, count
    )


def test_letter_pdf_with_chinese_text_extracts_back(settings: Settings, sandboxes: Sandboxes) -> None:
    receipt = LetterAdapter(settings).send(letter("c-letter-zh"))
    pdf = (sandboxes.print_vendor.state.letters_dir / f"{receipt.provider_id}.pdf").read_bytes()
    extracted = "".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)
    assert receipt.provider_id.startswith("ltr_")
    assert "尊敬的张三" in extracted and "逾期金额¥12,345.67" in extracted


def test_letter_carries_operational_use_and_our_ids(settings: Settings, sandboxes: Sandboxes) -> None:
    receipt = LetterAdapter(settings).send(letter("c-letter-meta"))
    stored = sandboxes.print_vendor.state.letters[receipt.provider_id]
    assert stored["use_type"] == "operational"
    assert stored["metadata"] == {"contact_id": "c-letter-meta", "account_id": "acct-9"}


def test_resending_a_letter_returns_the_same_letter(settings: Settings, sandboxes: Sandboxes) -> None:
    adapter = LetterAdapter(settings)
    first, second = adapter.send(letter("c-letter-twice")), adapter.send(letter("c-letter-twice"))
    assert first.provider_id == second.provider_id
    assert len(list(sandboxes.print_vendor.state.letters_dir.glob(f"{first.provider_id}*.pdf"))) == 1


def test_tracking_webhooks_are_signed_and_map_to_sent_then_delivered(
    settings: Settings, recorder: CallbackRecorder
) -> None:
    adapter = LetterAdapter(settings)
    receipt = adapter.send(letter("c-letter-track"))
    events = webhooks_for(recorder, receipt.provider_id, count=3)
    kinds = [o.kind for event in events for o in adapter.parse_callback(event.url, event.headers, event.body)]
    assert kinds == ["sent", "delivered"]  # in_transit gives no outcome


def test_a_returned_letter_maps_to_returned(settings: Settings, recorder: CallbackRecorder) -> None:
    adapter = LetterAdapter(settings)
    receipt = adapter.send(letter("c-letter-return", line1="RETURN TO SENDER LANE 9"))
    final = webhooks_for(recorder, receipt.provider_id, count=3)[-1]
    [outcome] = adapter.parse_callback(final.url, final.headers, final.body)
    assert (outcome.kind, outcome.contact_id) == ("returned", "c-letter-return")


def test_a_letter_without_a_street_is_an_invalid_address(settings: Settings) -> None:
    with pytest.raises(PermanentDeliveryError) as caught:
        LetterAdapter(settings).send(letter("c-letter-nostreet", line1=""))
    assert caught.value.outcome_kind == "invalid_address"


def case(contact_id: str, balance: str = "12345.67") -> OutboundMessage:
    case_file = {"account": {"id": "acct-9", "currency": "CNY"}, "balance": balance, "contacts": [], "letters": []}
    return OutboundMessage(contact_id, "acct-9", "", "zh-CN", "", extra={"case_file": case_file})


def test_case_file_is_handed_off_and_stored(settings: Settings, sandboxes: Sandboxes) -> None:
    receipt = AgencyAdapter(settings).send(case("c-agency-1"))
    stored = (sandboxes.agency.state.cases_dir / f"{receipt.provider_id}.json").read_text("utf-8")
    assert receipt.status == "handed_off" and '"balance": "12345.67"' in stored


def test_a_duplicate_hand_off_counts_as_success(settings: Settings, sandboxes: Sandboxes) -> None:
    adapter = AgencyAdapter(settings)
    first = adapter.send(case("c-agency-dup"))
    replay, conflict = adapter.send(case("c-agency-dup")), adapter.send(case("c-agency-dup", balance="1.00"))
    assert first.provider_id == replay.provider_id == conflict.provider_id
    assert replay.detail["duplicate"] and conflict.detail["duplicate"]
    assert len(list(sandboxes.agency.state.cases_dir.glob("*.json"))) == len(sandboxes.agency.state.by_key)
