"""The AgentRuntime informer of the real `serve` against real watches of a real API server: changes
reach /mutate, an etcd compaction turns the resumed watch into 410 Gone and a fresh LIST, and an API
server that was SIGKILLed and restarted is followed within 5 s of its return."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import pytest

from tests.kube_cluster import (
    ApiServer,
    KubeCluster,
    Served,
    admission_review,
    agentruntime,
    injected_images,
    kube,
    mutate,
    serving,
    skill,
    wait_until,
)

pytestmark = kube

RECOVERY_SECONDS = 5.0


def images_for(served: Served, namespace: str, workload: str) -> list[str]:
    return injected_images(mutate(served, admission_review(namespace, workload)))


def restarts(served: Served, reason: str) -> float:
    return served.metric("skill_webhook_watch_restarts_total", reason=reason) or 0.0


def test_created_modified_and_deleted_agentruntimes_reach_admission(
    kube_cluster: KubeCluster, agentruntime_crd: str, kube_namespace: str, tmp_path: Path
) -> None:
    cluster, ns = kube_cluster, kube_namespace
    with serving(tmp_path, cluster.kubeconfig) as served:
        assert images_for(served, ns, "web") == []

        cluster.apply(agentruntime("writer", ns, "web", [skill("a", "ghcr.io/example/a:v1", "/skills/a")]))
        wait_until(lambda: images_for(served, ns, "web") == ["ghcr.io/example/a:v1"], RECOVERY_SECONDS, "ADDED applied")

        cluster.apply(agentruntime("writer", ns, "web", [skill("a", "ghcr.io/example/a:v2", "/skills/a"),
                                                          skill("b", "ghcr.io/example/b:v1", "/skills/b")]))
        wait_until(lambda: images_for(served, ns, "web") == ["ghcr.io/example/a:v2", "ghcr.io/example/b:v1"],
                   RECOVERY_SECONDS, "MODIFIED applied")

        cluster.kubectl("delete", "agentruntime", "writer", "-n", ns)
        wait_until(lambda: images_for(served, ns, "web") == [], RECOVERY_SECONDS, "DELETED applied")
        assert served.metric("skill_webhook_cache_synced") == 1


@pytest.fixture(scope="module")
def uncached_apiserver(kube_cluster: KubeCluster, agentruntime_crd: str) -> Iterator[ApiServer]:
    """A second API server on the same etcd and prefix (one cluster, two servers, as in HA) without the
    watch cache, so that watches are served by etcd itself and etcd's compaction decides what is gone.
    (The main server's watch cache keeps its own window of events regardless of etcd compaction.)"""
    server = kube_cluster.start_apiserver("kube-apiserver-uncached", "--watch-cache=false")
    yield server
    server.kill()


def test_a_compaction_turns_the_resumed_watch_into_410_and_a_fresh_list(
    kube_cluster: KubeCluster, uncached_apiserver: ApiServer, kube_namespace: str, tmp_path: Path
) -> None:
    cluster, ns, server = kube_cluster, kube_namespace, uncached_apiserver
    cluster.apply([agentruntime("stays", ns, "stays", [skill("s", "ghcr.io/example/s:v1", "/skills/s")]),
                   agentruntime("goes", ns, "goes", [skill("g", "ghcr.io/example/g:v1", "/skills/g")])])
    with serving(tmp_path, server.kubeconfig) as served:
        assert images_for(served, ns, "goes") == ["ghcr.io/example/g:v1"]
        expired_before = restarts(served, "expired")

        # Cut the watch (the server goes away), change things while the informer cannot see them, and
        # compact etcd past everything it saw: its resume point no longer exists.
        server.kill()
        cluster.kubectl("delete", "agentruntime", "goes", "-n", ns)
        cluster.apply(agentruntime("stays", ns, "stays", [skill("s", "ghcr.io/example/s:v2", "/skills/s")]))
        cluster.apply(agentruntime("comes", ns, "comes", [skill("c", "ghcr.io/example/c:v1", "/skills/c")]))
        cluster.compact_etcd()
        server.restart()

        wait_until(lambda: restarts(served, "expired") > expired_before, 20, "the resumed watch answered 410 Gone")
        # A deletion that happened while the watch was gone is only learnt from the fresh LIST.
        wait_until(lambda: images_for(served, ns, "goes") == [], RECOVERY_SECONDS, "the deleted one forgotten")
        assert images_for(served, ns, "stays") == ["ghcr.io/example/s:v2"]
        assert images_for(served, ns, "comes") == ["ghcr.io/example/c:v1"]


def test_after_the_api_server_is_killed_and_restarted_changes_take_effect_within_5_s(
    kube_cluster: KubeCluster, agentruntime_crd: str, kube_namespace: str, tmp_path: Path
) -> None:
    cluster, ns, server = kube_cluster, kube_namespace, kube_cluster.api
    assert server is not None
    cluster.apply(agentruntime("old", ns, "old", [skill("o", "ghcr.io/example/o:v1", "/skills/o")]))
    with serving(tmp_path, cluster.kubeconfig) as served:
        assert images_for(served, ns, "old") == ["ghcr.io/example/o:v1"]
        dropped_before = restarts(served, "dropped")

        server.kill()
        # An outage long enough for the informer's retries to back off several times.
        wait_until(lambda: restarts(served, "dropped") >= dropped_before + 4, 30, "four failed reconnections")
        server.restart()
        back = time.monotonic()

        cluster.apply(agentruntime("new", ns, "new", [skill("n", "ghcr.io/example/n:v1", "/skills/n")]))
        cluster.kubectl("delete", "agentruntime", "old", "-n", ns)
        wait_until(lambda: images_for(served, ns, "new") == ["ghcr.io/example/n:v1"],
                   RECOVERY_SECONDS - (time.monotonic() - back), "the new AgentRuntime in effect")
        wait_until(lambda: images_for(served, ns, "old") == [],
                   RECOVERY_SECONDS - (time.monotonic() - back), "the deleted AgentRuntime gone")
        assert time.monotonic() - back <= RECOVERY_SECONDS
