"""The house's import direction, read from the code: `config` ← `channels` ← `workers` → `dispatcher` →
`config`, and the API's edge `dispatcher/api/` → `channels` (docs/architecture.md). Module-level imports
for every package; for `dispatcher`, imports inside functions too: the commands that need the workers or the
channels live in workers/cli.py, which includes dispatcher/cli.py's commands, so nothing in dispatcher/
reaches back, not even lazily. And no circle: no two product modules import each other by any import, one
under `if TYPE_CHECKING:` included."""

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
    "workers": set(),  # any package; of dispatcher, only its core (below)
}
# The HTTP edge parses provider callbacks with the channel adapters; the rest of dispatcher never sees them.
ALLOWED_UNDER = {"dispatcher/api": {"channels"}}
# Workers reach dispatcher's core, never its HTTP edge: the webhooks live under dispatcher/api, not here.
FORBIDDEN_MODULES = {"workers": ("dispatcher.api",)}
# The one-process demo serves the API in a thread next to its workers, so it is the one module that may.
SERVES_THE_API = {"workers/demo.py"}


def _imported(nodes: Iterable[ast.AST]) -> set[str]:
    """The modules these nodes import, by their full dotted names."""
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def _module_level_imports(path: Path) -> set[str]:
    # Top level only; `if TYPE_CHECKING:` blocks are types, not imports at run time.
    return _imported(ast.parse(path.read_text(encoding="utf-8")).body)


def _every_import(path: Path) -> set[str]:
    """Imports anywhere in the module, inside functions as much as at the top."""
    return _imported(ast.walk(ast.parse(path.read_text(encoding="utf-8"))))


def _forbidden_for(path: Path, package: str) -> set[str]:
    relative = path.relative_to(ROOT).as_posix()
    allowed = set().union(*(names for folder, names in ALLOWED_UNDER.items() if relative.startswith(folder + "/")))
    return FORBIDDEN[package] - allowed


def _wrong_imports(path: Path, package: str) -> list[str]:
    forbidden, modules = _forbidden_for(path, package), FORBIDDEN_MODULES.get(package, ())
    if path.relative_to(ROOT).as_posix() in SERVES_THE_API:
        modules = ()
    return sorted(
        name
        for name in _module_level_imports(path)
        if name.split(".")[0] in forbidden or any(name == m or name.startswith(m + ".") for m in modules)
    )


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_module_imports_against_the_documented_direction(package: str) -> None:
    wrong = {
        str(path.relative_to(ROOT)): _wrong_imports(path, package) for path in sorted((ROOT / package).rglob("*.py"))
    }
    assert {name: imports for name, imports in wrong.items() if imports} == {}


def test_only_the_api_edge_of_dispatcher_may_import_channels() -> None:
    api = ROOT / "dispatcher" / "api" / "webhooks" / "twilio.py"
    core = ROOT / "dispatcher" / "engine.py"
    assert "channels" not in _forbidden_for(api, "dispatcher")
    assert "channels" in _forbidden_for(core, "dispatcher")
    assert "channels" in _forbidden_for(ROOT / "dispatcher" / "api.py", "dispatcher")  # a sibling named like it


def test_no_dispatcher_module_reaches_workers_or_channels_even_inside_a_function() -> None:
    wrong = {
        str(path.relative_to(ROOT)): sorted(
            name for name in _every_import(path) if name.split(".")[0] in _forbidden_for(path, "dispatcher")
        )
        for path in sorted((ROOT / "dispatcher").rglob("*.py"))
    }
    assert {name: imports for name, imports in wrong.items() if imports} == {}


def _module_file(name: str) -> str | None:
    """The product file a dotted name lands in: the module itself, else its package, else the nearest parent."""
    parts = name.split(".")
    while parts:
        base = ROOT.joinpath(*parts)
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate.relative_to(ROOT).as_posix()
        parts.pop()
    return None


def _import_circles() -> list[list[str]]:
    """Every set of product files that import each other in a loop, by any import: at the top, inside a
    function, or under `if TYPE_CHECKING:` (a type-only circle is still two modules that need each other)."""
    graph: dict[str, set[str]] = {}
    for package in ("config", "channels", "dispatcher", "workers"):
        for path in sorted((ROOT / package).rglob("*.py")):
            here = path.relative_to(ROOT).as_posix()
            names = (name for name in _every_import(path) if name.split(".")[0] in FORBIDDEN)
            graph[here] = {target for name in names if (target := _module_file(name)) not in (None, here)}
    # Tarjan's strongly connected components, iteratively; a component of two or more files is a circle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        while work:
            node, targets = work[-1]
            target = next(targets, None)
            if target is not None:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    work.append((target, iter(sorted(graph.get(target, ())))))
                elif target in stack:
                    low[node] = min(low[node], index[target])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    circles.append(sorted(component))
    return circles


def test_no_two_product_modules_import_each_other_not_even_for_types() -> None:
    assert _import_circles() == []


def test_no_module_of_the_product_is_over_400_lines() -> None:
    sizes = {
        str(path.relative_to(ROOT)): len(path.read_text(encoding="utf-8").splitlines())
        for package in ("config", "channels", "dispatcher", "workers")
        for path in (ROOT / package).rglob("*.py")
    }
    assert {name: lines for name, lines in sizes.items() if lines > 400} == {}
