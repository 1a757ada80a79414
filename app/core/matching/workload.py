"""Which workload a pod belongs to, as AgentRuntime.spec.targetRef names it (docs/mutation.md)."""

from __future__ import annotations

from typing import Any

from app.core.model import WorkloadRef, api_group
from app.core.names import LABEL_POD_TEMPLATE_HASH
from app.core.objects import mapping_of

APPS = "apps"


def controller_owner(pod: dict[str, Any]) -> dict[str, Any] | None:
    """The owner reference with `controller: true`, else the first one, else None."""
    refs = mapping_of(pod.get("metadata")).get("ownerReferences")
    if not isinstance(refs, list):
        return None
    refs = [r for r in refs if isinstance(r, dict)]
    for ref in refs:
        if ref.get("controller") is True:
            return ref
    return refs[0] if refs else None


def resolve_workload(pod: dict[str, Any]) -> tuple[WorkloadRef, ...]:
    """The workloads a targetRef may name to select this pod, most specific last.

    A Deployment's pods are owned by a ReplicaSet named "<deployment>-<pod-template-hash>", so such a
    pod answers to both the Deployment and the ReplicaSet. The version is left out on purpose: an
    AgentRuntime written against apps/v1 must keep matching whatever version the owner reference
    carries.
    """
    metadata = mapping_of(pod.get("metadata"))
    owner = controller_owner(pod)
    if owner is None:
        name = metadata.get("name")
        return (WorkloadRef("", "Pod", name),) if isinstance(name, str) and name else ()
    kind, name = owner.get("kind"), owner.get("name")
    if not isinstance(kind, str) or not isinstance(name, str) or not kind or not name:
        return ()
    group = api_group(owner.get("apiVersion") if isinstance(owner.get("apiVersion"), str) else "")
    if group == APPS and kind == "ReplicaSet":
        template_hash = mapping_of(metadata.get("labels")).get(LABEL_POD_TEMPLATE_HASH)
        suffix = f"-{template_hash}" if isinstance(template_hash, str) and template_hash else None
        if suffix and name.endswith(suffix) and len(name) > len(suffix):
            return (WorkloadRef(APPS, "Deployment", name[: -len(suffix)]), WorkloadRef(APPS, kind, name))
    return (WorkloadRef(group, kind, name),)
