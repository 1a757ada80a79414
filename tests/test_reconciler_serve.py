"""Real `skill-webhook serve --kubeconfig K` processes against one stand-in API server: with
`--reconcile evict` only the Lease holder evicts and every stale pod is evicted exactly once; stopping
the leader hands over within the lease duration plus the retry period; `skill-webhook stale` lists the
pods before the rollout and nothing after; and no workload object is ever written (nothing at all with
`--reconcile off`)."""

from __future__ import annotations

import contextlib
import re
import signal
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from app.service.install.certs import write_cert_bundle
from tests.informer_harness import KUBECONFIG
from tests.polling import wait_until
from tests.reconciler_harness import EVICT, NS, V1, V2, WORKLOAD_PLURALS, Harness, standin_cluster
from tests.serve_process import Served, run_cli, serving

pytestmark = pytest.mark.process

LEASE, RETRY = 3.0, 0.5
ELECTION = ("--lease-duration", f"{LEASE}s", "--renew-deadline", "2s", "--retry-period", f"{RETRY}s",
            "--leader-election-namespace", "skill-webhook")


def metric(served: Served, name: str, labels: str = "") -> float:
    text = httpx.get(served.metrics_url + "/metrics", timeout=5).text
    found = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


@contextlib.contextmanager
def replica(tmp_path: Path, cluster: Harness, name: str, *extra: str) -> Iterator[Served]:
    home = tmp_path / name
    home.mkdir()
    certs = write_cert_bundle(home / "certs", "skill-webhook", "skill-webhook")
    with serving(home, "--source", "kube", "--kubeconfig", str(cluster.kubeconfig),
                 "--tls-cert-file", str(certs.tls_cert), "--tls-key-file", str(certs.tls_key),
                 "--image-volumes", "on", "--leader-election-identity", name, *extra) as served:
        yield served


@contextlib.contextmanager
def cluster_with_kubeconfig(tmp_path: Path) -> Iterator[Harness]:
    with standin_cluster(replacement_ready_after=0.5) as cluster:
        cluster.kubeconfig = tmp_path / "kubeconfig"
        cluster.kubeconfig.write_text(KUBECONFIG.format(url=cluster.server.url))
        yield cluster


def holder(cluster: Harness) -> str:
    leases = cluster.server.leases()
    return (leases[0].get("spec") or {}).get("holderIdentity") or "" if leases else ""


def stale_report(cluster: Harness) -> str:
    done = run_cli("stale", "--kubeconfig", str(cluster.kubeconfig), "-n", NS)
    assert done.returncode == 0, done.stderr
    return done.stdout


def roll_to(cluster: Harness, image_skills, expected_evictions: int, timeout: float = 60.0) -> None:
    cluster.runtime("writer", "web", image_skills, annotations=EVICT)
    assert wait_until(lambda: len(cluster.server.evictions) >= expected_evictions
                      and "no stale pods" in stale_report(cluster), timeout=timeout), (
        f"rollout did not finish: {cluster.server.evictions}")


def test_only_the_leader_evicts_and_a_stopped_leader_hands_over(tmp_path: Path) -> None:
    with cluster_with_kubeconfig(tmp_path) as cluster:
        cluster.runtime("writer", "web", [V1], annotations=EVICT)
        cluster.pods_of("web-7d9f", 4, "7d9f")
        args = ("--reconcile", "evict", *ELECTION)
        with replica(tmp_path, cluster, "replica-a", *args) as a, replica(tmp_path, cluster, "replica-b", *args) as b:
            replicas = {"replica-a": a, "replica-b": b}
            assert wait_until(lambda: holder(cluster) in replicas, timeout=15)
            leader_name = holder(cluster)
            leader, follower = replicas[leader_name], replicas[({*replicas} - {leader_name}).pop()]
            assert wait_until(lambda: metric(leader, "skill_webhook_leader") == 1, timeout=10)
            assert metric(follower, "skill_webhook_leader") == 0

            # Changed without the opt-in first: reported, not rolled.
            cluster.runtime("writer", "web", [V2])
            assert wait_until(lambda: metric(a, "skill_webhook_stale_pods", '{agentruntime="writer",namespace="team-a"}') == 4
                              and metric(b, "skill_webhook_stale_pods", '{agentruntime="writer",namespace="team-a"}') == 4,
                              timeout=15)
            assert wait_until(lambda: len(cluster.events("SkillsChanged")) == 1, timeout=10)
            before = stale_report(cluster)
            print("\n$ skill-webhook stale -n team-a   # before\n" + before)
            assert "4 stale pod(s) of 4 checked" in before and cluster.server.evictions == []
            roll_to(cluster, [V2], 4)
            after = stale_report(cluster)
            print("$ skill-webhook stale -n team-a   # after\n" + after)
            assert "no stale pods (4 agent pod(s) checked)" in after
            evicted = [name for _, name in cluster.server.evictions]
            assert sorted(evicted) == ["web-7d9f-p0", "web-7d9f-p1", "web-7d9f-p2", "web-7d9f-p3"]
            assert metric(leader, "skill_webhook_evictions_total", '{result="evicted"}') == 4
            assert metric(follower, "skill_webhook_evictions_total", '{result="evicted"}') == 0
            # Both replicas see the same cluster: the gauge is gone on both.
            assert 'skill_webhook_stale_pods{' not in httpx.get(follower.metrics_url + "/metrics").text

            # Stop the leader: the other takes over within the lease duration plus the retry period.
            stopped_at = time.monotonic()
            leader.process.send_signal(signal.SIGTERM)
            assert wait_until(lambda: metric(follower, "skill_webhook_leader") == 1, timeout=LEASE + RETRY + 10)
            handover = time.monotonic() - stopped_at
            print(f"handover after SIGTERM: {handover:.2f}s")
            assert handover <= LEASE + RETRY + 2.0  # slack for a loaded machine's scrape and scheduling
            assert holder(cluster) == ({*replicas} - {leader_name}).pop()

            # The new leader rolls the next change; every pod is still evicted once.
            roll_to(cluster, [{**V2, "image": "ghcr.io/a/blog-writer:v3"}], 8)
            evicted = [name for _, name in cluster.server.evictions]
            assert len(evicted) == 8 and len(set(evicted)) == 8
            assert metric(follower, "skill_webhook_evictions_total", '{result="evicted"}') == 4
        assert cluster.server.writes_to(*WORKLOAD_PLURALS) == []
        written = {re.sub(r"/namespaces/[^/]+/(\w+).*", r"/\1", w.path) for w in cluster.server.writes}
        assert written <= {"/api/v1/events", "/api/v1/pods", "/apis/coordination.k8s.io/v1/leases"}
        assert all("/eviction" in w.path for w in cluster.server.writes if "/pods" in w.path)


def test_a_killed_leader_is_replaced_after_its_lease_lapses(tmp_path: Path) -> None:
    with cluster_with_kubeconfig(tmp_path) as cluster:
        args = ("--reconcile", "report", *ELECTION)
        with replica(tmp_path, cluster, "replica-a", *args) as a, replica(tmp_path, cluster, "replica-b", *args) as b:
            replicas = {"replica-a": a, "replica-b": b}
            assert wait_until(lambda: holder(cluster) in replicas, timeout=15)
            leader_name = holder(cluster)
            other = replicas[({*replicas} - {leader_name}).pop()]
            killed_at = time.monotonic()
            replicas[leader_name].process.send_signal(signal.SIGKILL)  # no release: the Lease must lapse
            assert wait_until(lambda: metric(other, "skill_webhook_leader") == 1, timeout=LEASE + RETRY + 15)
            took = time.monotonic() - killed_at
            print(f"takeover after SIGKILL: {took:.2f}s")
            # Not before the lease lapsed (by the follower's clock), and not much after.
            assert LEASE * 0.5 <= took <= 2 * LEASE + 2 * RETRY + 3.0


def test_report_mode_writes_events_only_and_off_writes_nothing(tmp_path: Path) -> None:
    with cluster_with_kubeconfig(tmp_path) as cluster:
        cluster.runtime("writer", "web", [V1], annotations=EVICT)
        cluster.pods_of("web-7d9f", 2, "7d9f")
        cluster.runtime("writer", "web", [V2], annotations=EVICT)
        with replica(tmp_path, cluster, "off", "--reconcile", "off") as off:
            time.sleep(3)
            assert metric(off, "skill_webhook_leader") == 0
            assert 'skill_webhook_stale_pods{' not in httpx.get(off.metrics_url + "/metrics").text
        assert cluster.server.writes == []
        assert not any(path.startswith("/api/v1/pods") for path, _ in cluster.server.requests)

        with replica(tmp_path, cluster, "reporter", "--reconcile", "report", *ELECTION) as reporter:
            assert wait_until(lambda: metric(reporter, "skill_webhook_stale_pods",
                                             '{agentruntime="writer",namespace="team-a"}') == 2, timeout=20)
            assert wait_until(lambda: len(cluster.events("SkillsChanged")) == 1, timeout=10)
            time.sleep(2)
            assert len(cluster.events("SkillsChanged")) == 1
        assert cluster.server.evictions == []
        assert cluster.server.writes_to(*WORKLOAD_PLURALS) == []
        assert {w.path.split("/")[-1] if "leases" not in w.path else "leases" for w in cluster.server.writes} <= {
            "events", "leases", "skill-webhook-reconciler"}
