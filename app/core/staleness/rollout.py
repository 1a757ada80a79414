"""Which pods a rollout may evict, and the hint for rolling by hand (docs/skill-changes.md).

Pure: the reconciler evicts, `skill-webhook stale` prints the hint.
"""

from __future__ import annotations

from typing import NamedTuple

from app.core.model import AgentRuntime, api_group

# Controllers that bring an evicted pod back. A pod without one would be gone for good, a Job's pod
# would lose its batch work (and count against its backoff limit), a Sandbox pod holds one agent's state.
EVICTABLE_CONTROLLERS = frozenset({("apps", "ReplicaSet"), ("apps", "StatefulSet"), ("apps", "DaemonSet")})
# `kubectl rollout restart` works on these; the hint for the others is to delete the pods.
_RESTARTABLE = {"Deployment": "deployment", "StatefulSet": "statefulset", "DaemonSet": "daemonset"}


class OwnerRef(NamedTuple):
    """A pod's owner reference, as far as rolling it goes."""

    api_version: str
    kind: str
    name: str
    controller: bool


def evictable(owner: OwnerRef | None) -> bool:
    """Whether evicting a pod with this owner brings a replacement: its controller is one of the above."""
    return owner is not None and owner.controller and (api_group(owner.api_version), owner.kind) in EVICTABLE_CONTROLLERS


def roll_hint(runtime: AgentRuntime) -> str:
    """The command that rolls a workload by hand (kubectl writes the workload: that is the admin's call)."""
    namespace = runtime.metadata.namespace
    workload = runtime.workload
    if workload is not None and workload.kind in _RESTARTABLE:
        return f"kubectl rollout restart {_RESTARTABLE[workload.kind]}/{workload.name} -n {namespace}"
    return f"kubectl delete pod -n {namespace} <pod> (the pods of {workload.kind if workload else 'it'} are not restartable by kubectl rollout)"
