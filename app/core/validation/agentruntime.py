"""Every validation rule for an AgentRuntime (docs/validation.md), all problems of an
object in one answer.

Types are checked by the shared pydantic model (app.core.model) piece by piece, so that one
ill-typed field does not hide the problems of the others; the semantic rules then run on whatever
is well-typed. Each problem is a FieldError rendered as the API server renders its own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterable, Protocol

from pydantic import ValidationError

from app.core.admission import AdmissionDecision, AdmissionRequest
from app.core.matching.index import AgentRuntimeIndex
from app.core.model import (
    AGENTRUNTIME_KIND,
    DEFAULT_AGENTRUNTIME_API,
    RUNTIME_TYPES,
    TARGET_KINDS,
    ObjectMeta,
    TargetRef,
    validated,
    WorkloadRef,
    api_group,
    is_agentruntime,
)
from app.core.names import DEFAULT_DOMAIN, Domain
from app.core.objects import text_of

from app.core.validation import fields as f
from app.core.validation.fields import FieldPath
from app.core.validation.findings import Findings, ValidationReport, short_value, type_name
from app.core.validation.images import check_image_facts
from app.core.validation.skills import DELIVERY_VALUES, SkillsSource, check_skills, skills_source

# The API group each target kind lives in; a targetRef in another group can never match a pod.
TARGET_KIND_GROUPS = {
    "Deployment": "apps",
    "StatefulSet": "apps",
    "DaemonSet": "apps",
    "ReplicaSet": "apps",
    "Job": "batch",
    "Pod": "",
    "Sandbox": "agents.x-k8s.io",
}
# How each kind's apiVersion is usually written, for the warning that says what to write instead.
TARGET_KIND_EXAMPLES = {
    "Deployment": "apps/v1",
    "StatefulSet": "apps/v1",
    "DaemonSet": "apps/v1",
    "ReplicaSet": "apps/v1",
    "Job": "batch/v1",
    "Pod": "v1",
    "Sandbox": "agents.x-k8s.io/v1alpha1",
}

# Schema order of the fields, so that problems are listed as the object reads (see field_order_key).
FIELD_ORDER: dict[str, dict[str, int]] = {
    "": {"apiVersion": 0, "kind": 1, "metadata": 2, "spec": 3},
    "metadata": {"name": 0, "generateName": 1, "namespace": 2},
    "spec": {"type": 0, "targetRef": 1, "skills": 2},
    "targetRef": {"apiVersion": 0, "kind": 1, "name": 2},
    "skills": {"name": 0, "image": 1, "path": 2, "mountPath": 3, "pullPolicy": 4},
}

_ROOT = FieldPath()
_METADATA = FieldPath(("metadata",))
_spec_root = FieldPath(("spec",))
_TARGET_REF = _spec_root.child("targetRef")
_TYPE, _API_VERSION, _KIND = _spec_root.child("type"), _ROOT.child("apiVersion"), _ROOT.child("kind")


@dataclass(frozen=True)
class ValidationOptions:
    registry_allow: tuple[str, ...] = ()
    agentruntime_api: str = DEFAULT_AGENTRUNTIME_API
    # Names the annotation that may hold the skills (`<domain>/skill-images`).
    domain: Domain = DEFAULT_DOMAIN
    # What the registry resolver knows (an app.core.mutation.image_policy.ImagePolicy); None: resolver off.
    # Never set for the cached verdict of stored objects (see app.core.validation.images).
    image_policy: Any = None
    # `--delivery`: an OCI artifact is an error only where its delivery is forced to image volumes.
    delivery: str = "auto"


DEFAULT_OPTIONS = ValidationOptions()


class Targets(Protocol):
    """What the one-per-workload rule reads: AgentRuntimeIndex, or several of them layered."""

    def targeting(self, namespace: str, workload: WorkloadRef) -> Iterable[Any]: ...


def stored_object_verdict(obj: Any, options: ValidationOptions = DEFAULT_OPTIONS) -> tuple[tuple[str, ...], SkillsSource]:
    """The errors of a stored AgentRuntime by the rules that need no other object (everything but
    one-per-workload), and where it declares its skills: for the cached objects, which may have been
    stored before the validating webhook existed, while it was down, or read from a file. Pass the object
    as stored (with its annotations: they may hold the skills). Never raises; no errors when it is valid."""
    findings, source = _check_object(obj, "UPDATE", None, options, None, namespace_hint="")
    # Only the errors decide a stored object's verdict: its warnings are not rendered at all.
    return findings.error_texts(_field_order(options.domain)), source


def validate_agentruntime(
    obj: Any,
    *,
    operation: str = "CREATE",
    index: Targets | None = None,
    options: ValidationOptions = DEFAULT_OPTIONS,
    old_object: Any = None,
) -> ValidationReport:
    """All problems of one AgentRuntime (a raw, possibly garbage, object); never raises.

    With an index, a CREATE that targets a workload another AgentRuntime of the namespace already
    targets is an error. An UPDATE never counts the object itself; it is an error only when the
    update moves targetRef onto a taken workload (`old_object` tells; without it every UPDATE is
    treated as a move), and a warning when the pair predates it, so that such objects stay editable."""
    findings, _ = _check_object(obj, operation, index, options, old_object, namespace_hint="")
    return findings.report(_field_order(options.domain))


def review_agentruntime(
    request: AdmissionRequest, index: AgentRuntimeIndex, options: ValidationOptions
) -> AdmissionDecision:
    """The /validate decision: CREATE/UPDATE of an AgentRuntime is validated; anything else passes."""
    if request.operation not in ("CREATE", "UPDATE") or request.sub_resource:
        return AdmissionDecision()
    if not _is_agentruntime_request(request, options):
        return AdmissionDecision()
    obj = request.object
    if not isinstance(obj, dict):
        return AdmissionDecision.deny(
            400, "request.object must be an AgentRuntime object", reason="BadRequest", runtime=request.name or None
        )
    meta = obj.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    name = name if isinstance(name, str) and name else request.name
    findings, _ = _check_object(obj, request.operation, index, options, request.old_object, request.namespace)
    report = findings.report(_field_order(options.domain))
    if report.allowed:
        return AdmissionDecision(warnings=report.warnings, runtime=name or None)
    # The API server's own wording for a rejected object.
    message = f"{AGENTRUNTIME_KIND} {json.dumps(name)} is invalid: " + "; ".join(report.errors)
    return AdmissionDecision.deny(422, message, reason="Invalid", warnings=report.warnings, runtime=name or None)


def _is_agentruntime_request(request: AdmissionRequest, options: ValidationOptions) -> bool:
    if request.kind:
        return request.kind == AGENTRUNTIME_KIND and request.group == api_group(options.agentruntime_api)
    # A hand-written review may leave request.kind out; the object then says what it is.
    return is_agentruntime(request.object, options.agentruntime_api)


def _check_object(
    obj: Any,
    operation: str,
    index: Targets | None,
    options: ValidationOptions,
    old_object: Any,
    namespace_hint: str,
) -> tuple[Findings, SkillsSource]:
    findings = Findings()
    if not isinstance(obj, dict):
        findings.add(f.invalid(_ROOT, type_name(obj), "must be an object (an AgentRuntime)"))
        return findings, skills_source(obj, options.domain)
    _check_type_meta(obj, options.agentruntime_api, findings)
    name, namespace = _check_metadata(obj.get("metadata"), findings)
    spec = obj.get("spec")
    if spec is None:
        findings.add(f.required(_spec_root))
    elif not isinstance(spec, dict):
        findings.add(f.invalid(_spec_root, type_name(spec), "must be an object"))
    else:
        runtime_type = spec.get("type")
        if _check_string(_TYPE, runtime_type, findings) and runtime_type not in RUNTIME_TYPES:
            findings.add(f.not_supported(_TYPE, runtime_type, RUNTIME_TYPES))
        target = _check_target_ref(spec.get("targetRef"), findings)
        if target is not None and index is not None:
            _check_target_conflict(target, namespace or namespace_hint, name, operation, index, old_object, findings)
    source = skills_source(obj, options.domain)
    findings.errors.extend(source.errors)
    check_skills(source.raw, findings, options.registry_allow, source.path)
    delivery = _check_delivery_annotation(obj, options.domain, findings)
    if options.image_policy is not None:
        check_image_facts(source.raw, source.path, findings, options.image_policy, delivery or options.delivery)
    return findings, source


def _check_delivery_annotation(obj: dict, domain: Domain, findings: Findings) -> str | None:
    """The `<domain>/skill-delivery` annotation's value when it is one (image or extract)."""
    metadata = obj.get("metadata")
    annotations = metadata.get("annotations") if isinstance(metadata, dict) else None
    value = annotations.get(domain.skill_delivery) if isinstance(annotations, dict) else None
    if value is None:
        return None
    if value not in DELIVERY_VALUES:
        path = _METADATA.child("annotations").key(domain.skill_delivery)
        findings.add(f.not_supported(path, value if isinstance(value, str) else short_value(value), DELIVERY_VALUES))
        return None
    return value


def _field_order(domain: Domain) -> dict[str, dict[str, int]]:
    # Skills declared in the annotation are listed in the order of spec.skills entries too.
    return {**FIELD_ORDER, domain.skill_images: FIELD_ORDER["skills"]}


def _check_type_meta(obj: dict, wanted_api: str, findings: Findings) -> None:
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    path = _API_VERSION
    if _check_string(path, api_version, findings) and api_group(api_version) != api_group(wanted_api):
        findings.add(f.not_supported(path, api_version, [wanted_api]))
    path = _KIND
    if _check_string(path, kind, findings) and kind != AGENTRUNTIME_KIND:
        findings.add(f.not_supported(path, kind, [AGENTRUNTIME_KIND]))


def _check_metadata(raw: Any, findings: Findings) -> tuple[str, str]:
    """(name, namespace), as far as they are usable."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        findings.add(f.invalid(_METADATA, type_name(raw), "must be an object"))
        return "", ""
    meta = findings.typed(ObjectMeta, raw, _METADATA)
    if meta is None:
        return text_of(raw.get("name")), text_of(raw.get("namespace"))
    if not meta.name and not text_of(raw.get("generateName")):
        findings.add(f.required(_METADATA.child("name"), "name or generateName is required"))
    return meta.name, meta.namespace


def _check_target_ref(raw: Any, findings: Findings) -> WorkloadRef | None:
    """The workload of the targetRef when it is complete and valid, else None."""
    if raw is None:
        findings.add(f.required(_TARGET_REF))
        return None
    if not isinstance(raw, dict):
        findings.add(f.invalid(_TARGET_REF, type_name(raw), "must be an object"))
        return None
    ref = findings.typed(TargetRef, raw, _TARGET_REF)
    complete = ref is not None
    for key in ("apiVersion", "kind", "name"):
        value = getattr(ref, key) if ref is not None else raw.get(key, "")
        if not isinstance(value, str):
            continue  # its type error is already reported
        if not value:
            findings.add(f.required(_TARGET_REF.child(key)))
            complete = False
        elif key == "kind" and value not in TARGET_KINDS:
            findings.add(f.not_supported(_TARGET_REF.child("kind"), value, TARGET_KINDS))
            complete = False
    if ref is None or not complete:
        return None
    problem = target_group_problem(ref.apiVersion, ref.kind)
    if problem is not None:
        findings.warn(_TARGET_REF.child("apiVersion"), problem)
    return ref.workload


def target_group_problem(api_version: str, kind: str) -> str | None:
    """Why a targetRef's apiVersion can never match a pod of `kind` (None when its group is right).
    Pods are matched by group and kind, so a wrong group silently matches nothing."""
    expected, group = TARGET_KIND_GROUPS[kind], api_group(api_version)
    if group == expected:
        return None
    example = json.dumps(TARGET_KIND_EXAMPLES[kind])
    written = json.dumps(api_version)
    if not expected and group == "core":
        problem = f"{written}: the core group is written as apiVersion v1, without a group (write {example})"
    elif not expected:
        problem = f'{written} is in API group "{group}", but {kind} is in the core group (write {example})'
    elif not group:
        problem = (
            f"{written} has no group part (it reads as version {written} of the core group), "
            f'but {kind} is in group "{expected}" (write {example})'
        )
    else:
        problem = f'{written} is in API group "{group}", but {kind} is in group "{expected}" (write {example})'
    return problem + ": this AgentRuntime will match no pod"


def _check_target_conflict(
    target: WorkloadRef,
    namespace: str,
    name: str,
    operation: str,
    index: Targets,
    old_object: Any,
    findings: Findings,
) -> None:
    # The object itself never counts: on UPDATE it is in the cache, and on CREATE a cached namesake
    # is a deleted object whose deletion the cache has not seen yet.
    others = [r.metadata.name for r in index.targeting(namespace, target) if r.key != (namespace, name)]
    if not others:
        return
    names = ", ".join(json.dumps(n) for n in others)
    verb = "already targets" if len(others) == 1 else "already target"
    plural = "" if len(others) == 1 else "s"
    what = f"{AGENTRUNTIME_KIND}{plural} {names} {verb} {target.kind} {json.dumps(target.name)} in namespace {json.dumps(namespace)}"
    if operation == "UPDATE" and _old_workload(old_object) == target:
        findings.warn(_TARGET_REF, f"{what}; pods of that workload get their skills from the oldest one only")
    else:
        findings.add(f.forbidden(_TARGET_REF, f"{what}; a workload takes its skills from one {AGENTRUNTIME_KIND}"))


def _check_string(path: FieldPath, value: Any, findings: Findings) -> bool:
    """Required and a string: True when there is a non-empty string to check further."""
    if value is None or value == "":
        findings.add(f.required(path))
        return False
    if not isinstance(value, str):
        findings.add(f.invalid(path, short_value(value), "must be a string"))
        return False
    return True


def _old_workload(old_object: Any) -> WorkloadRef | None:
    spec = old_object.get("spec") if isinstance(old_object, dict) else None
    raw = spec.get("targetRef") if isinstance(spec, dict) else None
    if not isinstance(raw, dict):
        return None
    try:
        return validated(TargetRef, raw).workload
    except ValidationError:
        return None
