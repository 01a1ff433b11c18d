"""Build config/fonts/NotoSansSC-GBK.ttf: Noto Sans SC (SIL OFL 1.1) cut to what Chinese letters use.

    .venv/bin/pip install fonttools pylopdf-fonts-zh-cn     # build-time only; not project dependencies
    .venv/bin/python scripts/build_cjk_font.py

Why a built file: reportlab embeds and subsets TrueType (glyf) fonts only, and the Noto Sans SC that pip
packages ship is OpenType/CFF. This keeps every character GBK encodes (21,886 hanzi: the common and the
rarer name characters, 喆 and 堃 included), ASCII, Latin-1, general punctuation, CJK symbols and the
full-width forms, converts the cubic CFF outlines to quadratic TrueType ones (fontTools cu2qu), and
drops hinting and layout features a letter does not need. Noto declares no Reserved Font Name, so the
subset keeps its name; its licence ships beside it (config/fonts/OFL.txt).
"""

from __future__ import annotations

import sys
from pathlib import Path

from fontTools import subset
from fontTools.pens.cu2quPen import Cu2QuPen
from fontTools.pens.ttGlyphPen import TTGlyphPen
from fontTools.ttLib import TTFont, newTable

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "config" / "fonts" / "NotoSansSC-GBK.ttf"
MAX_ERROR = 1.0  # font units: how far a quadratic curve may stray from the cubic one
RANGES = ((0x20, 0x7F), (0xA0, 0x180), (0x2000, 0x2070), (0x20A0, 0x20C0), (0x3000, 0x3040), (0xFF00, 0xFFF0))


def gbk_characters() -> set[str]:
    """Every character GBK encodes (two-byte codes 0x81-0xFE, 0x40-0xFE)."""
    found = set()
    for lead in range(0x81, 0xFF):
        for trail in range(0x40, 0xFF):
            try:
                found.add(bytes([lead, trail]).decode("gbk"))
            except UnicodeDecodeError:
                continue
    return found


def wanted() -> set[int]:
    points = {ord(char) for char in gbk_characters()}
    for start, end in RANGES:
        points.update(range(start, end))
    return points


def to_truetype(font: TTFont) -> None:
    """Replace the CFF table with glyf/loca holding the same outlines as quadratic curves."""
    glyph_set = font.getGlyphSet()
    glyphs = {}
    for name in font.getGlyphOrder():
        pen = TTGlyphPen(glyph_set)
        glyph_set[name].draw(Cu2QuPen(pen, MAX_ERROR, reverse_direction=True))
        glyphs[name] = pen.glyph()
    for table in ("CFF ", "VORG"):
        if table in font:
            del font[table]
    font["glyf"] = newTable("glyf")
    font["glyf"].glyphOrder = font.getGlyphOrder()
    font["glyf"].glyphs = glyphs
    font["loca"] = newTable("loca")
    maxp = font["maxp"]
    maxp.tableVersion = 0x00010000
    for field in ("maxTwilightPoints", "maxStorage", "maxFunctionDefs", "maxInstructionDefs"):
        setattr(maxp, field, 0)
    for field in ("maxStackElements", "maxSizeOfInstructions", "maxComponentElements"):
        setattr(maxp, field, 0)
    maxp.maxZones = 1
    font["head"].glyphDataFormat = 0
    font["post"].formatType = 3.0
    font.sfntVersion = "\x00\x01\x00\x00"


def main(source: Path) -> None:
    font = TTFont(str(source))
    options = subset.Options()
    options.layout_features = []
    options.hinting = False
    options.name_IDs = ["*"]
    options.notdef_outline = True
    subsetter = subset.Subsetter(options)
    subsetter.populate(unicodes=sorted(wanted()))
    subsetter.subset(font)
    to_truetype(font)
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    font.save(str(OUTPUT))
    print(f"{OUTPUT}: {len(font.getGlyphOrder())} glyphs, {OUTPUT.stat().st_size} bytes")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]))
    else:
        import pylopdf_fonts_zh_cn  # type: ignore[import-not-found]

        main(pylopdf_fonts_zh_cn.sans_path())
