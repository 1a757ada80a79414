"""Every library the code imports is declared in pyproject.toml: the service's imports among the
dependencies, the tests' among the dependencies or the `test` extra. An import that only works
because something else happens to pull its distribution in breaks the day that something changes.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
OWN = {"app", "tests"}


def _names(requirements: list[str]) -> set[str]:
    return {_normal(re.split(r"[\s<>=!~;\[(]", r, maxsplit=1)[0]) for r in requirements}


def _normal(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def third_party_imports(directory: Path) -> dict[str, set[str]]:
    """Top-level module -> the files under `directory` that import it (standard library and our own
    packages left out; relative imports are our own)."""
    found: dict[str, set[str]] = {}
    for path in directory.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.partition(".")[0]
                if top not in sys.stdlib_module_names and top not in OWN and top != "__future__":
                    found.setdefault(top, set()).add(str(path.relative_to(directory)))
    return found


def undeclared(directory: Path, declared: set[str]) -> dict[str, list[str]]:
    owners = packages_distributions()
    return {
        f"{module} ({', '.join(owners.get(module, ['not installed']))})": sorted(files)
        for module, files in third_party_imports(directory).items()
        if not any(_normal(d) in declared for d in owners.get(module, []))
    }


def test_the_service_imports_only_its_dependencies():
    assert undeclared(ROOT / "app", _names(PROJECT["dependencies"])) == {}


def test_the_tests_import_only_the_dependencies_and_the_test_extra():
    declared = _names(PROJECT["dependencies"]) | _names(PROJECT["optional-dependencies"]["test"])
    assert undeclared(ROOT / "tests", declared) == {}


def test_the_check_sees_an_undeclared_import(tmp_path):
    (tmp_path / "module.py").write_text("import yaml\nfrom hypothesis import given\nimport json\nfrom . import x\n")
    assert undeclared(tmp_path, _names(["PyYAML>=6"])) == {"hypothesis (hypothesis)": ["module.py"]}
