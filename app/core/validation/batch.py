"""Several documents validated together: the one function behind `skill-webhook validate` and the
`/validate` dry run, so that both give the same verdict on the same text.

Documents are taken in order, as `kubectl apply -f` would create them: list documents are opened,
documents of other kinds are skipped with a note, and each valid AgentRuntime is remembered so that a
later one that targets the same workload is an error (one AgentRuntime per workload), as it would be
once the first is stored. An optional index (the cluster's cache, for the dry run) counts as well.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable

from pydantic import ValidationError

from app.core.parsing.documents import open_lists
from app.core.matching.index import AgentRuntimeIndex
from app.core.model import AGENTRUNTIME_KIND, AgentRuntime, WorkloadRef

from app.core.validation.agentruntime import DEFAULT_OPTIONS, Targets, ValidationOptions, validate_agentruntime
from app.core.validation.findings import ValidationReport


@dataclass(frozen=True)
class DocumentResult:
    """One document's outcome: a report, or (for a document of another kind) a note saying why it
    was skipped."""

    label: str
    report: ValidationReport | None = None
    note: str = ""


@dataclass(frozen=True)
class BatchReport:
    results: tuple[DocumentResult, ...]

    @property
    def allowed(self) -> bool:
        return all(r.report is None or r.report.allowed for r in self.results)

    @property
    def checked(self) -> int:
        return sum(1 for r in self.results if r.report is not None)

    @property
    def errors(self) -> int:
        return sum(len(r.report.errors) for r in self.results if r.report is not None)

    @property
    def warnings(self) -> int:
        return sum(len(r.report.warnings) for r in self.results if r.report is not None)


def validate_documents(
    documents: Iterable[tuple[str, Any]],
    *,
    options: ValidationOptions = DEFAULT_OPTIONS,
    index: Targets | None = None,
) -> BatchReport:
    """Validate (label, document) pairs in order, each as a CREATE; never raises.

    A document is checked when it is not an object (an error) or its kind is AgentRuntime or unset
    (a wrong apiVersion group is then an error, which says more than a skip); any other kind is
    skipped with a note."""
    batch = AgentRuntimeIndex()
    targets: Targets = batch if index is None else _Layered((index, batch))
    results: list[DocumentResult] = []
    for label, document in open_lists(documents):
        kind = document.get("kind") if isinstance(document, dict) else None
        if isinstance(kind, str) and kind and kind != AGENTRUNTIME_KIND:
            results.append(DocumentResult(label, note=f"skipped {describe(document)}: not an {AGENTRUNTIME_KIND}"))
            continue
        report = validate_agentruntime(document, operation="CREATE", index=targets, options=options)
        results.append(DocumentResult(label, report))
        if report.allowed:
            try:
                batch.upsert(AgentRuntime.from_object(document))
            except ValidationError:  # valid means well-typed; kept for safety, a later check is all it costs
                pass
    return BatchReport(tuple(results))


class _Layered:
    """Several indexes read as one (the cluster's cache, then the documents before this one)."""

    def __init__(self, layers: tuple[Targets, ...]) -> None:
        self.layers = layers

    def targeting(self, namespace: str, workload: WorkloadRef) -> tuple[Any, ...]:
        return tuple(r for layer in self.layers for r in layer.targeting(namespace, workload))


def describe(document: Any) -> str:
    """`ConfigMap (v1) "settings"`: what a skipped document is, for the note."""
    if not isinstance(document, dict):
        return "a document that is not an object"
    kind = document.get("kind")
    meta = document.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    what = kind if isinstance(kind, str) and kind else "a document without kind"
    if isinstance(document.get("apiVersion"), str):
        what = f"{what} ({document['apiVersion']})"
    return f"{what} {json.dumps(name)}" if isinstance(name, str) else what
