"""`skill-webhook validate FILE...`: the /validate rules, offline (docs/configuration.md).

Prints one line per problem, `FILE[#DOC]: field: problem` for errors and `FILE[#DOC]: warning:
field: problem` for warnings (DOC, 1-based, only when the file holds several documents), and exits
1 when there is any error or a file cannot be read or parsed. Documents of other kinds are skipped
with a note on stderr; `kind: List` documents (kubectl get -o yaml) are looked into.

A directory stands for the same files as `serve --runtimes DIR` reads (app.sources.files.source), and all
the documents of all the files given are checked together, in order, by the function behind the
/validate dry run (app.core.validation.batch.validate_documents): two AgentRuntimes on one workload are an
error, as they would be when created in that order. The cluster is never asked.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Iterator

from app.core.model import AGENTRUNTIME_KIND, api_group
from app.core.names import Domain
from app.core.parsing.documents import DocumentError, file_media_type, load_documents, open_lists
from app.core.validation.agentruntime import ValidationOptions
from app.core.validation.batch import validate_documents
from app.sources.files.source import document_files

from app.service.cli import options
from app.service.cli.options import split_list

COMMAND = "validate"
STDIN = "-"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        COMMAND,
        description=(
            "Validate AgentRuntime documents (YAML, multi-document YAML or JSON) with the same rules "
            "as the validating webhook. Prints one 'FILE[#DOC]: field: problem' line per error and "
            "warning; exits 1 on any error, a file that cannot be read or parsed included."
        ),
    )
    parser.add_argument(
        "files", nargs="+", metavar="FILE",
        help="file, or directory of .yaml/.yml/.json files (recursively, as serve --runtimes); '-' reads stdin",
    )
    options.add(parser, "registry_allow", "agentruntime_api", "domain")
    parser.set_defaults(handler=run)
    return parser


@options.checked(COMMAND)
def run(args: argparse.Namespace) -> int:
    validation = ValidationOptions(
        registry_allow=split_list(args.registry_allow), agentruntime_api=args.agentruntime_api,
        domain=Domain(args.domain),
    )
    unreadable = 0
    labelled: list[tuple[str, Any]] = []
    for label, path in _sources(args.files):
        documents = _read(label, path)
        if documents is None:
            unreadable += 1
            continue
        if not documents:
            _note(f"{label}: note: no documents")
        for number, document in enumerate(documents, start=1):
            labelled.append((f"{label}#{number}" if len(documents) > 1 else label, document))
    batch = validate_documents(labelled, options=validation)
    for result in batch.results:
        if result.report is None:
            _note(f"{result.label}: note: {result.note} of {validation.agentruntime_api}")
            continue
        for error in result.report.errors:
            print(f"{result.label}: {error}")
        for warning in result.report.warnings:
            print(f"{result.label}: warning: {warning}")
    for label, api_version in _other_groups(labelled, validation.agentruntime_api):
        _note(f"{label}: hint: an AgentRuntime of {api_version}, not of {validation.agentruntime_api}: "
              f"to check it as one, pass {options.agentruntime_api_hint(api_version)}")
    # A file that cannot be read or parsed is an error too: the summary must not say "0 error(s)"
    # when the exit status says otherwise.
    errors = batch.errors + unreadable
    unread = f" ({unreadable} file(s) not read or parsed)" if unreadable else ""
    _note(f"{batch.checked} AgentRuntime(s) checked: {errors} error(s){unread}, {batch.warnings} warning(s)")
    return 1 if unreadable or not batch.allowed else 0


def _other_groups(labelled: list[tuple[str, Any]], configured: str) -> Iterator[tuple[str, str]]:
    """(label, apiVersion) of the AgentRuntimes of another API group than the configured one: most
    likely the other project's (rossoctl), checked with the wrong --agentruntime-api."""
    for label, document in open_lists(labelled):
        if not isinstance(document, dict) or document.get("kind") != AGENTRUNTIME_KIND:
            continue
        api_version = document.get("apiVersion")
        if isinstance(api_version, str) and "/" in api_version and api_group(api_version) != api_group(configured):
            yield label, api_version


def _read(label: str, path: Path | None) -> list[Any] | None:
    """The documents of one input, or None after printing why it cannot be read or parsed."""
    try:
        data = sys.stdin.buffer.read() if path is None else path.read_bytes()
    except OSError as exc:
        print(options.os_problem(label, exc))
        return None
    try:
        return load_documents(data, file_media_type(path.name) if path is not None else None)
    except DocumentError as exc:
        where = f"{label}:{exc.line}:{exc.column}" if exc.line is not None else label
        print(f"{where}: {exc.message}")
        return None


def _sources(arguments: list[str]) -> Iterator[tuple[str, Path | None]]:
    """(label, path) per input; a directory gives its YAML/JSON files, None is stdin."""
    for argument in arguments:
        if argument == STDIN:
            yield "<stdin>", None
            continue
        path = Path(argument)
        if path.is_dir():
            files = document_files(path)
            if not files:
                _note(f"{argument}: note: no .yaml, .yml or .json files")
            for file in files:
                yield str(file), file
        else:
            yield argument, path


def _note(line: str) -> None:
    print(line, file=sys.stderr)
