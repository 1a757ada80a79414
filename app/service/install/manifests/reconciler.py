"""The stale-pod reconciler's RBAC, per mode: report (pods, events, one Lease), evict (+ eviction)."""

from __future__ import annotations

from app.service.install.manifests.common import (
    EVICT_DIR, EVICTOR_ROLE, LEADER_ELECTION_ROLE, LEASE_NAME, RECONCILER_DIR, RECONCILER_ROLE,
    Document, InstallOptions, binding, meta,
)


def reconciler_rbac(o: InstallOptions) -> list[Document]:
    """What `--reconcile report` needs: watch pods, write Events, hold one Lease."""
    return [
        Document(
            f"{RECONCILER_DIR}/rbac.yaml",
            "The stale-pod reconciler (--reconcile report, and evict with reconciler-evict/;\n"
            "docs/skill-changes.md): a pod informer over all namespaces (list + watch; the AgentRuntime's pods\n"
            "are matched in memory, never fetched one by one) and Events on AgentRuntimes (SkillsChanged,\n"
            "RolloutBlocked), through either Events API. Nothing here writes a workload or a pod.",
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": meta(RECONCILER_ROLE),
                "rules": [
                    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]},
                    {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create"]},
                ],
            },
        ),
        Document(f"{RECONCILER_DIR}/rbac.yaml", "", binding("ClusterRoleBinding", RECONCILER_ROLE, "ClusterRole", o)),
        Document(
            f"{RECONCILER_DIR}/rbac.yaml",
            f'Leader election: one Lease, "{LEASE_NAME}", in the webhook\'s own namespace. get and update\n'
            "are limited to that name. create cannot be: the authorizer decides a create before the object\n"
            "exists, from the URL, which names no object, so a rule with resourceNames never allows create.\n"
            "create is therefore granted on leases of this namespace only, where nothing else runs.",
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": meta(LEADER_ELECTION_ROLE, o.namespace),
                "rules": [
                    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
                    {
                        "apiGroups": ["coordination.k8s.io"],
                        "resources": ["leases"],
                        "resourceNames": [LEASE_NAME],
                        "verbs": ["get", "update"],
                    },
                ],
            },
        ),
        Document(
            f"{RECONCILER_DIR}/rbac.yaml",
            "",
            binding("RoleBinding", LEADER_ELECTION_ROLE, "Role", o, namespace=o.namespace),
        ),
    ]


def evictor_rbac(o: InstallOptions) -> list[Document]:
    """What `--reconcile evict` adds: the Eviction API, so PodDisruptionBudgets hold."""
    return [
        Document(
            f"{EVICT_DIR}/rbac.yaml",
            "--reconcile evict only: evict stale pods of opted-in AgentRuntimes through the Eviction API\n"
            "(create pods/eviction), so PodDisruptionBudgets hold. No delete on pods: an eviction is the\n"
            "only way this webhook removes a pod. A separate role, so report mode never holds it.",
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": meta(EVICTOR_ROLE),
                "rules": [{"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]}],
            },
        ),
        Document(f"{EVICT_DIR}/rbac.yaml", "", binding("ClusterRoleBinding", EVICTOR_ROLE, "ClusterRole", o)),
    ]


def reconciler_documents(o: InstallOptions) -> list[Document]:
    """The reconciler RBAC the mode needs: none for off, report's for report, both for evict."""
    if o.reconcile == "off":
        return []
    return reconciler_rbac(o) + (evictor_rbac(o) if o.reconcile == "evict" else [])


