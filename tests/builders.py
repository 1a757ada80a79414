"""Builders shared by the mutation tests: pods, AgentRuntimes, indexes, admission requests, and the
checks every patch must pass (applies with jsonpatch, the result is a valid v1 Pod, a second run on
the result is a no-op). Plain functions, imported explicitly: no conftest fixtures."""

from __future__ import annotations

import base64

import copy
import functools
import json
from typing import Any, Iterable

import jsonpatch
import jsonschema
import kubernetes_validate
from kubernetes_validate.utils import schema_contents
from referencing import Registry, Resource

from app.core.admission import (
    AdmissionDecision,
    AdmissionRequest,
    admission_response,
    parse_admission_review,
)
from app.core.matching.index import AgentRuntimeIndex
from app.core.model import AgentRuntime
from app.core.mutation.review import MutationOptions, mutate_pod, review_pod

NAMESPACE = "team-a"
# The oldest Kubernetes whose Pod schema has image volumes with the fields we write (beta in 1.33).
KUBERNETES_VERSION = "1.33.0"
DEFAULT_OPTIONS = MutationOptions()


# -- AgentRuntimes ---------------------------------------------------------------------------------


def skill(name: str, image: str | None = None, mount_path: str | None = None, **extra: Any) -> dict[str, Any]:
    """One spec.skills entry; image and mountPath derive from the name unless given."""
    entry: dict[str, Any] = {
        "name": name,
        "image": image if image is not None else f"ghcr.io/example/skills/{name}:v1",
        "mountPath": mount_path if mount_path is not None else f"/agent/skills/{name}",
    }
    entry.update(extra)
    return entry


def runtime_object(
    name: str = "my-runtime",
    *,
    kind: str = "Deployment",
    target: str = "my-agent",
    api_version: str | None = None,
    skills: Iterable[dict[str, Any]] = (),
    namespace: str = NAMESPACE,
    created: str = "2026-01-01T00:00:00Z",
    runtime_type: str = "agent",
) -> dict[str, Any]:
    """An AgentRuntime as the API server would return it (a dict)."""
    if api_version is None:
        api_version = {"Pod": "v1", "Job": "batch/v1", "Sandbox": "agents.x-k8s.io/v1alpha1"}.get(kind, "apps/v1")
    return {
        "apiVersion": "agent.kagenti.dev/v1alpha1",
        "kind": "AgentRuntime",
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": created},
        "spec": {
            "type": runtime_type,
            "targetRef": {"apiVersion": api_version, "kind": kind, "name": target},
            "skills": [dict(s) for s in skills],
        },
    }


def runtime(name: str = "my-runtime", **kwargs: Any) -> AgentRuntime:
    return AgentRuntime.from_object(runtime_object(name, **kwargs))


def index_of(*runtimes: AgentRuntime | dict[str, Any], synced: bool = True) -> AgentRuntimeIndex:
    index = AgentRuntimeIndex()
    index.replace_all(r if isinstance(r, AgentRuntime) else AgentRuntime.from_object(r) for r in runtimes)
    if synced:
        index.synced.set()
    return index


# -- Pods ------------------------------------------------------------------------------------------


def container(name: str, image: str | None = None, **fields: Any) -> dict[str, Any]:
    return {"name": name, "image": image or f"registry.example.com/{name}:1.0", **fields}


def owner(kind: str, name: str, api_version: str = "apps/v1", controller: bool | None = True) -> dict[str, Any]:
    ref: dict[str, Any] = {
        "apiVersion": api_version,
        "kind": kind,
        "name": name,
        "uid": f"uid-{kind.lower()}-{name}",
    }
    if controller is not None:
        ref["controller"] = controller
    return ref


def pod(
    *containers: dict[str, Any],
    name: str | None = None,
    generate_name: str | None = None,
    owners: Iterable[dict[str, Any]] = (),
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    namespace: str | None = NAMESPACE,
    init_containers: Iterable[dict[str, Any]] = (),
    volumes: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A v1 Pod; fields left as None are absent (so tests can check whole arrays/maps are added)."""
    metadata: dict[str, Any] = {}
    if name is not None:
        metadata["name"] = name
    if generate_name is not None:
        metadata["generateName"] = generate_name
    if namespace is not None:
        metadata["namespace"] = namespace
    if labels is not None:
        metadata["labels"] = dict(labels)
    if annotations is not None:
        metadata["annotations"] = dict(annotations)
    owners = [dict(o) for o in owners]
    if owners:
        metadata["ownerReferences"] = owners
    spec: dict[str, Any] = {"containers": [dict(c) for c in containers] or [container("agent")]}
    init = [dict(c) for c in init_containers]
    if init:
        spec["initContainers"] = init
    if volumes is not None:
        spec["volumes"] = [dict(v) for v in volumes]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def deployment_pod(
    *containers: dict[str, Any], deployment: str = "my-agent", template_hash: str = "5d8f7c9b6", **kwargs: Any
) -> dict[str, Any]:
    """A pod as the ReplicaSet of Deployment `deployment` creates it."""
    labels = {"pod-template-hash": template_hash, **(kwargs.pop("labels", None) or {})}
    replica_set = f"{deployment}-{template_hash}"
    return pod(
        *containers, generate_name=f"{replica_set}-", owners=[owner("ReplicaSet", replica_set)], labels=labels, **kwargs
    )


# -- Admission -------------------------------------------------------------------------------------


def admission_review(
    obj: Any,
    *,
    namespace: str = NAMESPACE,
    operation: str = "CREATE",
    kind: tuple[str, str, str] = ("", "v1", "Pod"),
    sub_resource: str | None = None,
    dry_run: bool = False,
    uid: str = "3c1a6c2e-0000-4000-8000-000000000001",
) -> dict[str, Any]:
    """An admission.k8s.io/v1 AdmissionReview as the API server sends it to /mutate."""
    group, version, kind_name = kind
    request: dict[str, Any] = {
        "uid": uid,
        "kind": {"group": group, "version": version, "kind": kind_name},
        "resource": {"group": group, "version": version, "resource": kind_name.lower() + "s"},
        "namespace": namespace,
        "operation": operation,
        "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
        "object": obj,
        "oldObject": None,
        "dryRun": dry_run,
    }
    if sub_resource:
        request["subResource"] = sub_resource
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def admission_request(obj: Any, **kwargs: Any) -> AdmissionRequest:
    # Through JSON, as the webhook receives it: no Python object shared with the test survives.
    return parse_admission_review(json.loads(json.dumps(admission_review(obj, **kwargs))))


def review(
    obj: Any, index: AgentRuntimeIndex, options: MutationOptions = DEFAULT_OPTIONS, **kwargs: Any
) -> tuple[AdmissionDecision, dict[str, Any]]:
    """review_pod through the whole envelope: the decision and the AdmissionReview response it makes."""
    request = admission_request(obj, **kwargs)
    decision = review_pod(request, index, options)
    return decision, admission_response(request.uid, decision)


# -- Checks ----------------------------------------------------------------------------------------


def decode_patch(response: dict[str, Any]) -> list[dict[str, Any]]:
    """The JSON patch of an AdmissionReview response (empty when there is none)."""
    patch = response.get("response", response).get("patch")
    return json.loads(base64.b64decode(patch)) if patch else []



def apply_patch(obj: dict[str, Any], decision: AdmissionDecision) -> dict[str, Any]:
    """The object after the decision's patch, applied as the API server would (the input is untouched)."""
    return jsonpatch.apply_patch(obj, decision.patch or [], in_place=False)


def apply_and_recheck(
    obj: dict[str, Any],
    decision: AdmissionDecision,
    index: AgentRuntimeIndex,
    options: MutationOptions = DEFAULT_OPTIONS,
    namespace: str = NAMESPACE,
) -> dict[str, Any]:
    """Apply an allowed decision's patch to `obj`, then run the mutation again on the result (the API
    server's reinvocation): it must be allowed with an empty patch. Returns the patched object."""
    assert decision.allowed, f"expected an allowed decision, got {decision.code}: {decision.message}"
    patched = apply_patch(obj, decision)
    again = mutate_pod(copy.deepcopy(patched), namespace, index, options)
    assert again.allowed, f"reinvocation denied: {again.code}: {again.message}"
    assert not again.patch, f"reinvocation is not a no-op: {again.patch}"
    return patched


@functools.cache
def _pod_validator(version: str) -> jsonschema.protocols.Validator:
    """kubernetes-validate's own strict Pod schema, loaded once: its `validate()` re-reads the 4 MB
    definitions file on every call, which would dominate the property tests."""
    schema_dir = f"kubernetes-json-schema/v{version}-local-strict"
    schema = schema_contents(f"{schema_dir}/pod-v1.json", version)
    definitions = schema_contents(f"{schema_dir}/_definitions.json", version)
    registry = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.Draft202012Validator(schema, registry=registry)


def assert_valid_pod(obj: dict[str, Any], version: str = KUBERNETES_VERSION) -> None:
    """The object is a v1 Pod that the Kubernetes `version` schema accepts (strict: no unknown fields)."""
    errors = sorted(_pod_validator(version).iter_errors(obj), key=lambda e: list(e.path))
    assert not errors, "; ".join(f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors[:5])


def assert_valid_pod_public_api(obj: dict[str, Any], version: str = KUBERNETES_VERSION) -> None:
    """The same check through kubernetes-validate's public entry point (slower; for the golden cases)."""
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as err:
        raise AssertionError(f"{'.'.join(map(str, err.path))}: {err.message}") from err
