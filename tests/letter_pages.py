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
