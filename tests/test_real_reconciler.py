"""The stale-pod reconciler of the real `serve` against a real API server: leader election on a real
coordination.k8s.io Lease (two processes, one holder, the other takes over when the holder is killed),
and rolling evictions through the real Eviction API that a real PodDisruptionBudget holds."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.kube_cluster import (
    KubeCluster,
    Served,
    agentruntime,
    deployment,
    kube,
    mark_ready,
    pods,
    registered,
    serving,
    skill,
    skill_volumes,
    wait_until,
)

pytestmark = kube

LEASE = "skill-webhook-reconciler"
# Fast leader election (client-go's rules: lease > renew deadline > retry period).
ELECTION = ("--lease-duration", "3s", "--renew-deadline", "2s", "--retry-period", "0.5s")


def lease(cluster: KubeCluster, namespace: str) -> dict | None:
    assert cluster.api is not None
    with cluster.api.http() as client:
        response = client.get(f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{LEASE}")
    if response.status_code == 404:
        return None
    response.raise_for_status()
    return response.json()


def holder(cluster: KubeCluster, namespace: str) -> str | None:
    found = lease(cluster, namespace)
    return (found or {}).get("spec", {}).get("holderIdentity") or None


def leader_gauge(served: Served) -> float | None:
    return served.metric("skill_webhook_leader")


def test_two_replicas_elect_one_leader_on_a_real_lease_and_the_other_takes_over(
    kube_cluster: KubeCluster, agentruntime_crd: str, kube_namespace: str, tmp_path: Path
) -> None:
    cluster, ns = kube_cluster, kube_namespace
    common = ("--reconcile", "report", "--leader-election-namespace", ns, *ELECTION)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    # Both start at once (each is waited for below), so that either may win the first election.
    with serving(tmp_path / "a", cluster.kubeconfig, *common, "--leader-election-identity", "replica-a", name="a",
                 wait_ready=False) as a, \
            serving(tmp_path / "b", cluster.kubeconfig, *common, "--leader-election-identity", "replica-b", name="b",
                    wait_ready=False) as b:
        replicas = {"replica-a": a, "replica-b": b}
        for served in replicas.values():
            wait_until(lambda: served.process.check_alive() is None and served.ready(), 30, f"{served.process.name} ready")
        first = wait_until(lambda: holder(cluster, ns), 15, "a holder of the Lease")
        assert first in replicas
        other = next(name for name in replicas if name != first)
        # Exactly one of them believes it leads, and it is the one the Lease names.
        wait_until(lambda: leader_gauge(replicas[first]) == 1, 10, f"{first} reporting itself the leader")
        assert leader_gauge(replicas[other]) == 0
        held = lease(cluster, ns)
        assert held is not None and held["spec"]["leaseDurationSeconds"] == 3

        # The holder dies without releasing the Lease: the other one takes it once it has lapsed.
        killed = time.monotonic()
        replicas[first].process.kill()
        wait_until(lambda: holder(cluster, ns) == other, 15, f"{other} holding the Lease")
        took = time.monotonic() - killed
        wait_until(lambda: leader_gauge(replicas[other]) == 1, 5, f"{other} reporting itself the leader")
        assert took >= 2.0, f"the Lease changed hands after {took:.1f}s: before it could have lapsed"
        renewed = lease(cluster, ns)
        assert renewed is not None and renewed["spec"].get("leaseTransitions", 0) >= 1


def pdb(name: str, namespace: str, app: str) -> dict:
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": name, "namespace": namespace},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": app}}}}


def disruptions_allowed(cluster: KubeCluster, namespace: str, name: str) -> int | None:
    status = cluster.get(f"/apis/policy/v1/namespaces/{namespace}/poddisruptionbudgets/{name}").get("status", {})
    return status.get("disruptionsAllowed")


def live_pods(cluster: KubeCluster, namespace: str, app: str) -> dict[str, dict]:
    return {p["metadata"]["name"]: p for p in pods(cluster, namespace, f"app={app}")
            if not p["metadata"].get("deletionTimestamp")}


def evictions(served: Served, result: str) -> float:
    return served.metric("skill_webhook_evictions_total", result=result) or 0.0


def test_stale_pods_are_evicted_through_the_eviction_api_and_a_pod_disruption_budget_holds(
    kube_controllers: KubeCluster, agentruntime_crd: str, kube_namespace: str, tmp_path: Path
) -> None:
    cluster, ns = kube_controllers, kube_namespace
    v1 = {"skill-a": "ghcr.io/example/a:v1"}
    v2 = {"skill-a": "ghcr.io/example/a:v2"}
    runtime = agentruntime("web", ns, "web", [skill("a", "ghcr.io/example/a:v1", "/skills/a")],
                           annotations={"kagenti.io/skills-rollout": "evict"})
    with serving(tmp_path, cluster.kubeconfig, "--reconcile", "evict", "--leader-election-namespace", ns,
                 "--leader-election-identity", "only", "--rollout-timeout", "1s", *ELECTION) as served, \
            registered(cluster, served, ns):
        cluster.apply(runtime)
        wait_until(lambda: served.metric("skill_webhook_agentruntimes_cached") == 1, 10, "the AgentRuntime cached")
        cluster.apply([deployment("web", ns, replicas=2), pdb("web", ns, "web")])
        originals = wait_until(lambda: (lambda p: p if len(p) == 2 else None)(live_pods(cluster, ns, "web")), 60,
                               "the Deployment's two pods")
        assert all(skill_volumes(p) == v1 for p in originals.values())
        for pod in originals.values():
            mark_ready(cluster, pod)
        wait_until(lambda: disruptions_allowed(cluster, ns, "web") == 1, 30, "the PDB allowing one disruption")
        wait_until(lambda: leader_gauge(served) == 1, 15, "the reconciler leading")

        # The skills change: both pods are stale now.
        runtime["spec"]["skills"][0]["image"] = "ghcr.io/example/a:v2"
        cluster.apply(runtime)

        # One pod at a time: the first is evicted, its replacement comes with the new skills.
        wait_until(lambda: evictions(served, "evicted") >= 1, 30, "the first eviction")
        remaining = wait_until(lambda: (lambda live: live if len(set(live) & set(originals)) == 1 else None)(
            live_pods(cluster, ns, "web")), 15, "exactly one original pod left")
        survivor = next(name for name in remaining if name in originals)
        replacement = wait_until(lambda: [p for n, p in live_pods(cluster, ns, "web").items() if n not in originals],
                                 30, "the replacement pod")[0]
        assert skill_volumes(replacement) == v2

        # The replacement is not Ready (no kubelet, and we do not say so yet): after --rollout-timeout the
        # reconciler tries the next pod, and the budget (minAvailable 1, one Ready pod) refuses: 429.
        wait_until(lambda: evictions(served, "blocked") >= 1, 30, "the eviction blocked by the PDB")
        assert survivor in live_pods(cluster, ns, "web")
        assert evictions(served, "evicted") == 1
        assert served.metric("skill_webhook_rollouts_blocked", namespace=ns, agentruntime="web") == 1

        # Once the replacement is Ready the budget allows it, and the rollout goes on by itself.
        mark_ready(cluster, replacement)
        wait_until(lambda: disruptions_allowed(cluster, ns, "web") == 1, 30, "the PDB allowing one disruption again")
        wait_until(lambda: survivor not in live_pods(cluster, ns, "web"), 45, "the second eviction, once allowed")
        final = wait_until(lambda: (lambda live: live if len(live) == 2 and not set(live) & set(originals) else None)(
            live_pods(cluster, ns, "web")), 30, "two replacement pods")
        assert all(skill_volumes(p) == v2 for p in final.values()), json.dumps(list(final))
        assert evictions(served, "evicted") == 2
