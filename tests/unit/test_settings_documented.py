"""Every setting is documented where operators look: .env.example lists it, README's table names it."""

from __future__ import annotations

from pathlib import Path

from config.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[2]


def test_every_setting_is_in_env_example() -> None:
    example = (ROOT / ".env.example").read_text(encoding="utf-8")
    missing = [name for name in Settings.model_fields if f"{ENV_PREFIX}{name.upper()}=" not in example]
    assert missing == []


def test_every_setting_is_named_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = []
    for name in Settings.model_fields:
        variable = f"{ENV_PREFIX}{name.upper()}"
        # The table groups related variables as `DISPATCHER_SMTP_HOST` / `_PORT`.
        if variable not in readme and not any(
            f"`_{variable[len(stem) :]}`" in readme for stem in _stems(variable) if variable.startswith(stem)
        ):
            missing.append(variable)
    assert missing == []


def _stems(variable: str) -> list[str]:
    parts = variable.split("_")
    return ["_".join(parts[:i]) + "_" for i in range(1, len(parts))]
