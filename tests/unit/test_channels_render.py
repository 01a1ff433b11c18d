"""Templates render completely in both locales, or refuse with the missing variable and template named."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from channels.render import TEMPLATES_DIR, Renderer, TemplateContextError

CONTEXT = {
    "name": "张三",
    "amount": Decimal("12345.67"),
    "currency": "CNY",
    "minimum_payment": Decimal("1234.50"),
    "due_date": date(2024, 5, 1),
    "days_past_due": 12,
    "account_ref": "1234",
    "pay_url": "https://bank.test/pay/abc",
    "unsubscribe_url": "https://bank.test/u/abc",
    "bank_name": "示例银行",
    "phone": "400-000-0000",
    # What the send path computes from the strategy's offers (dispatcher.core.arrangements.offers) and the
    # plan being kept (workers.messages.next_instalment).
    "offers": {
        "minimum_payment": {"kind": "minimum_payment", "amount": Decimal("1234.57"), "due": date(2024, 5, 15)},
        **{
            f"instalment_{months}": {
                "kind": "instalment",
                "months": months,
                "instalment": Decimal("12345.67") / months,
                "total": Decimal("12345.67"),
                "first_due": date(2024, 5, 8),
            }
            for months in (3, 6, 12)
        },
    },  # fmt: skip
    "instalment": {
        "number": 2,
        "of": 3,
        "due": date(2024, 6, 8),
        "amount": Decimal("4115.22"),
        "remaining": Decimal("8230.45"),
    },  # fmt: skip
}
TEMPLATE_NAMES = sorted({path.name.split(".")[0] for path in (TEMPLATES_DIR / "en").iterdir()})


def test_both_locales_have_the_same_templates() -> None:
    def names(locale: str) -> set[str]:
        return {path.name for path in (TEMPLATES_DIR / locale).iterdir()}

    assert names("en") == names("zh-CN") and len(TEMPLATE_NAMES) >= 15


@pytest.mark.parametrize("locale", ["en", "zh-CN"])
@pytest.mark.parametrize("template_name", TEMPLATE_NAMES)
def test_every_template_renders_fully(template_name: str, locale: str) -> None:
    rendered = Renderer().render(template_name, locale, CONTEXT)
    assert rendered.text.strip() and "{{" not in rendered.text
    if template_name.endswith("_email"):
        assert rendered.subject and rendered.html and CONTEXT["unsubscribe_url"] in rendered.text
    if template_name.endswith("_sms"):
        assert "STOP" in rendered.text or "退订" in rendered.text


def test_amounts_and_dates_follow_the_locale() -> None:
    zh = Renderer().render("reminder_sms", "zh-CN", CONTEXT).text
    en = Renderer().render("reminder_sms", "en-US", {**CONTEXT, "currency": "USD"}).text
    assert "¥12,345.67" in zh and "2024年5月1日" in zh
    assert "$12,345.67" in en and "May 1, 2024" in en


def test_a_missing_variable_names_itself_and_the_template() -> None:
    context = {key: value for key, value in CONTEXT.items() if key != "minimum_payment"}
    with pytest.raises(TemplateContextError) as caught:
        Renderer().render("reminder_sms", "zh-CN", context)
    assert "minimum_payment" in str(caught.value) and "zh-CN/reminder_sms.sms.txt" in str(caught.value)


def test_html_escapes_what_the_text_keeps(tmp_path: Path) -> None:
    rendered = Renderer().render("reminder_email", "en", {**CONTEXT, "name": "<b>Li</b>"})
    assert "&lt;b&gt;Li&lt;/b&gt;" in (rendered.html or "") and "<b>Li</b>" in rendered.text


def test_an_unknown_locale_is_refused() -> None:
    with pytest.raises(TemplateContextError, match="fr"):
        Renderer().render("reminder_sms", "fr-FR", CONTEXT)


def test_a_call_without_its_own_voicemail_variant_falls_back_to_the_generic_limited_one() -> None:
    from channels.voice import voicemail_template

    renderer = Renderer()
    assert voicemail_template("reminder_call", "zh-CN", renderer) == "reminder_voicemail"
    assert voicemail_template("early_call", "en-US", renderer) == "voicemail"
    for locale in ("en", "zh-CN"):
        text = renderer.render("voicemail", locale, {"name": "N", "bank_name": "B", "phone": "1"}).text
        assert "amount" not in text and "¥" not in text and "$" not in text


def test_offers_and_instalments_render_in_the_debtors_locale_and_currency() -> None:
    eur = {**CONTEXT, "currency": "EUR"}
    eur["offers"] = {**CONTEXT["offers"], "instalment_6": {**CONTEXT["offers"]["instalment_6"],  # type: ignore[dict-item]
                                                           "instalment": Decimal("2057.61")}}  # fmt: skip
    en = Renderer().render("continuous_sms", "en", eur).text
    assert "€1,234.57" in en and "€2,057.61" in en
    zh = Renderer().render("instalment_reminder", "zh-CN", CONTEXT).text
    assert "¥4,115.22" in zh and "2024年6月8日" in zh and "2/3" in zh
