"""What the Twilio stand-in refuses on a create, as Twilio documents it (twilio-oai, API 2010-04-01):
required fields and their alternatives, lengths, ranges and enums, each with Twilio's own error code."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

BODY_MAX = 1600  # characters of a Message Body
TWIML_MAX = 4000  # characters of a Call's inline Twiml
VALIDITY_PERIOD = range(1, 36001)  # seconds
HTTP_METHODS = frozenset({"GET", "POST"})
CALL_METHOD_FIELDS = ("Method", "FallbackMethod", "StatusCallbackMethod")
CALL_EVENTS = frozenset({"initiated", "ringing", "answered", "completed"})
MACHINE_DETECTION = frozenset({"Enable", "DetectMessageEnd"})
ASYNC_AMD = frozenset({"true", "false"})


def _absolute_url(value: str, underscore_ok: bool = True) -> bool:
    parts = urlsplit(value)
    host = parts.hostname or ""
    return parts.scheme in ("http", "https") and bool(host) and (underscore_ok or "_" not in host)


def message_refusal(form: Mapping[str, str]) -> tuple[int, str] | None:
    """Twilio's code and message for a Message create it would refuse, checked in Twilio's order."""
    if not form.get("To"):
        return 21604, "A 'To' phone number is required."
    if not (form.get("From") or form.get("MessagingServiceSid")):
        return 21603, "A 'From' or 'MessagingServiceSid' parameter is required to send a message."
    if not any(form.get(name) for name in ("Body", "MediaUrl", "ContentSid")):
        if form.get("MessagingServiceSid"):
            return 21619, "A text message body, media URL or Content SID is required."
        return 21602, "Message body is required."
    if len(form.get("Body", "")) > BODY_MAX:
        return 21617, "The concatenated message body exceeds the 1600 character limit."
    validity = form.get("ValidityPeriod")
    if validity is not None and not (validity.isdigit() and int(validity) in VALIDITY_PERIOD):
        return 21624, "Invalid validity period value"
    callback = form.get("StatusCallback")
    if callback is not None and not _absolute_url(callback, underscore_ok=False):
        return 21609, "The StatusCallback URL is not a valid URL."
    return None


def call_refusal(form: Mapping[str, str], events: list[str]) -> tuple[int, str] | None:
    """Twilio's code and message for a Call create it would refuse; `events` are every StatusCallbackEvent."""
    if not form.get("To"):
        return 21201, "No 'To' number is specified"
    if not form.get("From"):
        return 21213, "No 'From' number is specified"
    if not any(form.get(name) for name in ("Url", "Twiml", "ApplicationSid")):
        return 21205, "Url parameter is required."
    if form.get("Url") and not _absolute_url(form["Url"]):
        return 21205, f"Url is not a valid URL: {form['Url']}"
    if len(form.get("Twiml", "")) > TWIML_MAX:
        return 32018, "Twiml size exceeded maximum allowed value of 4000 characters"
    for name in CALL_METHOD_FIELDS:
        if name in form and form[name] not in HTTP_METHODS:
            return 21209, f"{name} must be GET or POST"
    if any(event not in CALL_EVENTS for event in events):
        return 21626, "One or more of the StatusCallbackEvents provided were invalid."
    timeout = form.get("MachineDetectionTimeout")
    if (
        form.get("MachineDetection", "Enable") not in MACHINE_DETECTION
        or form.get("AsyncAmd", "false") not in ASYNC_AMD
        or (timeout is not None and not timeout.isdigit())
    ):
        return 21234, "Invalid Machine Detection configuration value"
    return None
