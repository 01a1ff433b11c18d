"""docs/architecture.md's map matches the tree: every module of the product is named in its package's part of
the map, every folder by `name/`, and every module the dispatcher column names exists (in the folder it is
drawn under)."""

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
    """A name in the column (`name  what it holds`) is a module or a folder of dispatcher/; one indented under a
    folder's line (`core/`) is that folder's."""
    base = ROOT / "dispatcher"
    folders: list[tuple[int, str]] = []  # (indent, folder) of the folders the current line is under
    named, absent = [], []
    for line in _map_sections()["dispatcher"].splitlines():
        found = re.match(r"^((?:dispatcher/)?\s{2,})([a-z_]+/?)\s{2,}", line)
        if not found:
            continue
        indent, name = len(found.group(1)), found.group(2)
        folders = [(at, folder) for at, folder in folders if at < indent]
        where = base.joinpath(*(folder for _, folder in folders))
        named.append(name)
        if not ((where / name.rstrip("/")).is_dir() if name.endswith("/") else (where / f"{name}.py").exists()):
            absent.append(str((where / name).relative_to(ROOT)))
        if name.endswith("/"):
            folders.append((indent, name.rstrip("/")))
    assert named and absent == []
