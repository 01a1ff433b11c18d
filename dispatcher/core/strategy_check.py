"""`dispatcher strategy check`: every error of a strategy file in one pass.

Schema errors, the ladder's checks across stages (run on whatever parts of the file are readable, so an
overlap is reported beside a typo, not after it is fixed), and the templates: each template a step or a
fallback names must exist for every locale (by file, under config/templates/{locale}/), and, given a
`render` check, must render with a sample account. Rendering lives in channels/, which dispatcher/ may not
import: the CLI passes the check in.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import ValidationError

from dispatcher.core.arrangements.offers import stage_offer_problems
from dispatcher.core.models import Account, Channel
from dispatcher.core.strategy import (
    CompliancePolicy,
    LadderStage,
    Strategy,
    Window,
    _default_windows,
    _error_lines,
    ladder_problems,
    policy_gaps,
)

# (template, channel, locale) -> what is wrong when rendering it with a sample account, or None.
RenderCheck = Callable[[str, Channel, str], str | None]
# DISPATCHER_ROUTES: channel -> country (or "*") -> the providers it sends through, in order.
Routes = Mapping[str, Mapping[str, Sequence[str]]]
# The providers that send only templates approved at the provider: provider -> template -> locale -> the code.
ApprovedTemplates = Mapping[str, Mapping[str, Mapping[str, str]]]
LOCALES: tuple[str, ...] = get_args(Account.model_fields["locale"].annotation)
TEXT_PARTS = (
    "sms.txt",
    "voice.txt",
    "email.txt",
    "letter.txt",
    "wechat.txt",
)  # what a render needs (channels/render.py)


def check_strategy(
    path: Path,
    templates_dir: Path,
    render: RenderCheck | None = None,
    routes: Routes | None = None,
    approved: ApprovedTemplates | None = None,
) -> tuple[Strategy | None, list[str]]:
    """The strategy when the file is sound, and every error as `path.to.field: problem`; with `routes` and
    `approved`, also every template a route's approved-template provider has no code for."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        return None, [f"(file): {exc.strerror}"]
    except yaml.YAMLError as exc:
        return None, [f"(yaml): {exc}"]
    if not isinstance(data, dict):
        return None, ["(top level): expected a mapping with `stages`"]
    strategy: Strategy | None = None
    try:
        strategy = Strategy.model_validate(data)
        errors: list[str] = []
    except ValidationError as exc:
        errors = _error_lines(exc)
        errors += [line for line in ladder_problems(_raw_stages(data), _raw_windows(data)) if line not in errors]
        errors += [line for line in _raw_policy_gaps(data) if line not in errors]
    missing = template_problems(data, templates_dir)
    errors += stage_offer_problems(data) + missing + offer_reference_problems(data, templates_dir)
    if render is not None:
        errors += render_problems(data, render, {line.split(":")[0] for line in missing})
    errors += approved_template_problems(data, routes or {}, approved or {})
    return (strategy if not errors else None), errors


def template_refs(data: dict[str, Any]) -> Iterator[tuple[str, str, Channel]]:
    """(path, template, channel) of every template the strategy names: steps, fallbacks, the reminder
    before an arrangement's instalment."""
    rules = data.get("arrangements")
    reminder = rules.get("reminder", _DEFAULT_REMINDER) if isinstance(rules, dict) else _DEFAULT_REMINDER
    if isinstance(reminder, dict) and isinstance(reminder.get("template", "instalment_reminder"), str):
        channel = _channel(reminder.get("channel", "sms"))
        if channel is not None:
            yield "arrangements.reminder.template", reminder.get("template", "instalment_reminder"), channel
    for s_index, stage in _items(data.get("stages")):
        for t_index, step in _items(stage.get("steps") if isinstance(stage, dict) else None):
            if not isinstance(step, dict):
                continue
            channel = _channel(step.get("channel"))
            if isinstance(step.get("template"), str) and channel is not None:
                yield f"stages.{s_index}.steps.{t_index}.template", step["template"], channel
            outcomes = step.get("outcomes")
            for kind, action in (outcomes or {}).items() if isinstance(outcomes, dict) else ():
                fallback = action.get("fallback") if isinstance(action, dict) else None
                if isinstance(fallback, dict) and isinstance(fallback.get("template"), str):
                    fb_channel = _channel(fallback.get("channel"))
                    if fb_channel is not None:
                        path = f"stages.{s_index}.steps.{t_index}.outcomes.{kind}.fallback.template"
                        yield path, fallback["template"], fb_channel


def template_problems(data: dict[str, Any], templates_dir: Path) -> list[str]:
    """Templates missing for any locale, checked by file."""
    problems = []
    for path, template, _ in template_refs(data):
        missing = [
            loc for loc in LOCALES if not any((templates_dir / loc / f"{template}.{p}").is_file() for p in TEXT_PARTS)
        ]
        if missing:
            problems.append(
                f"{path}: no template {template!r} for locale {', '.join(missing)} under {templates_dir}/"
                f"{{locale}}/ (a {template}.<channel>.txt file)"
            )
    return problems


_DEFAULT_REMINDER: dict[str, Any] = {}  # ArrangementRules' defaults: sms, instalment_reminder
# `offers.instalment_3` or `offers["instalment_3"]` in a template.
_OFFER_REF = re.compile(r"""\boffers(?:\.([A-Za-z_][A-Za-z0-9_]*)|\[\s*['"]([^'"]+)['"]\s*\])""")


def offer_reference_problems(data: dict[str, Any], templates_dir: Path) -> list[str]:
    """Templates that name an offer the strategy does not declare (it would fail at the first send)."""
    declared = data.get("offers") if isinstance(data.get("offers"), dict) else {}
    problems, seen = [], set()
    for path, template, _ in template_refs(data):
        for locale in LOCALES:
            for file in sorted((templates_dir / locale).glob(f"{template}.*")):
                if (path, file) in seen or not file.is_file():
                    continue
                seen.add((path, file))
                names = {a or b for a, b in _OFFER_REF.findall(file.read_text(encoding="utf-8"))}
                problems += [
                    f"{path}: template {locale}/{file.name} names offer {name!r}, which `offers` does not declare"
                    for name in sorted(names - set(declared or {}))
                ]
    return problems


def approved_template_problems(data: dict[str, Any], routes: Routes, approved: ApprovedTemplates) -> list[str]:
    """Templates a route would send through a provider that sends only approved templates (Aliyun SMS) with no
    code for a locale: such a send would be refused at the provider. One line per template, provider and
    locales missing, naming the routes (channel.country) that choose the provider."""
    problems = []
    for path, template, channel in template_refs(data):
        by_provider: dict[str, list[str]] = {}
        for country, providers in sorted((routes.get(channel.value) or {}).items()):
            for provider in providers:
                if provider in approved:
                    by_provider.setdefault(provider, []).append(f"{channel.value}.{country}")
        for provider, via in sorted(by_provider.items()):
            codes = approved[provider].get(template) or {}
            missing = [locale for locale in LOCALES if not (codes.get(locale) or codes.get(locale.split("-")[0]))]
            if missing:
                problems.append(
                    f"{path}: template {template!r} has no {provider} TemplateCode for locale {', '.join(missing)} "
                    f"(routes {', '.join(via)} send {channel.value} via {provider}; add it to "
                    f"DISPATCHER_{provider.upper()}_TEMPLATES)"
                )
    return problems


def render_problems(data: dict[str, Any], render: RenderCheck, skip: set[str]) -> list[str]:
    """Templates that exist but fail to render with a sample account, each rendered once per locale."""
    problems, seen = [], set()
    for path, template, channel in template_refs(data):
        if path in skip:
            continue
        for locale in LOCALES:
            if (template, channel, locale) in seen:
                continue
            seen.add((template, channel, locale))
            problem = render(template, channel, locale)
            if problem is not None:
                problems.append(f"{path}: template {template!r} ({locale}) does not render: {problem}")
    return problems


def _raw_stages(data: dict[str, Any]) -> list[LadderStage]:
    stages = []
    for _, stage in _items(data.get("stages")):
        stage = stage if isinstance(stage, dict) else {}
        days = stage.get("days_past_due")
        first, last = (days[0], days[1]) if isinstance(days, list) and len(days) == 2 else (None, None)
        first = first if isinstance(first, int) else None
        last = last if isinstance(last, int) else None
        steps = []
        for _, step in _items(stage.get("steps")):
            hour = step.get("hour", 10) if isinstance(step, dict) else None
            if isinstance(hour, int) and 0 <= hour <= 23 and _channel(step.get("channel")):
                steps.append((str(step.get("name")), _channel(step.get("channel")), int(step.get("hour", 10))))
        name = stage.get("name")
        stages.append(LadderStage(name if isinstance(name, str) else None, first, last, steps))  # type: ignore[arg-type]
    return stages


def _raw_windows(data: dict[str, Any]) -> dict[Channel, Window | None]:
    compliance = data.get("compliance")
    raw = compliance.get("windows") if isinstance(compliance, dict) else None
    if not isinstance(raw, dict):
        return _default_windows()
    windows: dict[Channel, Window | None] = {}
    for key, value in raw.items():
        channel = _channel(key)
        if channel is None:
            continue
        try:
            windows[channel] = None if value is None else Window.model_validate(value)
        except ValidationError:
            continue  # its own error is reported
    return windows


def _raw_policy_gaps(data: dict[str, Any]) -> list[str]:
    """The channels the readable steps use that a readable compliance section does not describe."""
    try:
        policy = CompliancePolicy.model_validate(data.get("compliance") or {})
    except ValidationError:
        return []  # its own errors are reported
    used = [(path.removesuffix(".template") + ".channel", channel) for path, _, channel in template_refs(data)]
    return policy_gaps(used, policy)


def _channel(value: object) -> Channel | None:
    return Channel(value) if isinstance(value, str) and value in Channel else None


def _items(value: object) -> Iterator[tuple[int, Any]]:
    return enumerate(value) if isinstance(value, list) else iter(())
