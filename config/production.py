"""What a production process refuses: every setting still pointing at a sandbox or an example.

The defaults make `make demo` and the tests work with no configuration at all; the same defaults in
production would text debtors from Twilio's test number, link them to example-bank.test and accept
webhooks signed with a secret printed in the README. `production_problems` lists every such setting,
so an operator fixes them all in one pass.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection
from urllib.parse import urlsplit

from pydantic import SecretStr

from config.api_keys import parse_api_keys
from config.settings_fields import ALIYUN_SANDBOX_TEMPLATES, SettingsFields

# The SHA-256 of the demo key `dsp_demo-not-secret-compose-only` that .env.example ships so the compose
# file's API starts; the key is public, so production refuses it.
DEMO_API_KEY_HASH = "aa65a89eaaa029bf2d1b40bc89c92b5cf2e48c33914f52e19a67f0d34e04a178"

# docker-compose.yml's sandbox service: the staging profile's providers, reached by this name.
SANDBOX_SERVICE = "sandbox"

# The SMTP sandbox's port: a relay on this host at 25/587 is a real deployment, the sandbox is not.
SANDBOX_SMTP_PORT = 8725

_SECRETS = (
    "twilio_auth_token", "print_vendor_api_key", "print_vendor_webhook_secret", "agency_api_key",
    "email_webhook_secret", "unsubscribe_secret",
)  # fmt: skip
_EXAMPLE_TEXT = ("bank_name", "callback_phone")
_SANDBOX_URLS = ("public_base_url", "print_vendor_url", "agency_url", "twilio_api_base_url")
_EXAMPLE_URLS = ("pay_url", "unsubscribe_url")
# RFC 2606 / 6761 names that can never be a real bank's.
_EXAMPLE_TLDS = ("test", "example", "invalid", "localhost")
_EXAMPLE_DOMAINS = ("example.com", "example.org", "example.net")


def production_problems(settings: SettingsFields) -> list[tuple[str, str]]:
    """(field, why) for every setting production must not run with; empty when all are real."""
    problems = [(name, "the sandbox's value") for name in _SECRETS if _default(settings, name)]
    problems += [(name, "the example value") for name in _EXAMPLE_TEXT if _default(settings, name)]
    problems += [
        (name, f"{_url(settings, name)} is a sandbox") for name in _SANDBOX_URLS if _sandbox_url(settings, name)
    ]
    problems += [
        (name, f"{_url(settings, name)} is an example") for name in _EXAMPLE_URLS if _example_url(settings, name)
    ]
    named = {name for name, _ in problems}
    if urlsplit(settings.public_base_url).scheme != "https" and "public_base_url" not in named:
        # Providers call back over the internet; Twilio signs the URL it was given, scheme included.
        problems.append(("public_base_url", f"{settings.public_base_url} is not https"))
    problems += _unsubscribe_problems(settings, named)
    if _example_host(settings.email_from.rpartition("@")[2]):
        problems.append(("email_from", f"{settings.email_from} is an example address"))
    if _is_sandbox_host(settings.smtp_host) and settings.smtp_port == SANDBOX_SMTP_PORT:
        problems.append(("smtp_host", f"{settings.smtp_host}:{settings.smtp_port} is the SMTP sandbox"))
    if settings.letter_from_address_id is None and _default(settings, "letter_from_address_line1"):
        problems.append(("letter_from_address_line1", "the example return address (set yours, or a saved address id)"))
    if settings.redis_url is None:
        problems.append(("redis_url", "unset: the embedded Redis is for development"))
    # An accelerated clock would contact debtors at the wrong hours and days.
    if settings.clock_start is not None:
        problems.append(("clock_start", "demo only: must be unset"))
    if settings.clock_factor != 1.0:
        problems.append(("clock_factor", "demo only: must be 1"))
    problems += _aliyun_problems(settings)
    return sorted(problems + _twilio_problems(settings) + _api_key_problems(settings) + _record_problems(settings))


def _unsubscribe_problems(settings: SettingsFields, named: set[str]) -> list[tuple[str, str]]:
    """RFC 8058 one-click unsubscribe needs an https URI: mailbox providers ignore (and bulk-sender rules
    refuse) a List-Unsubscribe-Post whose URI is http."""
    url = settings.unsubscribe_url
    if "unsubscribe_url" in named or urlsplit(url).scheme == "https":
        return []
    fix = (
        "set DISPATCHER_UNSUBSCRIBE_URL to an https URL ending /v1/unsubscribe/{token}, or leave it unset and set "
        "DISPATCHER_PUBLIC_BASE_URL to the API's https address"
    )
    return [("unsubscribe_url", f"{url} is not https, which RFC 8058 one-click unsubscribe requires: {fix}")]


def _twilio_problems(settings: SettingsFields) -> list[tuple[str, str]]:
    problems = []
    if _default(settings, "twilio_account_sid"):
        problems.append(("twilio_account_sid", "the sandbox's test Account SID"))
    # +1 500 555 xxxx are Twilio's magic test numbers: nothing sent from them reaches anyone.
    if settings.twilio_messaging_service_sid is None and settings.twilio_from_number.startswith("+1500555"):
        problems.append(("twilio_from_number", f"{settings.twilio_from_number} is a Twilio test number"))
    return problems


def _aliyun_problems(settings: SettingsFields) -> list[tuple[str, str]]:
    """Aliyun SMS's settings, when a route sends through it (DISPATCHER_ROUTES, the routing layer's field): a bank
    without an Aliyun account configures none of them."""
    routes = getattr(settings, "routes", None) or {}
    if not any("aliyun" in providers for countries in routes.values() for providers in countries.values()):
        return []
    problems = [(name, "the sandbox's value") for name in _ALIYUN_DEFAULTS if _default(settings, name)]
    if _sandbox_url(settings, "aliyun_endpoint"):
        problems.append(("aliyun_endpoint", f"{_url(settings, 'aliyun_endpoint')} is a sandbox"))
    sandbox_codes = {code for codes in ALIYUN_SANDBOX_TEMPLATES.values() for code in codes.values()}
    sandboxed = sorted(name for name, codes in settings.aliyun_templates.items() if set(codes.values()) & sandbox_codes)
    if sandboxed:
        problems.append(("aliyun_templates", f"the sandbox's TemplateCodes for {', '.join(sandboxed)}"))
    return problems


_ALIYUN_DEFAULTS = ("aliyun_access_key_id", "aliyun_access_key_secret", "aliyun_sign_name", "aliyun_webhook_token")


def channel_problems(settings: SettingsFields, channels: Collection[str]) -> list[tuple[str, str]]:
    """(field, why) for the settings of the channels a deployment may leave out of its strategy (WeChat):
    checked only for those its strategy uses, so a bank without an official account configures none. The
    settings cannot see the strategy; the engine's wiring asks with the channels it plans on."""
    if "wechat" not in channels:
        return []
    problems = [(name, "the sandbox's value") for name in _WECHAT_SECRETS if _default(settings, name)]
    if _default(settings, "wechat_app_id"):
        problems.append(("wechat_app_id", "the example value"))
    if _sandbox_url(settings, "wechat_api_base_url"):
        problems.append(("wechat_api_base_url", f"{_url(settings, 'wechat_api_base_url')} is a sandbox"))
    return sorted(problems + _wechat_template_problems(settings))


_WECHAT_SECRETS = ("wechat_app_secret", "wechat_token", "wechat_encoding_aes_key")


def _wechat_template_problems(settings: SettingsFields) -> list[tuple[str, str]]:
    """The sandbox's template ids are approved nowhere but in the sandbox."""
    sandboxed = sorted(
        name for name, template_id in settings.wechat_template_ids.items() if template_id.startswith("sandbox-")
    )
    if sandboxed:
        return [("wechat_template_ids", f"sandbox template ids for {', '.join(sandboxed)}")]
    return []


def _record_problems(settings: SettingsFields) -> list[tuple[str, str]]:
    """The record must be one PostgreSQL every process reaches. The embedded server lives in one process's
    state directory: in containers each one has its own, the archiver moves the audit into a worker's
    (lost when the container is recreated) and the API reads another, empty one."""
    if settings.database_url is None:
        return [("database_url", "unset: the embedded PostgreSQL is for development (every process shares one record)")]
    return []


def _api_key_problems(settings: SettingsFields) -> list[tuple[str, str]]:
    keys = parse_api_keys(settings.api_keys)
    if not keys:
        return [("api_keys", "no API keys: nothing could call the API (make one with `dispatcher api-key`)")]
    if DEMO_API_KEY_HASH in keys:
        return [("api_keys", "holds the demo key from .env.example, whose secret is public")]
    return []


def _default(settings: SettingsFields, name: str) -> bool:
    value, default = getattr(settings, name), type(settings).model_fields[name].default
    if isinstance(value, SecretStr) and isinstance(default, SecretStr):
        return value.get_secret_value() == default.get_secret_value()
    return bool(value == default)


def _url(settings: SettingsFields, name: str) -> str:
    return str(getattr(settings, name) or "")


def _sandbox_url(settings: SettingsFields, name: str) -> bool:
    url = _url(settings, name)
    return bool(url) and _is_sandbox_host(urlsplit(url).hostname or "")


def _is_sandbox_host(host: str) -> bool:
    return host.lower() == SANDBOX_SERVICE or _is_loopback(host)


def _example_url(settings: SettingsFields, name: str) -> bool:
    host = urlsplit(_url(settings, name)).hostname or ""
    return _is_loopback(host) or _example_host(host)


def _example_host(host: str) -> bool:
    host = host.lower().rstrip(".")
    tld = host.rpartition(".")[2]
    return tld in _EXAMPLE_TLDS or any(host == domain or host.endswith("." + domain) for domain in _EXAMPLE_DOMAINS)


def _is_loopback(host: str) -> bool:
    """localhost, 127.0.0.0/8, ::1, and 0.0.0.0 (which reaches this host too)."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified
