"""Every setting the dispatcher reads, from DISPATCHER_* environment variables and an optional .env.

Settings are read once, at start, and passed down; nothing deeper in the code reads the environment.
A bad value raises SettingsError naming the variable and what is expected; the entry points (the
`dispatcher` command, a Celery worker's start-up) end the process with that message and exit status 1.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from pydantic import ValidationError, model_validator
from pydantic_core import PydanticCustomError

from config.errors import ConfigurationError
from config.production import channel_problems, production_problems
from config.settings_fields import CONFIG_DIR, DEFAULT_STRATEGY, ENV_PREFIX, TEMPLATES_DIR, SettingsFields

__all__ = [
    "CONFIG_DIR", "DEFAULT_STRATEGY", "ENV_PREFIX", "TEMPLATES_DIR", "UNSUBSCRIBE_PATH", "Settings", "SettingsError",
    "default_unsubscribe_url", "load_settings",
]  # fmt: skip

# The API's one-click unsubscribe route (dispatcher/api/unsubscribe.py), as a template of the signed token.
UNSUBSCRIBE_PATH = "/v1/unsubscribe/{token}"


class Settings(SettingsFields):
    """The dispatcher's configuration (the fields: config/settings_fields.py), with what spans fields."""

    @model_validator(mode="after")
    def _derive_unsubscribe_url(self) -> Settings:
        # Runs before the production guard (validators run in the order they are defined), which checks it.
        if not self.unsubscribe_url:
            self.unsubscribe_url = default_unsubscribe_url(self)
            self.__pydantic_fields_set__.discard("unsubscribe_url")  # derived, not given: `config show` says default
        return self

    @model_validator(mode="after")
    def _production_guard(self) -> Settings:
        if self.env == "production":
            problems = production_problems(self)
            if problems:
                raise PydanticCustomError(
                    "production_guard", f"{PRODUCTION_REFUSAL}:\n{{problems}}", {"problems": listed(problems)}
                )
        return self

    def refuse_channel_settings(self, channels: Collection[str]) -> None:
        """In production, refuse the sandbox or example settings of an optional channel the strategy uses
        (config.production.channel_problems): the engine's wiring calls this once it has the strategy."""
        problems = channel_problems(self, channels) if self.env == "production" else []
        if problems:
            raise SettingsError(f"configuration error:\n  {PRODUCTION_REFUSAL}:\n{listed(problems)}")

    def refuse_unknown_providers(self, known: Mapping[str, Collection[str]]) -> None:
        """DISPATCHER_ROUTES and DISPATCHER_PROVIDER_WEIGHTS may name only the channels and providers declared
        (`known`: channel -> its providers, as channels.PROVIDERS holds them); every unknown one is named, with
        what is known. Nothing is checked against an empty `known` (a process that never imported the channels
        sends nothing; the workers check against channels.PROVIDERS themselves)."""
        if not known:
            return
        named = {
            "routes": {channel: {p for ps in table.values() for p in ps} for channel, table in self.routes.items()},
            "provider_weights": {channel: set(weights) for channel, weights in self.provider_weights.items()},
        }
        problems: list[tuple[str, str]] = []
        for field, by_channel in named.items():
            for channel, providers in by_channel.items():
                if channel not in known:
                    problems.append((field, f"{channel!r} is not a channel; known: {', '.join(sorted(known))}"))
                    continue
                for provider in sorted(providers - set(known[channel])):
                    fix = f"providers of {channel}: {', '.join(sorted(known[channel]))}"
                    problems.append((field, f"{channel} has no provider {provider!r} ({fix})"))
        if problems:
            raise SettingsError("configuration error:\n" + listed(problems))


# One error naming every variable: an operator fixes them all in one pass, not one per restart.
PRODUCTION_REFUSAL = "DISPATCHER_ENV=production, but these are still sandbox or example values"


def listed(problems: list[tuple[str, str]]) -> str:
    return "\n".join(f"    {ENV_PREFIX}{field.upper()}: {why}" for field, why in problems)


def default_unsubscribe_url(settings: Settings) -> str:
    """Where debtors' one-click unsubscribe reaches our API: under DISPATCHER_PUBLIC_BASE_URL when it is
    set (the address the world reaches the API at), else the API's own listening address and port."""
    if "public_base_url" in settings.model_fields_set:
        base = settings.public_base_url.rstrip("/")
    else:
        host = settings.api_host
        if host in ("", "0.0.0.0", "::"):  # listening on every address: this host reaches it on loopback
            host = "127.0.0.1"
        base = f"http://{f'[{host}]' if ':' in host else host}:{settings.api_port}"
    # The result is a str.format template ({token}): braces in the base are literal.
    return base.replace("{", "{{").replace("}", "}}") + UNSUBSCRIBE_PATH


class SettingsError(ConfigurationError):
    """Configuration could not be read; the message names every bad variable. Entry points exit 1 with it
    (config.errors.exit_on_configuration_error); library code only raises it."""


def load_settings(**overrides: object) -> Settings:
    """Read the settings once, turning a validation failure into a message naming each variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = ["configuration error:"]
        for error in exc.errors():
            if not error["loc"]:  # a whole-model check (the production guard) names its variables itself
                lines.append(f"  {error['msg']}")
                continue
            field = ".".join(str(part) for part in error["loc"])
            variable = ENV_PREFIX + field.upper()
            lines.append(f"  {variable}: {error['msg']} (got {error.get('input')!r})")
        raise SettingsError("\n".join(lines)) from None
