"""Honest local stand-ins for every provider, on loopback ports, for tests, demos and `dispatcher sandbox`.

    sandboxes = start_sandboxes(state_dir, callback_base_url="http://127.0.0.1:8700")
    settings = load_settings(**sandboxes.settings_overrides())
    ...
    sandboxes.stop()

`start_sandboxes(state_dir, *, host="127.0.0.1", twilio_port=0, smtp_port=0, print_port=0,
agency_port=0, wechat_port=0, aliyun_port=0, callback_base_url=None, credentials=None, clock_factor=1.0) -> Sandboxes`
starts six servers (port 0 picks a free port) and returns their handles, each with `.url` and `.stop()`:

- `twilio`  Messages.json / Calls.json; status callbacks go to each request's StatusCallback URL.
- `smtp`    SMTP; accepted mail is stored as .eml under {state_dir}/smtp/mail.
- `print_vendor`  Lob-shaped /v1/letters; tracking webhooks go to {callback_base_url}/v1/webhooks/print-vendor.
- `agency`  POST /cases; case files stored as JSON under {state_dir}/agency/cases.
- `wechat`  cgi-bin/stable_token and message/template/send; TEMPLATESENDJOBFINISH pushed in safe mode to
            {callback_base_url}/v1/webhooks/wechat.
- `aliyun`  Dysmsapi's SendSms and QuerySendDetails, signed; SmsReport and SmsUp pushed to
            {callback_base_url}/v1/webhooks/aliyun/{token}/..., retried after 1, 5, 10 minutes / clock_factor.

The HTTP sandboxes take faults through `handle.faults.set(fail_429=2, fail_503=1, retry_after=1,
latency=0.2, hang=30)` or `POST {url}/_sandbox/faults` with the same JSON; `GET {url}/_sandbox/stats`.
Each keeps an NDJSON log of everything it saw under its folder of the state dir. Behaviour by address
is documented in each module (twilio_api, smtp, print_vendor, agency, wechat).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from channels.sandbox import agency, aliyun, print_vendor, twilio_api, wechat
from channels.sandbox.server import EventLog, FaultInjector, ServerHandle
from channels.sandbox.smtp import SmtpHandle
from config.settings_fields import ALIYUN_SANDBOX_TEMPLATES


class SandboxState(Protocol):
    """What every HTTP sandbox's state offers its handle."""

    faults: FaultInjector
    log: EventLog


S = TypeVar("S", bound=SandboxState)


@dataclass(frozen=True)
class SandboxCredentials:
    """What the sandboxes accept; the defaults match config.settings' defaults."""

    twilio_account_sid: str = "AC00000000000000000000000000000000"
    twilio_auth_token: str = "sandbox-auth-token"
    print_vendor_api_key: str = "test_print_key"
    print_vendor_webhook_secret: str = "print-webhook-secret"
    agency_api_key: str = "agency-key"
    wechat_app_id: str = "wx00000000sandbox0"
    wechat_app_secret: str = "sandbox-wechat-secret"
    wechat_token: str = "sandbox-wechat-token"
    wechat_encoding_aes_key: str = "c2FuZGJveC13ZWNoYXQtYWVzLWtleS0zMi1ieXRlcyE"
    # The approved templates: the template ids settings map our templates to, each with the shipped fields.
    wechat_template_ids: tuple[str, ...] = ("sandbox-tmpl-early", "sandbox-tmpl-continuous")
    aliyun_access_key_id: str = "LTAI5tSandbox00000000000"
    aliyun_access_key_secret: str = "sandbox-aliyun-secret"
    aliyun_sign_name: str = "示例银行"
    # The approved TemplateCodes: every code the settings map a template and locale to.
    aliyun_template_codes: tuple[str, ...] = tuple(
        code for codes in ALIYUN_SANDBOX_TEMPLATES.values() for code in codes.values()
    )
    aliyun_webhook_token: str = "sandbox-aliyun-report-token"

    @classmethod
    def from_settings(cls, settings: Any) -> SandboxCredentials:
        """Take the credentials the channels will present (a config.settings.Settings)."""
        return cls(
            twilio_account_sid=settings.twilio_account_sid,
            twilio_auth_token=settings.twilio_auth_token.get_secret_value(),
            print_vendor_api_key=settings.print_vendor_api_key.get_secret_value(),
            print_vendor_webhook_secret=settings.print_vendor_webhook_secret.get_secret_value(),
            agency_api_key=settings.agency_api_key.get_secret_value(),
            wechat_app_id=settings.wechat_app_id,
            wechat_app_secret=settings.wechat_app_secret.get_secret_value(),
            wechat_token=settings.wechat_token.get_secret_value(),
            wechat_encoding_aes_key=settings.wechat_encoding_aes_key.get_secret_value(),
            wechat_template_ids=tuple(settings.wechat_template_ids.values()),
            aliyun_access_key_id=settings.aliyun_access_key_id,
            aliyun_access_key_secret=settings.aliyun_access_key_secret.get_secret_value(),
            aliyun_sign_name=settings.aliyun_sign_name,
            aliyun_template_codes=tuple(
                code for locales in settings.aliyun_templates.values() for code in locales.values()
            ),
            aliyun_webhook_token=settings.aliyun_webhook_token.get_secret_value(),
        )


class HttpSandbox(Generic[S]):
    """A running HTTP sandbox: `url`, `stop()`, its `state`, `faults` and `request_count`."""

    def __init__(self, state: S, server: ServerHandle) -> None:
        self.state = state
        self.server = server
        self.url = server.url

    @property
    def faults(self) -> FaultInjector:
        return self.state.faults

    @property
    def request_count(self) -> int:
        return self.state.faults.request_count

    @property
    def log(self) -> EventLog:
        return self.state.log

    def stop(self) -> None:
        self.server.stop()


@dataclass
class Sandboxes:
    twilio: HttpSandbox[twilio_api.TwilioSandbox]
    smtp: SmtpHandle
    print_vendor: HttpSandbox[print_vendor.PrintVendorSandbox]
    agency: HttpSandbox[agency.AgencySandbox]
    wechat: HttpSandbox[wechat.WechatSandbox]
    aliyun: HttpSandbox[aliyun.AliyunSandbox]

    def settings_overrides(self) -> dict[str, Any]:
        """Settings fields that point the channels at these sandboxes (for load_settings(**...))."""
        return {
            "twilio_api_base_url": self.twilio.url,
            "smtp_host": self.smtp.host,
            "smtp_port": self.smtp.port,
            "print_vendor_url": f"{self.print_vendor.url}/v1",  # the API root with its version, as Lob's
            "agency_url": self.agency.url + agency.CASES_PATH,
            "wechat_api_base_url": self.wechat.url,
            "aliyun_endpoint": self.aliyun.url,
        }

    def stop(self) -> None:
        for handle in (self.twilio, self.smtp, self.print_vendor, self.agency, self.wechat, self.aliyun):
            handle.stop()


def start_sandboxes(
    state_dir: Path,
    *,
    host: str = "127.0.0.1",
    twilio_port: int = 0,
    smtp_port: int = 0,
    print_port: int = 0,
    agency_port: int = 0,
    wechat_port: int = 0,
    aliyun_port: int = 0,
    callback_base_url: str | None = None,
    credentials: SandboxCredentials | None = None,
    clock_factor: float = 1.0,
) -> Sandboxes:
    """Start the six provider sandboxes on loopback; see the module docstring."""
    creds = credentials or SandboxCredentials()
    state_dir = Path(state_dir)
    twilio_state = twilio_api.TwilioSandbox(
        EventLog(state_dir / "twilio" / "twilio.ndjson"), creds.twilio_account_sid, creds.twilio_auth_token
    )
    print_state = print_vendor.PrintVendorSandbox(
        state_dir / "print_vendor", creds.print_vendor_api_key, creds.print_vendor_webhook_secret, callback_base_url
    )
    agency_state = agency.AgencySandbox(state_dir / "agency", creds.agency_api_key)
    wechat_state = wechat.WechatSandbox(
        state_dir / "wechat", creds.wechat_app_id, creds.wechat_app_secret, creds.wechat_token,
        creds.wechat_encoding_aes_key, dict.fromkeys(creds.wechat_template_ids, wechat.DEFAULT_FIELDS),
        callback_base_url,
    )  # fmt: skip
    aliyun_state = aliyun.AliyunSandbox(
        state_dir / "aliyun", creds.aliyun_access_key_id, creds.aliyun_access_key_secret, (creds.aliyun_sign_name,),
        dict.fromkeys(creds.aliyun_template_codes, aliyun.DEFAULT_VARIABLES), callback_base_url,
        creds.aliyun_webhook_token, clock_factor=clock_factor,
    )  # fmt: skip
    started: list[Any] = []
    try:
        started.append(HttpSandbox(twilio_state, ServerHandle(twilio_api.create_app(twilio_state), host, twilio_port)))
        started.append(SmtpHandle(state_dir / "smtp", host, smtp_port))
        started.append(HttpSandbox(print_state, ServerHandle(print_vendor.create_app(print_state), host, print_port)))
        started.append(HttpSandbox(agency_state, ServerHandle(agency.create_app(agency_state), host, agency_port)))
        started.append(HttpSandbox(wechat_state, ServerHandle(wechat.create_app(wechat_state), host, wechat_port)))
        started.append(HttpSandbox(aliyun_state, ServerHandle(aliyun.create_app(aliyun_state), host, aliyun_port)))
    except BaseException:
        for handle in started:  # a port in use must not leave the others running
            handle.stop()
        raise
    return Sandboxes(*started)


__all__ = ["HttpSandbox", "SandboxCredentials", "Sandboxes", "SmtpHandle", "start_sandboxes"]
