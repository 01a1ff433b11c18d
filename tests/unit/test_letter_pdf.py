"""Letter PDFs as a printer sees them: rendered with pdfium, every glyph must draw ink (a blank Chinese glyph
fails), every font is embedded and subset, pages are the configured size, the date is the debtor's."""

from __future__ import annotations

import io
from datetime import date
from pathlib import Path

import pytest
from PIL import Image
from reportlab.lib.pagesizes import A4
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.pdfgen.canvas import Canvas

from channels.pdf import LetterContent, MissingGlyphs, PageSetup, dated_line, render_letter
from channels.postal import address_lines, address_problems
from config.settings import load_settings
from tests.letter_pages import SCALE, example_letter, render_pages, unembedded_fonts

ROOT = Path(__file__).resolve().parents[2]


def test_a_zh_cn_letter_rendered_to_png_shows_every_chinese_glyph(tmp_path: Path) -> None:
    pdf, must_see = example_letter("zh-CN")
    [page] = render_pages(pdf)
    chinese = [char for char in page.text if "\u4e00" <= char <= "\u9fff"]
    assert len(chinese) > 150 and page.blank == []  # every one of them drew ink inside its own box
    for text in must_see:
        assert text in page.text.replace("\r\n", "\n").replace("\n", "")
    page.image.save(tmp_path / "zh-CN.png")
    assert Image.open(tmp_path / "zh-CN.png").getextrema()[0] < 100  # the PNG has ink
    committed = Image.open(ROOT / "docs" / "letters" / "zh-CN.png")
    assert committed.size == page.image.size  # docs/letters/zh-CN.png is this page (scripts/render_letter_examples.py)


def test_the_check_fails_on_the_old_unembedded_cid_font() -> None:
    """The control: STSong-Light (not embedded) is what pdfium draws blank, and the check sees it."""
    pdfmetrics.registerFont(UnicodeCIDFont("STSong-Light"))
    buffer = io.BytesIO()
    canvas = Canvas(buffer, pagesize=A4)
    canvas.setFont("STSong-Light", 14)
    canvas.drawString(72, 700, "尊敬的王小明")
    canvas.save()
    [page] = render_pages(buffer.getvalue())
    assert "尊" in page.blank
    assert "/STSong-Light" in unembedded_fonts(buffer.getvalue())


def test_an_en_letter_is_us_letter_sized_with_lobs_address_zone_blank() -> None:
    pdf, must_see = example_letter("en")
    [page] = render_pages(pdf)
    assert page.size == pytest.approx((612, 792))
    assert page.blank == [] and all(text in page.text for text in must_see)
    top_zone = page.image.crop((0, 0, page.image.size[0], int(3 * 72 * SCALE)))
    assert top_zone.getextrema()[0] > 200  # Lob prints both addresses in the top 3 inches: left blank


def test_fonts_are_embedded_and_subset() -> None:
    for locale in ("zh-CN", "en"):
        pdf, _ = example_letter(locale)
        assert unembedded_fonts(pdf) == []
        assert b"/FontFile2" in pdf and len(pdf) < 100_000  # the glyphs used, not the 6.9 MB font
        assert b"Helvetica" not in pdf  # no standard font left unembedded


def test_page_size_and_margins_follow_the_settings() -> None:
    content = LetterContent("Dear Jane,\n\nPlease pay.", "en", date(2026, 1, 2), ["Jane Doe"], ["Bank"])
    a4 = PageSetup.from_settings(load_settings(letter_page_size="a4", letter_margin_mm=25, _env_file=None))
    [page] = render_pages(render_letter(content, a4))
    assert page.size == pytest.approx(A4)
    left_margin = page.image.crop((0, 0, int(24 * 72 / 25.4 * SCALE), page.image.size[1]))
    assert left_margin.getextrema()[0] > 200  # nothing printed inside the 25 mm margin


def test_the_letter_is_dated_in_the_debtors_locale() -> None:
    assert dated_line(date(2026, 11, 30), "zh-CN") == "2026年11月30日"
    assert dated_line(date(2026, 11, 30), "en") == "November 30, 2026"


def test_a_character_the_font_lacks_refuses_to_render_rather_than_print_blank() -> None:
    content = LetterContent("尊敬的𠀀先生", "zh-CN", date(2026, 1, 2), ["王小明"], ["Bank"])
    with pytest.raises(MissingGlyphs):
        render_letter(content, PageSetup.from_settings(load_settings(_env_file=None)))


def test_a_chinese_address_reads_from_the_province_down_to_the_name() -> None:
    to = {
        "name": "王小明", "address_line1": "南京西路1266号", "address_city": "上海市", "address_state": "上海",
        "address_zip": "200040", "address_country": "CN",
    }  # fmt: skip
    assert address_lines(to, "CN") == ["200040", "上海市", "南京西路1266号", "王小明 收"]
    province = {**to, "address_state": "广东省", "address_city": "深圳市南山区"}
    assert address_lines(province, "CN")[1] == "广东省深圳市南山区"
    assert address_lines(to, "US")[-1] == "CHINA"  # abroad: the country last


def test_a_us_address_reads_name_first_and_city_state_zip_last() -> None:
    to = {"name": "Jane Doe", "address_line1": "185 Berry St", "address_city": "San Francisco",
          "address_state": "CA", "address_zip": "94107"}  # fmt: skip
    assert address_lines(to) == ["Jane Doe", "185 Berry St", "San Francisco CA 94107"]
    assert address_problems(to, "to") == []
    assert address_problems({**to, "address_zip": "9410"}, "to") == [
        "to.address_zip: 12345 or 12345-1234 is required for a US address"
    ]
