"""The README is the behaviour's documentation: it names every `serve` flag with its variable and every
subcommand, and the repository stands on its own (nothing refers to files outside it)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from app.service.cli import main as cli
from app.service.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("field", sorted(Settings.model_fields))
def test_every_serve_flag_is_documented(field: str) -> None:
    assert f"| `--{field.replace('_', '-')}` |" in README


def test_every_subcommand_is_documented() -> None:
    commands = cli.build_parser()._subparsers._group_actions[0].choices  # noqa: SLF001 - argparse has no public API
    for name in commands:
        assert f"`skill-webhook {name}" in README, name


def test_the_two_commands_come_first() -> None:
    first = README.index("## Two commands")
    assert README.index("pip install . && skill-webhook serve") > first
    assert README.index("scripts/install-test-tools && pip install '.[test]' && python -m pytest") > first
    assert first < README.index("## What the mutating webhook does")


def test_no_tracked_file_refers_to_files_outside_the_repository() -> None:
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    # Spelled in pieces, so that this file does not match itself.
    pattern = re.compile("|".join(re.escape(a + b) for a, b in (("../", "shared"), ("SP", "EC §"), ("SP", "EC.md"), ("ST", "YLE.md"))))
    offenders = [
        name for name in files
        if (ROOT / name).is_file() and pattern.search((ROOT / name).read_text(encoding="utf-8", errors="replace"))
    ]
    assert offenders == []
