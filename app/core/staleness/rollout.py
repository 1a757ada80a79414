"""What rolling a pod needs to know about it, and the hint for rolling by hand (README "When skills change").

Pure: the reconciler evicts, `skill-webhook stale` prints the hint; both read pods through here.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from app.core.model import AgentRuntime, api_group
from app.core.matching.workload import controller_owner

# Controllers that bring an evicted pod back. A pod without one would be gone for good, a Job's pod
# would lose its batch work (and count against its backoff limit), a Sandbox pod holds one agent's state.
EVICTABLE_CONTROLLERS = frozenset({("apps", "ReplicaSet"), ("apps", "StatefulSet"), ("apps", "DaemonSet")})
# `kubectl rollout restart` works on these; the hint for the others is to delete the pods.
_RESTARTABLE = {"Deployment": "deployment", "StatefulSet": "statefulset", "DaemonSet": "daemonset"}


class PodFacts(NamedTuple):
    namespace: str
    name: str
    uid: str
    ready: bool
    deleting: bool
    # (apiVersion, kind, name, ...) of the controller owner reference; None without one.
    controller: tuple[Any, ...] | None


def pod_facts(pod: Any) -> PodFacts:
    """What the reconciler reads of a pod: a pod dict, or a compact informer record (with `namespace`,
    `name`, `uid`, `ready`, `deleting` and an `owner` tuple (apiVersion, kind, name, controller)), read
    without building a pod dict."""
    if not isinstance(pod, dict):
        owner = pod.owner
        return PodFacts(pod.namespace, pod.name, pod.uid, bool(pod.ready), bool(pod.deleting),
                        owner if owner is not None and owner[3] is True else None)
    metadata = pod.get("metadata") if isinstance(pod.get("metadata"), dict) else {}
    conditions = (pod.get("status") or {}).get("conditions") or []
    ready = any(isinstance(c, dict) and c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    owner = controller_owner(pod)
    controller = None
    if owner is not None and owner.get("controller") is True:
        controller = (str(owner.get("apiVersion") or ""), owner.get("kind"), owner.get("name"), True)
    return PodFacts(str(metadata.get("namespace") or ""), str(metadata.get("name") or ""),
                    str(metadata.get("uid") or ""), ready, bool(metadata.get("deletionTimestamp")), controller)


def pod_key(pod: Any) -> tuple[str, str]:
    """(namespace, name) without building the pod dict of a compact record."""
    if isinstance(pod, dict):
        metadata = pod.get("metadata") if isinstance(pod.get("metadata"), dict) else {}
        return (str(metadata.get("namespace") or ""), str(metadata.get("name") or ""))
    return (pod.namespace, pod.name)


def evictable(facts: PodFacts) -> bool:
    owner = facts.controller
    if owner is None:
        return False
    return (api_group(str(owner[0] or "")), owner[1]) in EVICTABLE_CONTROLLERS


def roll_hint(runtime: AgentRuntime) -> str:
    """The command that rolls a workload by hand (kubectl writes the workload: that is the admin's call)."""
    namespace = runtime.metadata.namespace
    workload = runtime.workload
    if workload is not None and workload.kind in _RESTARTABLE:
        return f"kubectl rollout restart {_RESTARTABLE[workload.kind]}/{workload.name} -n {namespace}"
    return f"kubectl delete pod -n {namespace} <pod> (the pods of {workload.kind if workload else 'it'} are not restartable by kubectl rollout)"
