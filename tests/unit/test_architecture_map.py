"""docs/architecture.md's map matches the tree: every module of the product is named in its package's part of
the map, every folder by `name/`, and every module the dispatcher column names exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("config", "dispatcher", "channels", "workers")


def _map_sections() -> dict[str, str]:
    """The map's text per top-level package: from its `package/` line to the next package's."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    block = text.split("## The pieces", 1)[1].split("```", 2)[1]
    sections: dict[str, str] = {}
    current = None
    for line in block.splitlines():
        heading = re.match(r"^([a-z_]+)/\s", line)
        if heading:
            current = heading.group(1)
        if current:
            sections[current] = sections.get(current, "") + line + "\n"
    return sections


def test_every_module_and_folder_of_the_product_is_on_the_map() -> None:
    sections = _map_sections()
    missing = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            text = sections.get(package, "")
            folders = path.relative_to(ROOT / package).parts[:-1]
            missing += [f"{package}/{folder}/" for folder in folders if f"{folder}/" not in text]
            if path.stem != "__init__" and not re.search(rf"(?<![\w.]){re.escape(path.stem)}\b", text):
                missing.append(str(path.relative_to(ROOT)))
    assert sorted(set(missing)) == []


def test_every_module_the_dispatcher_column_names_exists() -> None:
    named = re.findall(r"^(?:dispatcher/)?\s{2,}([a-z_]+/?)\s{2,}", _map_sections()["dispatcher"], re.MULTILINE)
    base = ROOT / "dispatcher"
    absent = [
        name
        for name in named
        if not ((base / name.rstrip("/")).is_dir() if name.endswith("/") else (base / f"{name}.py").exists())
    ]
    assert named and absent == []
