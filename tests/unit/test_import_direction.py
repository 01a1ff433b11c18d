"""The house's import direction, read from the code: `config` ← `channels` ← `workers` → `dispatcher` →
`config` (docs/architecture.md). Module-level imports only: the `dispatcher` command's hub reaches the
workers' commands lazily, inside the functions that run them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {
    "config": {"dispatcher", "workers", "channels", "celery"},
    "channels": {"dispatcher", "workers", "celery"},
    "dispatcher": {"workers", "channels", "celery", "kombu"},
}


def _module_level_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in tree.body:  # top level only; `if TYPE_CHECKING:` blocks are types, not imports at run time
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_module_imports_against_the_documented_direction(package: str) -> None:
    wrong = {
        str(path.relative_to(ROOT)): sorted(_module_level_imports(path) & FORBIDDEN[package])
        for path in sorted((ROOT / package).rglob("*.py"))
    }
    assert {name: packages for name, packages in wrong.items() if packages} == {}


def test_no_module_of_the_product_is_over_400_lines() -> None:
    sizes = {
        str(path.relative_to(ROOT)): len(path.read_text(encoding="utf-8").splitlines())
        for package in ("config", "channels", "dispatcher", "workers")
        for path in (ROOT / package).rglob("*.py")
    }
    assert {name: lines for name, lines in sizes.items() if lines > 400} == {}
