"""Rules of the code's shape, checked on the source: no import cycle in either package, modules of a few
hundred lines, heavy libraries only inside inference/engines/, and the connector importing nothing of
inference (it talks to the model over the OpenAI API only), and the connector's core knowing no IM platform."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from .servers import ROOT

PACKAGES = ("inference", "connector")
MAX_LINES = 400
HEAVY = ("torch", "vllm", "bitsandbytes", "transformers", "accelerate")


def modules(package: str) -> dict[str, Path]:
    found = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every module of ours that `name` imports, at module level or inside a function."""
    is_package = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [module] + [f"{module}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def graph_of(package: str) -> dict[str, set[str]]:
    mods = modules(package)
    known = set(mods)
    # a package's __init__ re-exporting its children is not a cycle with them: drop child -> parent edges
    graph = {}
    for name, path in mods.items():
        graph[name] = {t for t in imports(name, path, known) if not name.startswith(t + ".")}
    return graph


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycle(package: str) -> None:
    assert cycles(graph_of(package)) == []


@pytest.mark.parametrize("package", PACKAGES)
def test_modules_stay_small(package: str) -> None:
    long = {str(p.relative_to(ROOT)): n for p in modules(package).values()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_heavy_libraries_only_inside_the_engines() -> None:
    offenders = []
    for package in PACKAGES:
        for name, path in modules(package).items():
            if name.startswith("inference.engines"):
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                roots = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
                offenders += [f"{name}: {r}" for r in roots if r.split(".")[0] in HEAVY]
    assert offenders == []


def test_the_connector_imports_nothing_of_inference() -> None:
    offenders = [f"{name}: {target}" for name, path in modules("connector").items()
                 for target in imports(name, path, set(modules("inference"))) if target.startswith("inference")]
    assert offenders == []


def test_the_connector_core_knows_no_platform() -> None:
    """core/ (and the shared types) import nothing of an IM adapter: a second IM adds a folder, not core edits."""
    graph = graph_of("connector")
    platform_neutral = [n for n in graph if n.startswith("connector.core") or n == "connector.types"]
    offenders = [f"{name}: {target}" for name in platform_neutral for target in graph[name]
                 if target.startswith(("connector.dingtalk", "connector.sandbox"))]
    assert offenders == []


def test_the_cycle_finder_finds_cycles() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
