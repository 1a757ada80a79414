"""The import direction (docs/architecture.md): app/core imports nothing of ours outside core and no I/O frameworks;
app/sources never imports app/service."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parents[1] / "app"

# What the pure core may not reach for: the web stack, the Kubernetes client, the network, processes.
CORE_FORBIDDEN = ("app.sources", "app.service", "fastapi", "starlette", "uvicorn", "kubernetes",
                  "prometheus_client", "socket", "ssl", "subprocess", "urllib3", "httpx", "requests")
SOURCES_FORBIDDEN = ("app.service", "fastapi", "starlette", "uvicorn", "prometheus_client")


def imported_modules(path: Path) -> set[str]:
    package = ".".join(path.relative_to(APP.parent).with_suffix("").parts[:-1])
    return modules_of(path.read_text(encoding="utf-8"), package)


def modules_of(source: str, package: str) -> set[str]:
    tree = ast.parse(source)
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
    return found


def _violations(layer: str, forbidden: tuple[str, ...]) -> list[str]:
    problems = []
    for path in sorted((APP / layer).rglob("*.py")):
        for module in imported_modules(path):
            if any(module == f or module.startswith(f + ".") for f in forbidden):
                problems.append(f"{path.relative_to(APP.parent)} imports {module}")
    return problems


@pytest.mark.parametrize("layer,forbidden", [("core", CORE_FORBIDDEN), ("sources", SOURCES_FORBIDDEN)])
def test_layer_imports_point_inwards(layer: str, forbidden: tuple[str, ...]) -> None:
    assert _violations(layer, forbidden) == []


def test_the_check_resolves_relative_imports() -> None:
    # Guard against a checker that passes silently: relative imports out of core are seen for what they are.
    assert modules_of("from ..service import app\nimport fastapi\n", "app.core") == {"app.service", "fastapi"}
    assert modules_of("from . import model\nfrom .patch import x\n", "app.core") == {"app.core", "app.core.patch"}


def test_modules_stay_small() -> None:
    too_long = [
        f"{p.relative_to(APP.parent)}: {n} lines"
        for p in sorted(APP.rglob("*.py"))
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > 450
    ]
    assert too_long == []
