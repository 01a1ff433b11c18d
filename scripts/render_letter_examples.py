"""Write docs/letters/zh-CN.png and docs/letters/en.png: page 1 of the demand letter as pdfium renders it.

    .venv/bin/python scripts/render_letter_examples.py

tests/unit/test_letter_pdf.py renders the same letters and checks every glyph drew ink.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.letter_pages import example_letter, render_pages, save_png  # noqa: E402


def main() -> None:
    for locale in ("zh-CN", "en"):
        pdf, _ = example_letter(locale)
        [first, *_] = render_pages(pdf)
        assert not first.blank, f"{locale}: blank glyphs {first.blank}"
        path = ROOT / "docs" / "letters" / f"{locale}.png"
        save_png(first, path)
        print(f"{path.relative_to(ROOT)}: {first.image.size[0]}x{first.image.size[1]} px, {len(pdf)} bytes of PDF")


if __name__ == "__main__":
    main()
