"""find_sent: each adapter asks its real provider's sandbox, over loopback HTTP, whether a contact in doubt
reached it. Found gives the provider's id; absent is said only when the provider definitely has none; a
provider that cannot be asked right now is a TransientDeliveryError; SMTP cannot be asked at all."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from channels import build_adapter
from channels.agency import AgencyAdapter
from channels.base import (
    Evidence,
    LookupUnavailable,
    OutboundMessage,
    Reconcilable,
    SentQuery,
    TransientDeliveryError,
)
from channels.email import EmailAdapter
from channels.letter import LetterAdapter
from channels.letter import translate_lookup_error as letter_lookup_error
from channels.sandbox import Sandboxes
from channels.sms import SmsAdapter
from channels.twilio_provider import translate_lookup_error as twilio_lookup_error
from channels.voice import VoiceAdapter
from config.settings import Settings
from tests import channel_fixtures

pytestmark = pytest.mark.integration

# The shared fixtures, bound here so pytest finds them (no conftest or plugin needed).
recorder = channel_fixtures.recorder
sandboxes = channel_fixtures.sandboxes
settings = channel_fixtures.settings

BODY = "Reminder: payment due. Reply STOP to opt out."
ADDRESS = {"name": "Wu", "address_line1": "2 Side Road", "address_city": "Beijing", "address_country": "CN"}


def query(
    contact_id: str,
    to: str | dict[str, str],
    *,
    sender: str | None = None,
    text: str | None = None,
    shift: timedelta = timedelta(0),
) -> SentQuery:
    """A claim taken a minute ago with a two-minute hard limit, moved by `shift`."""
    since = datetime.now(UTC) - timedelta(minutes=1) + shift
    return SentQuery(contact_id, "acct-l", to, sender, since, since + timedelta(minutes=2), text)


def sms(contact_id: str, to: str, body: str = BODY) -> OutboundMessage:
    return OutboundMessage(contact_id, "acct-l", to, "en", body)


def closed_url() -> str:
    with socket.socket() as probe:  # a loopback port that was free a moment ago and has no listener
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def wrong_secret(settings: Settings, field: str) -> Settings:
    return settings.model_copy(update={field: type(getattr(settings, field))("not-the-secret")})


# --- the contract ------------------------------------------------------------------------------------


def test_a_query_needs_aware_times_in_order_and_evidence_is_consistent() -> None:
    now = datetime.now(UTC)
    with pytest.raises(ValueError):
        SentQuery("c", "a", "+1555", None, now.replace(tzinfo=None), now)
    with pytest.raises(ValueError):
        SentQuery("c", "a", "+1555", None, now, now - timedelta(seconds=1))
    with pytest.raises(ValueError):
        Evidence(found=True)
    with pytest.raises(ValueError):
        Evidence(found=False, provider_id="SM1")
    assert Evidence.absent() == Evidence(False)


@pytest.mark.parametrize("channel", ["sms", "voice", "email", "letter", "agency"])
def test_every_adapter_is_reconcilable(settings: Settings, channel: str) -> None:
    adapter = build_adapter(channel, settings)
    try:
        assert isinstance(adapter, Reconcilable)
    finally:
        adapter.close()


def test_email_cannot_be_asked(settings: Settings) -> None:
    with pytest.raises(LookupUnavailable):
        EmailAdapter(settings).find_sent(query("c-l-email", "wu@example.test", text="Hello"))


def test_lookup_errors_never_read_as_absence() -> None:
    for status in (401, 403, 404, 429, 500, 503):
        assert isinstance(twilio_lookup_error(status, "x", None), TransientDeliveryError)
        assert isinstance(letter_lookup_error(httpx.Response(status, text="x")), TransientDeliveryError)
    assert isinstance(twilio_lookup_error(400, "bad filter", None), LookupUnavailable)
    assert isinstance(letter_lookup_error(httpx.Response(422, text="bad filter")), LookupUnavailable)
    slow_down = twilio_lookup_error(429, "slow down", 3.0)
    assert isinstance(slow_down, TransientDeliveryError) and slow_down.retry_after == 3.0


# --- SMS (Twilio Messages list) ----------------------------------------------------------------------


def test_a_sent_sms_is_found_with_its_sid(settings: Settings) -> None:
    adapter = SmsAdapter(settings)
    receipt = adapter.send(sms("c-l-sms-1", "+15554440100"))
    evidence = adapter.find_sent(query("c-l-sms-1", "+15554440100", sender=settings.twilio_from_number))
    assert evidence.found and evidence.provider_id == receipt.provider_id
    assert evidence.status in ("queued", "sent", "delivered")
    assert adapter.find_sent(query("c-l-sms-1", "+15554440100", text=BODY)).provider_id == receipt.provider_id


def test_an_sms_to_another_number_or_outside_the_window_is_not_found(settings: Settings) -> None:
    adapter = SmsAdapter(settings)
    adapter.send(sms("c-l-sms-2", "+15554440200"))
    assert adapter.find_sent(query("c-l-sms-2", "+15554440299")) == Evidence.absent()
    assert adapter.find_sent(query("c-l-sms-2", "+15554440200", shift=timedelta(hours=1))) == Evidence.absent()
    assert adapter.find_sent(query("c-l-sms-2", "+15554440200", shift=-timedelta(hours=1))) == Evidence.absent()
    assert adapter.find_sent(query("c-l-sms-2", "+15554440200", sender="+15005550009")) == Evidence.absent()


def test_another_contacts_message_to_the_same_number_is_not_taken(settings: Settings) -> None:
    adapter = SmsAdapter(settings)
    other = adapter.send(sms("c-l-sms-other", "+15554440900"))
    ours = adapter.send(sms("c-l-sms-ours", "+15554440900"))
    asked = query("c-l-sms-ours", "+15554440900", text=BODY)
    assert adapter.find_sent(asked).provider_id == other.provider_id  # alike in number, time and body
    excluding = SentQuery(**{**asked.__dict__, "exclude_ids": frozenset({other.provider_id})})
    assert adapter.find_sent(excluding).provider_id == ours.provider_id
    both = SentQuery(**{**asked.__dict__, "exclude_ids": frozenset({other.provider_id, ours.provider_id})})
    assert adapter.find_sent(both) == Evidence.absent()


def test_a_message_in_the_window_with_another_body_cannot_decide(settings: Settings) -> None:
    adapter = SmsAdapter(settings)
    adapter.send(sms("c-l-sms-3", "+15554440300", body="Another text"))
    with pytest.raises(LookupUnavailable):
        adapter.find_sent(query("c-l-sms-3", "+15554440300", text=BODY))


def test_an_sms_through_a_messaging_service_is_matched_by_the_service(settings: Settings) -> None:
    service_sid = "MG" + "1" * 32
    adapter = SmsAdapter(settings.model_copy(update={"twilio_messaging_service_sid": service_sid}))
    receipt = adapter.send(sms("c-l-sms-mg", "+15554440400"))
    assert adapter.find_sent(query("c-l-sms-mg", "+15554440400", text=BODY)).provider_id == receipt.provider_id
    other_service = query("c-l-sms-mg", "+15554440400", sender="MG" + "2" * 32)
    assert adapter.find_sent(other_service) == Evidence.absent()


def test_the_lookup_reads_every_page(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    adapter = SmsAdapter(settings)
    first = adapter.send(sms("c-l-sms-pages", "+15554440500", body="first"))
    for n in range(3):
        adapter.send(sms(f"c-l-sms-pages-{n}", "+15554440500", body=f"later {n}"))
    monkeypatch.setattr("channels.sms.LOOKUP_PAGE_SIZE", 1)  # the oldest message is on the fourth page
    assert adapter.find_sent(query("c-l-sms-pages", "+15554440500", text="first")).provider_id == first.provider_id
    monkeypatch.setattr("channels.twilio_provider.LOOKUP_MAX_PAGES", 2)  # a list not read to the end decides nothing
    with pytest.raises(LookupUnavailable):
        adapter.find_sent(query("c-l-sms-pages", "+15554440500", text="first"))


def test_an_sms_accepted_then_timed_out_is_found(settings: Settings, sandboxes: Sandboxes) -> None:
    sandboxes.twilio.faults.set(accept_then_hang=1, accept_hang_seconds=1.0)
    with pytest.raises(TransientDeliveryError) as caught:
        SmsAdapter(settings, timeout=0.3).send(sms("c-l-sms-hang", "+15554440600"))
    assert caught.value.ambiguous  # the request left; only the provider can say whether it arrived
    [stored] = [m for m in sandboxes.twilio.state.messages() if m["message"]["to"] == "+15554440600"]
    evidence = SmsAdapter(settings).find_sent(query("c-l-sms-hang", "+15554440600", text=BODY))
    assert evidence.found and evidence.provider_id == stored["message"]["sid"]


def test_sms_lookup_when_twilio_cannot_be_asked(settings: Settings, sandboxes: Sandboxes) -> None:
    asked = query("c-l-sms-down", "+15554440700")
    sandboxes.twilio.faults.set(fail_503=1)
    with pytest.raises(TransientDeliveryError):
        SmsAdapter(settings).find_sent(asked)
    sandboxes.twilio.faults.set(fail_429=1, retry_after=4)
    with pytest.raises(TransientDeliveryError) as caught:
        SmsAdapter(settings).find_sent(asked)
    assert caught.value.retry_after == 4.0
    with pytest.raises(TransientDeliveryError):  # a wrong token is no evidence of absence
        SmsAdapter(wrong_secret(settings, "twilio_auth_token")).find_sent(asked)
    with pytest.raises(TransientDeliveryError):
        SmsAdapter(settings.model_copy(update={"twilio_api_base_url": closed_url()}), timeout=1.0).find_sent(asked)
    sandboxes.twilio.faults.set(hang=2.0)
    try:
        with pytest.raises(TransientDeliveryError):
            SmsAdapter(settings, timeout=0.3).find_sent(asked)
    finally:
        sandboxes.twilio.faults.set(hang=0.0)


def test_the_twilio_sandbox_lists_as_twilio_does(settings: Settings, sandboxes: Sandboxes) -> None:
    adapter = SmsAdapter(settings)
    for n in range(3):
        adapter.send(sms(f"c-l-sms-list-{n}", "+15554440800", body=f"text {n}"))
    sid = settings.twilio_account_sid
    url = f"{sandboxes.twilio.url}/2010-04-01/Accounts/{sid}/Messages.json"
    auth = (sid, settings.twilio_auth_token.get_secret_value())
    page = httpx.get(url, params={"To": "+15554440800", "PageSize": 2}, auth=auth).json()
    assert [m["body"] for m in page["messages"]] == ["text 2", "text 1"]  # most recent first
    paging = (page["page"], page["page_size"], page["start"], page["end"], page["previous_page_uri"])
    assert paging == (0, 2, 0, 1, None)
    assert page["uri"].startswith(f"/2010-04-01/Accounts/{sid}/Messages.json?") and "Page=0" in page["uri"]
    following = httpx.get(sandboxes.twilio.url + page["next_page_uri"], auth=auth).json()
    assert [m["body"] for m in following["messages"]] == ["text 0"] and following["next_page_uri"] is None
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    assert httpx.get(url, params={"To": "+15554440800", "DateSent>": tomorrow}, auth=auth).json()["messages"] == []
    assert httpx.get(url, params={"To": "+15554440800"}).status_code == 401


# --- voice (Twilio Calls list) -----------------------------------------------------------------------


def test_a_placed_call_is_found_and_others_are_not(settings: Settings, sandboxes: Sandboxes) -> None:
    adapter = VoiceAdapter(settings)
    receipt = adapter.send(OutboundMessage("c-l-call", "acct-l", "+15554441000", "en", "Hello"))
    evidence = adapter.find_sent(query("c-l-call", "+15554441000"))
    assert evidence.found and evidence.provider_id == receipt.provider_id and evidence.status
    assert adapter.find_sent(query("c-l-call", "+15554441099")) == Evidence.absent()
    assert adapter.find_sent(query("c-l-call", "+15554441000", shift=timedelta(hours=1))) == Evidence.absent()
    listing = httpx.get(
        f"{sandboxes.twilio.url}/2010-04-01/Accounts/{settings.twilio_account_sid}/Calls.json",
        params={"To": "+15554441000"},
        auth=(settings.twilio_account_sid, settings.twilio_auth_token.get_secret_value()),
    ).json()
    assert [call["sid"] for call in listing["calls"]] == [receipt.provider_id]


def test_voice_lookup_when_twilio_cannot_be_asked(settings: Settings, sandboxes: Sandboxes) -> None:
    asked = query("c-l-call-down", "+15554441100")
    sandboxes.twilio.faults.set(fail_503=1)
    with pytest.raises(TransientDeliveryError):
        VoiceAdapter(settings).find_sent(asked)
    with pytest.raises(TransientDeliveryError):
        VoiceAdapter(wrong_secret(settings, "twilio_auth_token")).find_sent(asked)
    with pytest.raises(TransientDeliveryError):
        VoiceAdapter(settings.model_copy(update={"twilio_api_base_url": closed_url()}), timeout=1.0).find_sent(asked)


# --- letters (Lob's letter list, metadata filter) ----------------------------------------------------


def test_a_submitted_letter_is_found_by_its_contact_id(settings: Settings) -> None:
    adapter = LetterAdapter(settings)
    receipt = adapter.send(OutboundMessage("c-l-letter", "acct-l", ADDRESS, "en", "Dear Wu"))
    evidence = adapter.find_sent(query("c-l-letter", ADDRESS))
    assert evidence.found and evidence.provider_id == receipt.provider_id and evidence.status
    assert adapter.find_sent(query("c-l-letter-never", ADDRESS)) == Evidence.absent()


def test_a_vendor_ignoring_the_filter_cannot_make_another_letter_count(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    adapter = LetterAdapter(settings)
    wanted = adapter.send(OutboundMessage("c-l-letter-old", "acct-l", ADDRESS, "en", "Dear Wu"))
    for n in range(2):
        adapter.send(OutboundMessage(f"c-l-letter-new-{n}", "acct-l", ADDRESS, "en", "Dear Wu"))
    read_page = adapter._list_page

    def unfiltered(url: str, params: dict[str, str | int] | None) -> dict[str, object]:
        return read_page(url, {"limit": 1} if params else None)  # every letter, one per page, by next_url

    monkeypatch.setattr(adapter, "_list_page", unfiltered)
    assert adapter.find_sent(query("c-l-letter-old", ADDRESS)).provider_id == wanted.provider_id
    monkeypatch.setattr("channels.letter.LOOKUP_MAX_PAGES", 2)
    with pytest.raises(LookupUnavailable):  # not read to the end: absence would be a guess
        adapter.find_sent(query("c-l-letter-never", ADDRESS))


def test_letter_lookup_when_the_vendor_cannot_be_asked(settings: Settings, sandboxes: Sandboxes) -> None:
    asked = query("c-l-letter-down", ADDRESS)
    sandboxes.print_vendor.faults.set(fail_503=1)
    with pytest.raises(TransientDeliveryError):
        LetterAdapter(settings).find_sent(asked)
    with pytest.raises(TransientDeliveryError):
        LetterAdapter(wrong_secret(settings, "print_vendor_api_key")).find_sent(asked)
    with pytest.raises(TransientDeliveryError):
        LetterAdapter(settings.model_copy(update={"print_vendor_url": closed_url()}), timeout=1.0).find_sent(asked)


def test_the_print_vendor_sandbox_lists_as_lob_does(settings: Settings, sandboxes: Sandboxes) -> None:
    adapter = LetterAdapter(settings)
    for n in range(3):
        adapter.send(OutboundMessage(f"c-l-letter-list-{n}", "acct-lob", ADDRESS, "en", f"Letter {n}"))
    auth = (settings.print_vendor_api_key.get_secret_value(), "")
    url = f"{sandboxes.print_vendor.url}/v1/letters"
    listing = httpx.get(url, params={"metadata[account_id]": "acct-lob", "limit": 2}, auth=auth).json()
    assert listing["object"] == "list" and listing["count"] == 2 and listing["previous_url"] is None
    newest_first = [letter["metadata"]["contact_id"] for letter in listing["data"]]
    assert newest_first == ["c-l-letter-list-2", "c-l-letter-list-1"]
    following = httpx.get(listing["next_url"], auth=auth).json()
    assert [letter["metadata"]["contact_id"] for letter in following["data"]] == ["c-l-letter-list-0"]
    assert following["next_url"] is None and following["previous_url"]
    one = httpx.get(url, params={"metadata[contact_id]": "c-l-letter-list-1"}, auth=auth).json()
    assert [letter["metadata"]["contact_id"] for letter in one["data"]] == ["c-l-letter-list-1"]
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert httpx.get(url, params={"date_created[gt]": later}, auth=auth).json()["data"] == []
    assert httpx.get(url, params={"limit": 101}, auth=auth).status_code == 422
    assert httpx.get(url).status_code == 401


# --- agency hand-off (GET /cases?reference=) ---------------------------------------------------------


def test_a_handed_off_case_is_found_by_reference(settings: Settings) -> None:
    adapter = AgencyAdapter(settings)
    message = OutboundMessage("c-l-agency", "acct-l", "", "en", "", extra={"case_file": {"balance": "10.00"}})
    receipt = adapter.send(message)
    evidence = adapter.find_sent(query("c-l-agency", ""))
    assert evidence == Evidence(found=True, provider_id=receipt.provider_id, status="accepted")
    assert adapter.find_sent(query("c-l-agency-never", "")) == Evidence.absent()


def test_agency_lookup_when_the_agency_cannot_be_asked(settings: Settings, sandboxes: Sandboxes) -> None:
    asked = query("c-l-agency-down", "")
    sandboxes.agency.faults.set(fail_503=1)
    with pytest.raises(TransientDeliveryError):
        AgencyAdapter(settings).find_sent(asked)
    with pytest.raises(TransientDeliveryError):
        AgencyAdapter(wrong_secret(settings, "agency_api_key")).find_sent(asked)
    with pytest.raises(TransientDeliveryError):
        AgencyAdapter(settings.model_copy(update={"agency_url": closed_url() + "/cases"}), timeout=1.0).find_sent(asked)
