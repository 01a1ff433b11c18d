"""`dispatcher config show`: the settings a process started here would run with, and where each came from.

Secrets never appear: SecretStr values are masked, API keys shown by the first characters of their hash
and their scopes, and a password inside a URL (redis://:pw@host) is masked too.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

import typer
from dotenv import dotenv_values
from pydantic import SecretStr
from rich.console import Console
from rich.table import Table

from config.api_keys import parse_api_keys
from config.settings import ENV_PREFIX, Settings, load_settings

MASK = "********"

app = typer.Typer(help="Show the effective configuration.", no_args_is_help=True)
console = Console(width=None if sys.stdout.isatty() else 200)


@app.command("show")
def show(as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False) -> None:
    """Every DISPATCHER_* setting's effective value (secrets masked) and its source: env, .env or default."""
    rows = effective_settings(load_settings())
    if as_json:
        print(json.dumps({row["variable"]: {"value": row["value"], "source": row["source"]} for row in rows}, indent=2))
        return
    table = Table("variable", "value", "source")
    for row in rows:
        table.add_row(row["variable"], _text(row["value"]), row["source"])
    console.print(table)


def effective_settings(settings: Settings) -> list[dict[str, Any]]:
    """One row per field: variable name, masked JSON-able value, and `env`, `.env` or `default`."""
    dotenv = _dotenv_variables()
    environ = {name.upper() for name in os.environ}
    rows = []
    for field in type(settings).model_fields:
        variable = ENV_PREFIX + field.upper()
        source = "env" if variable in environ else ".env" if variable in dotenv else "default"
        if field not in settings.model_fields_set and source != "default":
            source = "default"  # named but empty, or shadowed: the field kept its default
        rows.append({"variable": variable, "value": masked(field, getattr(settings, field)), "source": source})
    return rows


def masked(field: str, value: Any) -> Any:
    """The value as it may be shown: no secret, no password in a URL, API keys by hash prefix and scopes."""
    if isinstance(value, SecretStr):
        return MASK if value.get_secret_value() else ""
    if field == "agencies":  # each agency as its fields, masked the same way (its key, a password in its URL)
        return [{name: masked(name, item) for name, item in agency} for agency in value]
    if field == "api_keys":
        keys = parse_api_keys(value)
        return [f"{digest[:8]}…:{'+'.join(sorted(scopes))}" for digest, scopes in keys.items()]
    if isinstance(value, str) and "://" in value:
        return _mask_url_password(value)
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def _mask_url_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{host}"))


def _dotenv_variables() -> set[str]:
    env_file = Settings.model_config.get("env_file")
    if not isinstance(env_file, str | Path) or not Path(env_file).is_file():
        return set()
    return {name.upper() for name, value in dotenv_values(env_file).items() if value is not None}


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)
