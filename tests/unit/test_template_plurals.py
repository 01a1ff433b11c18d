"""Counted nouns follow the locale's plural rule (CLDR, through Babel): "1 day past due", never "1 days",
in every template of every locale."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel import Locale

from channels.render import TEMPLATES_DIR, Renderer, TemplateContextError
from tests.unit.test_channels_render import CONTEXT

LOCALES = sorted(path.name for path in TEMPLATES_DIR.iterdir() if path.is_dir())
# Where the count is a field's value ("Days past due: 1"), not a number before its noun.
COUNT_AS_FIELD_VALUE = {"legal_handoff"}


def counting_templates(locale: str) -> list[str]:
    """Every template of the locale whose text states the days past due."""
    files = (TEMPLATES_DIR / locale).iterdir()
    names = {path.name.split(".")[0] for path in files if "days_past_due" in path.read_text(encoding="utf-8")}
    return sorted(names - COUNT_AS_FIELD_VALUE)


# What each locale must say for 0, 1 and 2 days past due, and what it must never say.
EXPECTED: dict[str, dict[int, str]] = {
    "en": {0: r"\b0 days\b", 1: r"\b1 day\b", 2: r"\b2 days\b"},
    "zh-CN": {0: r"(?<!\d)0天", 1: r"(?<!\d)1天", 2: r"(?<!\d)2天"},  # Chinese counts with a measure word only
}
WRONG: dict[str, str] = {"en": r"\b1 days\b|\b(?!1\b)\d+ day\b", "zh-CN": r"\d 天"}


def test_every_locale_has_its_expectations_and_templates_that_count() -> None:
    assert set(EXPECTED) == set(LOCALES)
    for locale in LOCALES:
        assert len(counting_templates(locale)) >= 8, locale


@pytest.mark.parametrize(
    ("locale", "template_name"), [(locale, name) for locale in LOCALES for name in counting_templates(locale)]
)
@pytest.mark.parametrize("days", [0, 1, 2])
def test_days_past_due_take_the_locales_plural_form(locale: str, template_name: str, days: int) -> None:
    rendered = Renderer().render(template_name, locale, {**CONTEXT, "days_past_due": days})
    parts = [part for part in (rendered.text, rendered.subject, rendered.html) if part]
    stating = [part for part in parts if re.search(EXPECTED[locale][days], part)]
    assert stating, f"{locale}/{template_name} does not say {EXPECTED[locale][days]!r}: {rendered.text}"
    for part in parts:
        assert not re.search(WRONG[locale], part), part


@pytest.mark.parametrize("locale", LOCALES)
def test_every_template_has_every_form_its_locale_needs(locale: str) -> None:
    """One number per plural category the locale's rule gives whole numbers: a missing form would stop a send."""
    rule = Locale.parse(locale.replace("-", "_")).plural_form
    one_per_category = {rule(n): n for n in reversed(range(112))}
    for name in {path.name.split(".")[0] for path in (TEMPLATES_DIR / locale).iterdir()}:
        for days in one_per_category.values():
            Renderer().render(name, locale, {**CONTEXT, "days_past_due": days})


def test_a_locale_with_more_forms_gets_each_and_a_missing_one_is_named(tmp_path: Path) -> None:
    """Russian has one (1, 21), few (2-4, 22) and many (0, 5-20): the rule is the locale's, not English's."""
    (tmp_path / "ru").mkdir()
    days = '{{ days_past_due|plural(one="{n} день", few="{n} дня", many="{n} дней") }}'
    (tmp_path / "ru" / "late.sms.txt").write_text(f"Просрочка: {days}.", encoding="utf-8")
    (tmp_path / "ru" / "short.sms.txt").write_text('{{ days_past_due|plural(one="{n} день") }}', encoding="utf-8")
    renderer = Renderer(tmp_path)
    said = {n: renderer.render("late", "ru", {"days_past_due": n}).text.strip() for n in (0, 1, 2, 5, 21, 22, 1000)}
    assert said == {
        0: "Просрочка: 0 дней.", 1: "Просрочка: 1 день.", 2: "Просрочка: 2 дня.", 5: "Просрочка: 5 дней.",
        21: "Просрочка: 21 день.", 22: "Просрочка: 22 дня.", 1000: "Просрочка: 1\xa0000 дней.",
    }  # fmt: skip
    with pytest.raises(TemplateContextError) as caught:
        renderer.render("short", "ru", {"days_past_due": 3})
    assert "'few'" in str(caught.value) and "ru/short.sms.txt" in str(caught.value)
    with pytest.raises(TemplateContextError, match="whole number"):
        renderer.render("late", "ru", {"days_past_due": "3"})
