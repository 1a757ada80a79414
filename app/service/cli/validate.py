"""`skill-webhook validate FILE...`: the /validate rules, offline (README "Commands and settings").

Prints one line per problem, `FILE[#DOC]: field: problem` for errors and `FILE[#DOC]: warning:
field: problem` for warnings (DOC, 1-based, only when the file holds several documents), and exits
1 when there is any error or a file cannot be read or parsed. Documents of other kinds are skipped
with a note on stderr; `kind: List` documents (kubectl get -o yaml) are looked into.

A directory stands for the same files as `serve --runtimes DIR` reads (app.sources.files.source), and all
the documents of all the files given are checked together, in order, by the function behind the
/validate dry run (app.core.validation.validate_documents): two AgentRuntimes on one workload are an
error, as they would be when created in that order. The cluster is never asked.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Iterator

from app.core.parsing.documents import DocumentError, file_media_type, load_documents
from app.core.model import DEFAULT_AGENTRUNTIME_API
from app.core.names import DEFAULT_DOMAIN_PREFIX, Domain
from app.core.validation import ValidationOptions, validate_documents
from app.sources.files.source import document_files

from app.service.settings import split_list

STDIN = "-"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "validate",
        help="validate AgentRuntime YAML/JSON files offline, with the rules of /validate",
        description=(
            "Validate AgentRuntime documents (YAML, multi-document YAML or JSON) with the same rules "
            "as the validating webhook. Prints one 'FILE[#DOC]: field: problem' line per error and "
            "warning; exits 1 on any error."
        ),
    )
    parser.add_argument(
        "files", nargs="+", metavar="FILE",
        help="file, or directory of .yaml/.yml/.json files (recursively, as serve --runtimes); '-' reads stdin",
    )
    parser.add_argument(
        "--registry-allow",
        default=os.environ.get("SKILL_WEBHOOK_REGISTRY_ALLOW", ""),
        help="comma-separated registry/prefix allow-list for skill images, empty: any "
        "(env SKILL_WEBHOOK_REGISTRY_ALLOW)",
    )
    parser.add_argument(
        "--agentruntime-api",
        default=os.environ.get("SKILL_WEBHOOK_AGENTRUNTIME_API", DEFAULT_AGENTRUNTIME_API),
        help="group/version of AgentRuntime (env SKILL_WEBHOOK_AGENTRUNTIME_API; default %(default)s)",
    )
    parser.add_argument(
        "--domain",
        default=os.environ.get("SKILL_WEBHOOK_DOMAIN", DEFAULT_DOMAIN_PREFIX),
        help="prefix of the <domain>/skill-images annotation (env SKILL_WEBHOOK_DOMAIN; default %(default)s)",
    )
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    try:
        domain = Domain(args.domain)
    except ValueError as err:
        print(f"skill-webhook validate: --domain: {err}", file=sys.stderr)
        return 2
    options = ValidationOptions(
        registry_allow=split_list(args.registry_allow), agentruntime_api=args.agentruntime_api, domain=domain
    )
    unreadable = False
    labelled: list[tuple[str, Any]] = []
    for label, path in _sources(args.files):
        documents = _read(label, path)
        if documents is None:
            unreadable = True
            continue
        if not documents:
            _note(f"{label}: note: no documents")
        for number, document in enumerate(documents, start=1):
            labelled.append((f"{label}#{number}" if len(documents) > 1 else label, document))
    batch = validate_documents(labelled, options=options)
    for result in batch.results:
        if result.report is None:
            _note(f"{result.label}: note: {result.note} of {options.agentruntime_api}")
            continue
        for error in result.report.errors:
            print(f"{result.label}: {error}")
        for warning in result.report.warnings:
            print(f"{result.label}: warning: {warning}")
    print(
        f"{batch.checked} AgentRuntime(s) checked: {batch.errors} error(s), {batch.warnings} warning(s)",
        file=sys.stderr,
    )
    return 1 if unreadable or not batch.allowed else 0


def _read(label: str, path: Path | None) -> list[Any] | None:
    """The documents of one input, or None after printing why it cannot be read or parsed."""
    try:
        data = sys.stdin.buffer.read() if path is None else path.read_bytes()
    except OSError as exc:
        print(f"{label}: cannot read: {exc.strerror or exc}")
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
