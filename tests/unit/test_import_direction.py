"""The house's import direction, read from the code: `config` ← `channels` ← `workers` → `dispatcher` →
`config` (docs/architecture.md). Module-level imports for every package; for `dispatcher`, imports inside
functions too: the commands that need the workers or the channels live in workers/cli.py, which includes
dispatcher/cli.py's commands, so nothing in dispatcher/ reaches back, not even lazily. The API
(dispatcher/api/) mounts the provider webhooks, which parse with the channel adapters: it may import
`channels`, never `workers`."""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {
    "config": {"dispatcher", "workers", "channels", "celery"},
    "channels": {"dispatcher", "workers", "celery"},
    "dispatcher": {"workers", "channels", "celery", "kombu"},
}
API = ROOT / "dispatcher" / "api"
API_MAY_IMPORT = {"channels"}  # the provider webhooks parse with the channel adapters


def _allowed(path: Path) -> set[str]:
    return API_MAY_IMPORT if path.is_relative_to(API) else set()


def _imported(nodes: Iterable[ast.AST]) -> set[str]:
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def _module_level_imports(path: Path) -> set[str]:
    # Top level only; `if TYPE_CHECKING:` blocks are types, not imports at run time.
    return _imported(ast.parse(path.read_text(encoding="utf-8")).body)


def _every_import(path: Path) -> set[str]:
    """Imports anywhere in the module, inside functions as much as at the top."""
    return _imported(ast.walk(ast.parse(path.read_text(encoding="utf-8"))))


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_module_imports_against_the_documented_direction(package: str) -> None:
    wrong = {
        str(path.relative_to(ROOT)): sorted(_module_level_imports(path) & (FORBIDDEN[package] - _allowed(path)))
        for path in sorted((ROOT / package).rglob("*.py"))
    }
    assert {name: packages for name, packages in wrong.items() if packages} == {}


def test_no_dispatcher_module_reaches_workers_or_channels_even_inside_a_function() -> None:
    wrong = {
        str(path.relative_to(ROOT)): sorted(_every_import(path) & ({"workers", "channels"} - _allowed(path)))
        for path in sorted((ROOT / "dispatcher").rglob("*.py"))
    }
    assert {name: packages for name, packages in wrong.items() if packages} == {}


def test_no_module_of_the_product_is_over_400_lines() -> None:
    sizes = {
        str(path.relative_to(ROOT)): len(path.read_text(encoding="utf-8").splitlines())
        for package in ("config", "channels", "dispatcher", "workers")
        for path in (ROOT / package).rglob("*.py")
    }
    assert {name: lines for name, lines in sizes.items() if lines > 400} == {}
