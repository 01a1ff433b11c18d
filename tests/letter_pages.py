"""Letter PDFs as a printer sees them: pages rendered with pdfium, each glyph's box checked for ink, and
the fonts checked for embedding. Used by the letter tests and scripts/render_letter_examples.py."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import pypdfium2 as pdfium
from PIL import Image
from pypdf import PdfReader

SCALE = 2.0  # 144 dpi: a 10.5 pt CJK glyph is ~30 px across
INK = 160  # a pixel darker than this (0-255 grey) is ink


@dataclass(frozen=True)
class RenderedPage:
    image: Image.Image
    text: str
    blank: list[str]  # characters whose box on the page has no ink
    size: tuple[float, float]  # points


def render_pages(pdf: bytes) -> list[RenderedPage]:
    """Every page rendered by pdfium, with the characters that drew no ink inside their own box."""
    document = pdfium.PdfDocument(pdf)
    pages = []
    for page in document:
        width, height = page.get_size()
        image = page.render(scale=SCALE).to_pil().convert("L")
        textpage = page.get_textpage()
        blank = []
        for index in range(textpage.count_chars()):
            char = textpage.get_text_range(index, 1)
            if not char.strip():
                continue
            left, bottom, right, top = textpage.get_charbox(index)
            box = (
                int(left * SCALE),
                int((height - top) * SCALE),
                int(right * SCALE) + 1,
                int((height - bottom) * SCALE),
            )
            box = (box[0], box[1], box[2], box[3] + 1)
            if box[2] <= box[0] or box[3] <= box[1] or image.crop(box).getextrema()[0] > INK:
                blank.append(char)
        pages.append(RenderedPage(image, textpage.get_text_range(), blank, (width, height)))
    return pages


def unembedded_fonts(pdf: bytes) -> list[str]:
    """Names of fonts the PDF uses without embedding them (a printer would substitute or refuse)."""
    missing = []
    for page in PdfReader(io.BytesIO(pdf)).pages:
        fonts = (page.get("/Resources") or {}).get("/Font") or {}
        for font_ref in fonts.values():
            font = font_ref.get_object()
            descriptor = font.get("/FontDescriptor")
            if descriptor is None and "/DescendantFonts" in font:
                descriptor = font["/DescendantFonts"][0].get_object().get("/FontDescriptor")
            descriptor = descriptor.get_object() if descriptor is not None else {}
            if not any(key in descriptor for key in ("/FontFile", "/FontFile2", "/FontFile3")):
                missing.append(str(font.get("/BaseFont")))
    return missing


def save_png(page: RenderedPage, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    page.image.save(path, optimize=True)


def example_letter(locale: str) -> tuple[bytes, list[str]]:
    """The demand letter of docs/letters/{locale}.png: the real template, a sample debtor, the settings a
    deployment would use (zh-CN: an A4 vendor with a DL window; en: Lob, US Letter). Returns the PDF and
    the texts a reader must see on the page."""
    from datetime import date
    from decimal import Decimal

    from channels.base import OutboundMessage
    from channels.letter import letter_content
    from channels.pdf import PageSetup, render_letter
    from channels.render import Renderer
    from config.settings import load_settings

    if locale == "zh-CN":
        settings = load_settings(
            letter_page_size="a4", letter_address_window_mm="20,45,85,45", letter_from_name="示例银行信用卡中心",
            letter_from_address_line1="世纪大道100号", letter_from_address_city="上海市",
            letter_from_address_state="上海",
            letter_from_address_zip="200120", letter_from_address_country="CN", bank_name="示例银行",
            _env_file=None,
        )  # fmt: skip
        to = {
            "name": "王小明", "address_line1": "南京西路1266号恒隆广场1座2301室", "address_city": "上海市",
            "address_state": "上海", "address_zip": "200040", "address_country": "CN",
        }  # fmt: skip
        name, currency = "王小明", "CNY"
    else:
        settings = load_settings(bank_name="Example Bank", _env_file=None)
        to = {
            "name": "Jane Doe", "address_line1": "185 Berry St", "address_line2": "Ste 6100",
            "address_city": "San Francisco", "address_state": "CA", "address_zip": "94107", "address_country": "US",
        }  # fmt: skip
        name, currency = "Jane Doe", "USD"
    context = {
        "name": name, "amount": Decimal("12345.67"), "currency": currency, "minimum_payment": Decimal("500.00"),
        "due_date": date(2026, 9, 1), "days_past_due": 90, "account_ref": "1234",
        "pay_url": "https://pay.example-bank.test/a/A1", "bank_name": settings.bank_name,
        "phone": settings.callback_phone, "unsubscribe_url": "", "token": "",
    }  # fmt: skip
    text = Renderer().render("demand_letter", locale, context).text
    message = OutboundMessage("A1/letter/demand/0", "A1", to, locale, text, extra={"letter_date": "2026-11-30"})
    pdf = render_letter(letter_content(message, settings), PageSetup.from_settings(settings))
    must_see = ["催款函", "尊敬的王小明", "2026年11月30日", "王小明 收"] if locale == "zh-CN" else ["November 30, 2026"]
    return pdf, must_see
