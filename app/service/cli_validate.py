"""`skill-webhook validate FILE...`: the /validate rules, offline (SPEC §8).

Prints one line per problem, `FILE[#DOC]: field: problem` for errors and `FILE[#DOC]: warning:
field: problem` for warnings (DOC, 1-based, only when the file holds several documents), and exits
1 when there is any error or a file cannot be read or parsed. Documents of other kinds are skipped
with a note on stderr; `kind: List` documents (kubectl get -o yaml) are looked into.

The AgentRuntimes of all the files given are checked against each other for the one-per-workload
rule, as if they were created in that order; the cluster is never asked.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Iterator

from app.core.documents import DocumentError, load_documents
from app.core.index import AgentRuntimeIndex
from app.core.model import AGENTRUNTIME_KIND, DEFAULT_AGENTRUNTIME_API, AgentRuntime, is_agentruntime
from app.core.validation import ValidationOptions, validate_agentruntime

STDIN = "-"
DOCUMENT_SUFFIXES = (".yaml", ".yml", ".json")
_CONTENT_TYPES = {".json": "application/json", ".yaml": "application/yaml", ".yml": "application/yaml"}


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
        "files", nargs="+", metavar="FILE", help="file or directory of .yaml/.yml/.json files; '-' reads stdin"
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
    parser.set_defaults(handler=run)
    return parser


def run(args: argparse.Namespace) -> int:
    options = ValidationOptions(
        registry_allow=tuple(r.strip() for r in args.registry_allow.split(",") if r.strip()),
        agentruntime_api=args.agentruntime_api,
    )
    checker = _Checker(options)
    for label, path in _sources(args.files):
        checker.check_source(label, path)
    print(
        f"{checker.checked} AgentRuntime(s) checked: {checker.errors} error(s), {checker.warnings} warning(s)",
        file=sys.stderr,
    )
    return 1 if checker.failed else 0


class _Checker:
    def __init__(self, options: ValidationOptions) -> None:
        self.options = options
        # The files' own AgentRuntimes, so that two of them on one workload are caught.
        self.index = AgentRuntimeIndex()
        self.checked = self.errors = self.warnings = 0
        self.failed = False

    def check_source(self, label: str, path: Path | None) -> None:
        try:
            data = sys.stdin.buffer.read() if path is None else path.read_bytes()
        except OSError as exc:
            self.fail(f"{label}: cannot read: {exc.strerror or exc}")
            return
        content_type = _CONTENT_TYPES.get(path.suffix.lower()) if path is not None else None
        try:
            documents = load_documents(data, content_type)
        except DocumentError as exc:
            where = f"{label}:{exc.line}:{exc.column}" if exc.line is not None else label
            self.fail(f"{where}: {exc.message}")
            return
        if not documents:
            _note(f"{label}: note: no documents")
        for number, document in enumerate(documents, start=1):
            prefix = f"{label}#{number}" if len(documents) > 1 else label
            for item_prefix, item in _expand_lists(prefix, document):
                self.check_document(item_prefix, item)

    def check_document(self, prefix: str, document: Any) -> None:
        if not is_agentruntime(document, self.options.agentruntime_api):
            _note(f"{prefix}: note: skipped {_describe(document)}: not an AgentRuntime of {self.options.agentruntime_api}")
            return
        self.checked += 1
        report = validate_agentruntime(document, operation="CREATE", index=self.index, options=self.options)
        for error in report.errors:
            print(f"{prefix}: {error}")
        for warning in report.warnings:
            print(f"{prefix}: warning: {warning}")
        self.errors += len(report.errors)
        self.warnings += len(report.warnings)
        if report.allowed:
            # Valid means well-typed, so the shared model accepts it.
            self.index.upsert(AgentRuntime.from_object(document))
        else:
            self.failed = True

    def fail(self, line: str) -> None:
        print(line)
        self.failed = True


def _sources(arguments: list[str]) -> Iterator[tuple[str, Path | None]]:
    """(label, path) per input; a directory gives its YAML/JSON files, None is stdin."""
    for argument in arguments:
        if argument == STDIN:
            yield "<stdin>", None
            continue
        path = Path(argument)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in DOCUMENT_SUFFIXES and p.is_file())
            if not files:
                _note(f"{argument}: note: no .yaml, .yml or .json files")
            for file in files:
                yield str(file), file
        else:
            yield argument, path


def _expand_lists(prefix: str, document: Any) -> Iterator[tuple[str, Any]]:
    """A `kind: List` (or `AgentRuntimeList`) document stands for its items."""
    if (
        isinstance(document, dict)
        and document.get("kind") in ("List", f"{AGENTRUNTIME_KIND}List")
        and isinstance(document.get("items"), list)
    ):
        for i, item in enumerate(document["items"]):
            yield f"{prefix}.items[{i}]", item
    else:
        yield prefix, document


def _describe(document: Any) -> str:
    if not isinstance(document, dict):
        return "a document that is not an object"
    kind = document.get("kind")
    meta = document.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    what = kind if isinstance(kind, str) and kind else "a document without kind"
    if isinstance(document.get("apiVersion"), str):
        what = f"{what} ({document['apiVersion']})"
    return f"{what} {json.dumps(name)}" if isinstance(name, str) else what


def _note(line: str) -> None:
    print(line, file=sys.stderr)
