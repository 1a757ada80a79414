"""The documentation: the README is a short front page that links every chapter of docs/;
docs/configuration.md names every `serve` flag with its variable, every subcommand and every option of
every subcommand; every relative link resolves; and the repository stands on its own (nothing refers
to files outside it)."""

from __future__ import annotations

import argparse
import re
import subprocess
from pathlib import Path

import pytest

from app.service.cli import main as cli
from app.service.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
README_PATH = ROOT / "README.md"
README = README_PATH.read_text(encoding="utf-8")
DOCS = sorted((ROOT / "docs").glob("*.md"))
CONFIGURATION = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
MAX_README_LINES = 300

# [text](target) outside code; images too. Autolinks <https://...> are absolute and not checked.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~)")


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    for action in parser._actions:  # noqa: SLF001 - argparse has no public API for its subcommands
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            return dict(action.choices)
    raise AssertionError("the skill-webhook parser has no subcommands")


def _options(parser: argparse.ArgumentParser) -> list[str]:
    return sorted(
        {opt for action in parser._actions for opt in action.option_strings  # noqa: SLF001
         if opt.startswith("--") and opt != "--help"}
    )


def _prose(text: str) -> str:
    """The text without its fenced code blocks, where `[x](y)` is code, not a link."""
    kept, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if not fenced:
            kept.append(re.sub(r"`[^`]*`", "", line))
    return "\n".join(kept)


def _anchors(text: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens, repeats numbered."""
    seen: dict[str, int] = {}
    anchors = set()
    fenced = False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
            continue
        match = None if fenced else re.match(r"#{1,6} (.*)", line)
        if match:
            slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def _relative_links(path: Path) -> list[str]:
    return [
        target for target in LINK.findall(_prose(path.read_text(encoding="utf-8")))
        if not re.match(r"[a-z][a-z0-9+.-]*:", target)
    ]


@pytest.mark.parametrize("field", sorted(Settings.model_fields))
def test_every_serve_flag_is_documented(field: str) -> None:
    assert f"| `--{field.replace('_', '-')}` |" in CONFIGURATION


def test_every_serve_variable_follows_its_flag() -> None:
    prefix = Settings.model_config["env_prefix"]
    assert f"`{prefix}<FLAG>`" in CONFIGURATION


@pytest.mark.parametrize("command", sorted(_subcommands()))
def test_every_subcommand_is_documented(command: str) -> None:
    assert f"`skill-webhook {command}" in CONFIGURATION


@pytest.mark.parametrize(
    ("command", "option"),
    [(name, option) for name, parser in sorted(_subcommands().items()) if name != "serve"
     for option in _options(parser)],
)
def test_every_option_of_every_subcommand_is_documented(command: str, option: str) -> None:
    section = CONFIGURATION.split(f"### `skill-webhook {command}`", 1)
    assert len(section) == 2, f"docs/configuration.md has no section ### `skill-webhook {command}`"
    body = section[1].split("\n#", 1)[0]
    assert f"`{option}" in body, f"{option} of {command}"


def test_the_readme_is_a_front_page() -> None:
    lines = README.count("\n") + (not README.endswith("\n"))
    assert lines <= MAX_README_LINES


def test_the_two_commands_come_first() -> None:
    first = README.index("## Two commands")
    assert README.index("pip install . && skill-webhook serve") > first
    assert README.index("scripts/install-test-tools && pip install '.[test]' && python -m pytest") > first
    assert first < README.index("## Installing")


def test_ci_runs_the_readmes_test_command() -> None:
    command = re.search(r"^scripts/install-test-tools && .*$", README, re.MULTILINE)
    assert command is not None
    install, _, test = command.group(0).rpartition(" && ")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert install in ci
    assert re.search(rf"^{re.escape(test)}$", ci, re.MULTILINE), test


def test_every_chapter_is_linked_from_the_readme() -> None:
    linked = {(ROOT / target.split("#")[0]).resolve() for target in _relative_links(README_PATH)}
    assert DOCS
    assert [doc.name for doc in DOCS if doc.resolve() not in linked] == []


@pytest.mark.parametrize("page", [README_PATH, *DOCS], ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for target in _relative_links(page):
        file, _, anchor = target.partition("#")
        destination = (page.parent / file).resolve() if file else page
        if not destination.exists():
            broken.append(target)
        elif anchor and destination.suffix == ".md" and anchor not in _anchors(destination.read_text(encoding="utf-8")):
            broken.append(target)
    assert broken == []


def test_no_tracked_file_refers_to_files_outside_the_repository() -> None:
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    # Spelled in pieces, so that this file does not match itself.
    pattern = re.compile("|".join(re.escape(a + b) for a, b in (("../", "shared"), ("SP", "EC §"), ("SP", "EC.md"), ("ST", "YLE.md"))))
    offenders = [
        name for name in files
        if (ROOT / name).is_file() and pattern.search((ROOT / name).read_text(encoding="utf-8", errors="replace"))
    ]
    assert offenders == []


def _tracked_texts() -> dict[str, str]:
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    return {
        name: (ROOT / name).read_text(encoding="utf-8", errors="replace")
        for name in files if (ROOT / name).is_file()
    }


def test_pointers_to_the_documentation_name_chapters_that_exist() -> None:
    """Code and manifests point at a chapter (`docs/registries.md`), never at a README section: the
    README is a front page and its sections are not a reference that stays."""
    readme_section = re.compile("README" + r' "')  # spelled in pieces, so that this file does not match
    chapter = re.compile(r"\bdocs/([\w-]+\.md)\b")
    stale = [name for name, text in _tracked_texts().items() if readme_section.search(text)]
    # tests/ build skill images whose own files may be called docs/*.md: those are data, not pointers.
    missing = sorted(
        {f"{name}: docs/{doc}" for name, text in _tracked_texts().items() if not name.startswith("tests/")
         for doc in chapter.findall(text) if not (ROOT / "docs" / doc).is_file()}
    )
    assert stale == []
    assert missing == []


def _stray_lines_before_headings(text: str) -> list[str]:
    """Non-blank lines directly before a heading, outside code fences (where an editing note pasted
    into a page ends up: it once sat in the registry section, right above a heading)."""
    stray, fenced, previous = [], False, ""
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced and line.startswith("#") and previous.strip():
            stray.append(previous)
        previous = line
    return stray


def test_the_stray_line_check_sees_a_pasted_note() -> None:
    page = 'Text.\n\n", for after "What serve does with it". It also changes\n### How often it asks\n'
    assert _stray_lines_before_headings(page) == ['", for after "What serve does with it". It also changes']
    assert _stray_lines_before_headings("```\n# a comment in a shell block\n```\n") == []


@pytest.mark.parametrize("page", [README_PATH, *DOCS], ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_heading_stands_after_a_blank_line(page: Path) -> None:
    assert _stray_lines_before_headings(page.read_text(encoding="utf-8")) == []
