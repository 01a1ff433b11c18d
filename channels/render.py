"""Messages rendered from config/templates/{locale}/{template_name}.{ext} with Jinja2 and Babel.

A template that uses a variable the context lacks raises TemplateContextError naming both, so a
half-filled message is never sent. Amounts are Decimal formatted in the account's currency and the
debtor's locale; dates are formatted for the locale; a counted noun takes the form the locale's CLDR plural
rule picks for the number (`{{ days_past_due|plural(one="{n} day", other="{n} days") }}`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
from babel import Locale
from babel.dates import format_date
from babel.numbers import format_currency, format_decimal

from config.errors import ConfigurationError
from config.settings import TEMPLATES_DIR

TEXT_EXTENSIONS = ("sms.txt", "voice.txt", "email.txt", "letter.txt", "wechat.txt")
ALL_EXTENSIONS = (*TEXT_EXTENSIONS, "email.subject.txt", "email.html", "letter.html")


class TemplateContextError(ConfigurationError, ValueError):
    """A template needs a variable the context does not give, or the template does not exist."""


@dataclass(frozen=True)
class RenderedMessage:
    text: str
    subject: str | None = None
    html: str | None = None


class Renderer:
    """Renders one template name into the parts its files provide (text, subject, html)."""

    def __init__(self, templates_dir: Path = TEMPLATES_DIR) -> None:
        self._dir = templates_dir
        self._env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(templates_dir)),
            undefined=jinja2.StrictUndefined,
            autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default_for_string=False),
            keep_trailing_newline=False,
            auto_reload=False,  # templates are read once per process: a changed template needs a restart
        )
        self._folders: dict[str, str] = {}
        self._parts: dict[tuple[str, str], list[str]] = {}
        self._env.filters["money"] = _money
        self._env.filters["localdate"] = _localdate
        self._env.filters["plural"] = _plural

    def render(self, template_name: str, locale: str, context: Mapping[str, Any]) -> RenderedMessage:
        """Render every file of `template_name` for the locale; the text part is required."""
        folder = self.locale_folder(locale)
        extensions = self._extensions(folder, template_name)
        parts = {ext: self.render_file(f"{folder}/{template_name}.{ext}", folder, context) for ext in extensions}
        text = next((parts[ext] for ext in TEXT_EXTENSIONS if ext in parts), None)
        if text is None:
            raise TemplateContextError(f"no text template for {template_name!r} in {folder}/")
        subject = parts.get("email.subject.txt")
        html = parts.get("email.html") or parts.get("letter.html")
        return RenderedMessage(text=text, subject=subject.strip() if subject else None, html=html)

    def render_file(self, path: str, locale: str, context: Mapping[str, Any]) -> str:
        try:
            template = self._env.get_template(path)
            return template.render({**context, "locale": locale}).strip() + "\n"
        except jinja2.TemplateNotFound:
            raise TemplateContextError(f"template {path} does not exist") from None
        except (jinja2.UndefinedError, TemplateContextError) as exc:
            raise TemplateContextError(f"template {path}: {exc}") from None

    def has(self, template_name: str, locale: str) -> bool:
        """Whether the locale (or its language) has any file of this template."""
        return bool(self._extensions(self.locale_folder(locale), template_name))

    def locale_folder(self, locale: str) -> str:
        """The template folder for a locale: exact (zh-CN), else its language (en-US -> en)."""
        if locale not in self._folders:
            self._folders[locale] = self._find_folder(locale)
        return self._folders[locale]

    def _find_folder(self, locale: str) -> str:
        for candidate in (locale, locale.split("-")[0]):
            if (self._dir / candidate).is_dir():
                return candidate
        raise TemplateContextError(f"no templates for locale {locale!r} under {self._dir}")

    def _extensions(self, folder: str, template_name: str) -> list[str]:
        key = (folder, template_name)
        if key not in self._parts:
            self._parts[key] = [
                ext for ext in ALL_EXTENSIONS if (self._dir / folder / f"{template_name}.{ext}").is_file()
            ]
        return self._parts[key]


@lru_cache(maxsize=64)
def babel_locale(locale: str) -> Locale:
    """Cached: parsing a locale is measurable on the send path, and there are only a few."""
    return Locale.parse(locale.replace("-", "_"))


@jinja2.pass_context
def _money(context: jinja2.runtime.Context, amount: Decimal, currency: str | None = None) -> str:
    """Decimal amount in the account's currency (context `currency`) for the template's locale."""
    if isinstance(amount, jinja2.Undefined):
        amount._fail_with_undefined_error()  # raises UndefinedError naming the variable
    if not isinstance(amount, Decimal):
        raise TemplateContextError(f"money needs a Decimal, got {type(amount).__name__}")
    code = currency or context.get("currency")
    if not code:
        raise jinja2.UndefinedError("'currency' is undefined (needed to format an amount)")
    return _formatted_money(str(amount), code, context["locale"])


@lru_cache(maxsize=4096)
def _formatted_money(amount: str, currency: str, locale: str) -> str:
    """Cached: Babel's pattern takes a tenth of a millisecond per amount, and a book repeats its amounts
    (minimum payments, common balances) across the accounts a worker sends to."""
    return format_currency(Decimal(amount), currency, locale=babel_locale(locale))


@jinja2.pass_context
def _localdate(context: jinja2.runtime.Context, value: date, format: str = "long") -> str:
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()
    return format_date(value, format=format, locale=babel_locale(context["locale"]))


@jinja2.pass_context
def _plural(context: jinja2.runtime.Context, count: int, **forms: str) -> str:
    """The form of a counted noun that the locale's plural rule (CLDR, through Babel) picks for `count`:
    `one`, `two`, `few`, `many`, `zero` or `other`, with `{n}` replaced by the number formatted for the
    locale. English needs `one` and `other`, Chinese only `other`, Russian `one`, `few` and `many`; a form
    the number needs and the template lacks is a TemplateContextError naming it, never a wrong word."""
    if isinstance(count, jinja2.Undefined):
        count._fail_with_undefined_error()
    if isinstance(count, bool) or not isinstance(count, int):
        raise TemplateContextError(f"plural needs a whole number, got {type(count).__name__}")
    locale = babel_locale(context["locale"])
    category = locale.plural_form(count)
    form = forms.get(category)
    if form is None:
        raise TemplateContextError(f"plural: {count} needs the {category!r} form in {context['locale']}, not given")
    return form.replace("{n}", format_decimal(count, locale=locale))
