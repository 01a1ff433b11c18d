"""Letter PDFs a printer accepts: one embedded, subset font; the page size and margins configured; the
letter dated in the debtor's locale; the address block where the envelope's window shows it.

The font is Noto Sans SC cut to GBK (config/fonts/README.md says why and under which licence); reportlab
embeds only the glyphs each letter uses. A character the font lacks raises MissingGlyphs before anything
is drawn: a blank where a debtor's name should be never goes to print.

Two ways to place the address (settings `letter_address_window_mm`, `letter_address_placement`):

- the vendor prints it (Lob's `top_first_page`): the top 3 inches of the first page stay blank, as Lob's
  letter template asks; `bottom_first_page` keeps the bottom 3 inches blank; `insert_blank_page` needs no
  room (the vendor adds a page);
- a window is given (left, top, width, height in mm, e.g. a DL/C5 window at 20,45,85,45): we print the
  return address line and the recipient's block there, in the country's order (channels.postal).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from typing import Any
from xml.sax.saxutils import escape

from babel.dates import format_date
from reportlab.lib.pagesizes import A4, LETTER
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import inch, mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import BaseDocTemplate, Frame, PageTemplate, Paragraph, Spacer

from config.errors import InputRejected
from config.settings import CONFIG_DIR, Settings

FONT_NAME = "NotoSansSC"
FONT_PATH = CONFIG_DIR / "fonts" / "NotoSansSC-GBK.ttf"
PAGE_SIZES = {"letter": LETTER, "a4": A4}
VENDOR_ZONE = 3 * inch  # Lob's letter template: the address is printed in the top (or bottom) 3 inches
BODY_SIZE = 10.5
LEADING = 16


class MissingGlyphs(InputRejected, ValueError):
    """The letter holds characters the embedded font cannot draw; they would print blank."""


@dataclass(frozen=True)
class PageSetup:
    """Page size and margins in points; `window` (x, y from the top, width, height) when we print the
    address, else `zone`: 'top' or 'bottom' 3 inches kept blank for the vendor's, or None."""

    size: tuple[float, float]
    margin: float
    window: tuple[float, float, float, float] | None = None
    zone: str | None = "top"

    @classmethod
    def from_settings(cls, settings: Settings) -> PageSetup:
        size = PAGE_SIZES[settings.letter_page_size]
        margin = settings.letter_margin_mm * mm
        if settings.letter_address_window_mm:
            left, top, width, height = (float(part) * mm for part in settings.letter_address_window_mm.split(","))
            return cls(size, margin, window=(left, top, width, height), zone=None)
        zones = {"top_first_page": "top", "bottom_first_page": "bottom", "insert_blank_page": None}
        return cls(size, margin, zone=zones[settings.letter_address_placement])


@dataclass(frozen=True)
class LetterContent:
    text: str
    locale: str
    dated: date  # the debtor's local date
    recipient: list[str]  # the address block's lines, in the country's order
    sender: list[str]  # the return address, one line each


@lru_cache(maxsize=1)
def letter_font() -> TTFont:
    """Registered once per process (parsing the font costs about a second)."""
    font = TTFont(FONT_NAME, str(FONT_PATH))
    pdfmetrics.registerFont(font)
    return font


def missing_glyphs(text: str) -> set[str]:
    """Printable characters of `text` the embedded font has no glyph for."""
    cmap = letter_font().face.charToGlyph
    return {char for char in text if char.isprintable() and not char.isspace() and ord(char) not in cmap}


def dated_line(dated: date, locale: str) -> str:
    """The letter's date as the debtor's locale writes it (2026年11月30日, November 30, 2026)."""
    return format_date(dated, format="long", locale=locale.replace("-", "_"))


def render_letter(content: LetterContent, page: PageSetup) -> bytes:
    """The letter as PDF bytes; MissingGlyphs if any character would print blank."""
    date_text = dated_line(content.dated, content.locale)
    lacking = missing_glyphs("".join([content.text, date_text, *content.recipient, *content.sender]))
    if lacking:
        raise MissingGlyphs(f"the letter font has no glyph for {''.join(sorted(lacking))!r}")
    letter_font()
    buffer = io.BytesIO()
    document = BaseDocTemplate(
        buffer, pagesize=page.size, leftMargin=page.margin, rightMargin=page.margin, topMargin=page.margin,
        bottomMargin=page.margin, title="Letter", author=content.sender[0] if content.sender else "",
        initialFontName=FONT_NAME, initialFontSize=BODY_SIZE,
    )  # fmt: skip
    width, height = page.size
    body_width = width - 2 * page.margin
    first_top, first_bottom = _first_page_body(page, height)
    first = Frame(page.margin, first_bottom, body_width, first_top - first_bottom, id="first", showBoundary=0)
    later = Frame(page.margin, page.margin, body_width, height - 2 * page.margin, id="later", showBoundary=0)

    def decorate(canvas: Canvas, _: Any) -> None:
        _draw_head(canvas, content, page, date_text)

    document.addPageTemplates(
        [
            PageTemplate("first", [first], onPage=decorate, autoNextPageTemplate="later"),
            PageTemplate("later", [later]),
        ]
    )
    document.build(_story(content))
    return buffer.getvalue()


def _first_page_body(page: PageSetup, height: float) -> tuple[float, float]:
    """Top and bottom (from the page's foot) of the first page's text frame, below the head and the window."""
    top, bottom = height - page.margin, page.margin
    if page.window is not None:
        top = min(top, height - (page.window[1] + page.window[3]) - 8 * mm)
    elif page.zone == "top":
        top = min(top, height - VENDOR_ZONE)
    elif page.zone == "bottom":
        bottom = max(bottom, VENDOR_ZONE)
    return top - LEADING * 2, bottom  # room for the date line


def _draw_head(canvas: Canvas, content: LetterContent, page: PageSetup, date_text: str) -> None:
    """The date (right, above the body) and, with a window, the return and recipient addresses in it."""
    width, height = page.size
    canvas.saveState()
    top, _ = _first_page_body(page, height)
    canvas.setFont(FONT_NAME, BODY_SIZE)
    canvas.drawRightString(width - page.margin, top + LEADING, date_text)
    if page.window is not None:
        left, from_top, _, box_height = page.window
        y = height - from_top - 9
        canvas.setFont(FONT_NAME, 7)
        canvas.drawString(left, y, " · ".join(content.sender))  # the return address above the recipient
        canvas.setFont(FONT_NAME, BODY_SIZE)
        for line in content.recipient:
            y -= LEADING - 2
            if y < height - from_top - box_height:
                break
            canvas.drawString(left, y, line)
    elif page.zone is None or page.zone == "bottom":
        canvas.setFont(FONT_NAME, 8)
        canvas.drawString(page.margin, height - page.margin, " · ".join(content.sender))
    canvas.restoreState()


def _story(content: LetterContent) -> list[Any]:
    chinese = content.locale.lower().startswith("zh")
    style = ParagraphStyle(
        "letter", fontName=FONT_NAME, fontSize=BODY_SIZE, leading=LEADING, wordWrap="CJK" if chinese else None
    )
    story: list[Any] = []
    for block in content.text.strip().split("\n\n"):
        story.append(Paragraph(escape(block).replace("\n", "<br/>"), style))
        story.append(Spacer(1, 3 * mm))
    return story
