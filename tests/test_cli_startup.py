"""A command starts fast: only the chosen subcommand is imported, and only with the libraries it needs.

Wall-clock times say little on a shared 2-core machine, so what is checked is what makes them: the
modules a command has loaded when it exits, seen from inside a fresh interpreter. The web stack, the
Kubernetes client, the HTTP client and cryptography cost a few hundred milliseconds together; the
offline commands never need them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("fastapi", "starlette", "uvicorn", "kubernetes", "httpx", "cryptography", "prometheus_client")

# Runs the command as the console script does, then reports the top-level packages and our modules loaded.
PROBE = """
import contextlib, io, json, sys
from app.service.cli.main import main
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    try:
        code = main(sys.argv[1:])
    except SystemExit as exit:
        code = exit.code
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def loaded(*argv: str) -> tuple[int, set[str]]:
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=True)
    report = json.loads(done.stdout)
    return report["code"], set(report["modules"])


def packages(modules: set[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


def test_top_level_help_imports_no_subcommand_and_no_library() -> None:
    code, modules = loaded("--help")
    assert code == 0
    ours = {m for m in modules if m.startswith("app.")}
    assert ours <= {"app", "app.service", "app.service.cli", "app.service.cli.main"}, ours
    assert not packages(modules) & {*HEAVY, "pydantic", "pydantic_settings", "yaml"}


@pytest.mark.parametrize("argv", [
    ["validate", "manifests/samples/agentruntimes.yaml"],
    ["mutate", "--pod", "manifests/samples/pod.yaml", "--runtimes", "manifests/samples"],
    ["validate", "--help"],
    ["mutate", "--help"],
], ids=["validate", "mutate", "validate --help", "mutate --help"])
def test_offline_commands_load_neither_the_web_stack_nor_the_clients(argv: list[str]) -> None:
    code, modules = loaded(*argv)
    assert code == 0
    assert not packages(modules) & {*HEAVY, "pydantic_settings"}, sorted(packages(modules) & {*HEAVY, "pydantic_settings"})
    others = {"serve", "certs", "manifests", "inspect", "stale", "pull"}
    assert not {m.rsplit(".", 1)[-1] for m in modules if m.startswith("app.service.cli.")} & others


def test_serve_parses_without_the_other_subcommands_or_the_web_stack() -> None:
    code, modules = loaded("serve", "--help")
    assert code == 0
    assert "pydantic_settings" in packages(modules)  # its flags are the settings object's fields
    assert not packages(modules) & set(HEAVY)
    assert not {m for m in modules if m.startswith("app.service.cli.")} - {
        "app.service.cli.main", "app.service.cli.serve", "app.service.cli.options"}


def test_the_full_parser_still_lists_every_command_with_a_handler() -> None:
    from app.service.cli import main as cli

    parsers = cli._build(None)[1]  # noqa: SLF001 - the parsers main dispatches with
    assert {"serve", "validate", "mutate", "certs", "ca-bundle", "manifests", "inspect", "stale"} <= set(parsers)
    assert all(parser.get_default("handler") is not None for parser in parsers.values())
