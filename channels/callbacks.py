"""Where providers call us back: the webhook paths under the API, and the URLs the adapters give providers.

The one place these paths are spelled. The adapters build their callback URLs here, the sandboxes post
here, and the API's webhook routes are declared on these same paths, so a renamed path cannot leave a
provider calling a route that no longer exists.
"""

from __future__ import annotations

from urllib.parse import quote

WEBHOOK_PREFIX = "/v1/webhooks/"
TWILIO_MESSAGE_STATUS = WEBHOOK_PREFIX + "twilio/message-status"
TWILIO_CALL_STATUS = WEBHOOK_PREFIX + "twilio/call-status"
TWILIO_AMD = WEBHOOK_PREFIX + "twilio/amd"
TWILIO_VOICE_TWIML = WEBHOOK_PREFIX + "twilio/voice-twiml"
TWILIO_INBOUND_SMS = WEBHOOK_PREFIX + "twilio/inbound-sms"
PRINT_VENDOR = WEBHOOK_PREFIX + "print-vendor"
EMAIL_BOUNCE = WEBHOOK_PREFIX + "email-bounce"
EMAIL_DSN = WEBHOOK_PREFIX + "email-dsn"
WECHAT = WEBHOOK_PREFIX + "wechat"  # the official account's server URL: its pushes (safe mode) come here
# Aliyun signs none of its pushes: the URLs configured at Aliyun carry a secret path segment, {token}.
ALIYUN_SMS_REPORT = WEBHOOK_PREFIX + "aliyun/{token}/sms-report"
ALIYUN_SMS_UP = WEBHOOK_PREFIX + "aliyun/{token}/sms-up"


def callback_url(public_base_url: str, path: str, contact_id: str | None = None) -> str:
    """The public URL of a webhook path; with a contact id, the one the callback is about (the id is
    quoted whole, its slashes included, so it comes back as one query parameter)."""
    url = f"{public_base_url.rstrip('/')}{path}"
    return url if contact_id is None else f"{url}?contact_id={quote(contact_id, safe='')}"
