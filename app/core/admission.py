"""The AdmissionReview envelope, written once for /mutate and /validate: decode, guard, respond."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

import orjson

from app.core.objects import text_of

ADMISSION_API_VERSION = "admission.k8s.io/v1"


class BadAdmissionReview(ValueError):
    """The body is not an admission.k8s.io/v1 AdmissionReview with a request (answered with HTTP 400)."""


@dataclass(frozen=True)
class AdmissionRequest:
    """The parts of AdmissionReview.request that the webhooks read."""

    uid: str
    operation: str
    namespace: str
    group: str
    kind: str
    sub_resource: str
    name: str
    dry_run: bool
    object: Any
    old_object: Any


@dataclass
class AdmissionDecision:
    """What a webhook decided; turned into the response by `admission_response`."""

    allowed: bool = True
    patch: list[dict[str, Any]] | None = None
    warnings: list[str] = field(default_factory=list)
    code: int | None = None
    reason: str | None = None
    message: str | None = None
    # For the log line and metrics, not the response.
    runtime: str | None = None
    skills: list[str] = field(default_factory=list)
    outcome: str = "allowed"
    unpinned: int = 0  # skills injected by tag because their digest was not known yet
    extracted: int = 0  # skills delivered by extraction (the rest of `skills`: image volumes)

    @classmethod
    def deny(cls, code: int, message: str, *, reason: str | None = None, **extra: Any) -> "AdmissionDecision":
        extra.setdefault("outcome", "denied")
        return cls(allowed=False, code=code, message=message, reason=reason, **extra)


def parse_admission_review(body: Any) -> AdmissionRequest:
    """Check the envelope and pull out the request; raises BadAdmissionReview with a clear reason."""
    if not isinstance(body, dict):
        raise BadAdmissionReview("body must be a JSON object (an admission.k8s.io/v1 AdmissionReview)")
    if body.get("kind") != "AdmissionReview":
        raise BadAdmissionReview('kind must be "AdmissionReview"')
    if body.get("apiVersion") != ADMISSION_API_VERSION:
        raise BadAdmissionReview(f'apiVersion must be "{ADMISSION_API_VERSION}"')
    request = body.get("request")
    if not isinstance(request, dict):
        raise BadAdmissionReview("request must be an object")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise BadAdmissionReview("request.uid must be a non-empty string")
    kind = request.get("kind")
    if not isinstance(kind, dict):
        kind = {}
    return AdmissionRequest(
        uid=uid,
        operation=text_of(request.get("operation")),
        namespace=text_of(request.get("namespace")),
        group=text_of(kind.get("group")),
        kind=text_of(kind.get("kind")),
        sub_resource=text_of(request.get("subResource")),
        name=text_of(request.get("name")),
        dry_run=request.get("dryRun") is True,
        object=request.get("object"),
        old_object=request.get("oldObject"),
    )


def admission_response(uid: str, decision: AdmissionDecision) -> dict[str, Any]:
    response: dict[str, Any] = {"uid": uid, "allowed": decision.allowed}
    if decision.patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(orjson.dumps(decision.patch)).decode()
    if not decision.allowed or decision.code is not None:
        status: dict[str, Any] = {}
        if decision.code is not None:
            status["code"] = decision.code
        if decision.message:
            status["message"] = decision.message
        if decision.reason:
            status["reason"] = decision.reason
        response["status"] = status
    if decision.warnings:
        # The API server truncates long warnings; keep each one readable.
        response["warnings"] = [w[:1024] for w in decision.warnings]
    return {"apiVersion": ADMISSION_API_VERSION, "kind": "AdmissionReview", "response": response}
