"""The reconciler against the stand-in API server through the real kubernetes client: the gauge, Events
(rate-limited), rolling evictions one pod at a time per workload, disruption budgets, what is never
evicted, and that no workload object is ever written (see tests/reconciler_harness.py). Time is a fake
clock the tests step; only the stand-in's replacements turn Ready in real time."""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Iterator

import pytest

from app.core.names import DEFAULT_DOMAIN
from app.service.controllers.reconciler import Reconciler
from app.sources.clock import Clock
from tests.apiserver_standin import is_ready, owner_reference, pod
from tests.fake_clock import FakeClock
from tests.polling import wait_until
from tests.reconciler_harness import EVICT, NS, V1, V2, Harness, standin_cluster


@pytest.fixture
def cluster() -> Iterator[Harness]:
    with standin_cluster() as harness:
        yield harness


def stale_names(verdicts) -> set[str]:
    return {v.pod for v in verdicts}


# -- report ----------------------------------------------------------------------------------------


def test_report_publishes_the_gauge_and_one_event_per_interval(cluster: Harness) -> None:
    clock = FakeClock()
    cluster.runtime("writer", "web", [V1])
    cluster.runtime("steady", "api", [{**V1, "name": "api-skill", "mountPath": "/skills/api"}])
    cluster.pods_of("web-7d9f", 3, "7d9f")
    cluster.pods_of("api-5c4b", 2, "5c4b")
    reconciler = cluster.reconciler("report", clock=clock, event_interval=600)
    assert cluster.run(reconciler) == []
    assert cluster.gauge("writer") is None and cluster.events("SkillsChanged") == []

    cluster.runtime("writer", "web", [V2])
    stale = cluster.run(reconciler)
    assert stale_names(stale) == {"web-7d9f-p0", "web-7d9f-p1", "web-7d9f-p2"}
    assert stale[0].differences == ("blog-writer: ghcr.io/a/blog-writer:v1 -> ghcr.io/a/blog-writer:v2",)
    assert cluster.gauge("writer") == 3 and cluster.gauge("steady") is None
    [event] = cluster.events("SkillsChanged")
    writer = cluster.server.get(NS, "writer")
    assert event["involvedObject"] == {
        "apiVersion": "agent.kagenti.dev/v1alpha1", "kind": "AgentRuntime", "name": "writer", "namespace": NS,
        "uid": writer["metadata"]["uid"], "resourceVersion": writer["metadata"]["resourceVersion"]}
    assert event["type"] == "Normal" and event["metadata"]["namespace"] == NS
    assert "3 pod(s)" in event["message"]
    assert "skill-webhook stale -n team-a" in event["message"]
    assert "kubectl rollout restart deployment/web -n team-a" in event["message"]

    # More passes, and another change within the interval: still one Event.
    for _ in range(3):
        clock.advance(1)
        cluster.run(reconciler)
    cluster.runtime("writer", "web", [{**V2, "image": "ghcr.io/a/blog-writer:v3"}])
    clock.advance(1)
    cluster.run(reconciler)
    # A new stale pod (created while the webhook was away: no record) within the interval: no Event yet.
    cluster.server.on_pod_create = None
    cluster.server.create_pod(pod("web-7d9f-late", NS, owner=("ReplicaSet", "web-7d9f"),
                                  labels={"pod-template-hash": "7d9f", DEFAULT_DOMAIN.type_label: "agent"}))
    clock.advance(1)
    assert len(cluster.run(reconciler)) == 4
    assert cluster.gauge("writer") == 4
    assert len(cluster.events("SkillsChanged")) == 1
    # After the interval the new pod gets its Event.
    clock.advance(600)
    cluster.run(reconciler)
    assert len(cluster.events("SkillsChanged")) == 2
    assert "4 pod(s)" in cluster.events("SkillsChanged")[1]["message"]
    cluster.run(reconciler)
    assert len(cluster.events("SkillsChanged")) == 2
    cluster.assert_no_workload_writes()
    assert cluster.server.evictions == []


def test_gauge_series_follow_deletions_and_go_away_at_zero(cluster: Harness) -> None:
    cluster.runtime("writer", "web", [V1])
    cluster.pods_of("web-7d9f", 2, "7d9f")
    reconciler = cluster.reconciler("report")
    cluster.server.delete(NS, "writer")
    assert wait_until(lambda: cluster.index.get(NS, "writer") is None)
    stale = cluster.run(reconciler)
    assert {v.reason for v in stale} == {"runtime-gone"} and cluster.gauge("writer") == 2
    # No AgentRuntime to put an Event on.
    assert cluster.events("SkillsChanged") == []
    cluster.server.delete_pod(NS, "web-7d9f-p0")
    cluster.run(reconciler)
    assert cluster.gauge("writer") == 1
    cluster.server.delete_pod(NS, "web-7d9f-p1")
    cluster.run(reconciler)
    assert cluster.gauge("writer") is None
    assert 'skill_webhook_stale_pods{' not in _exposition(cluster)


def _exposition(cluster: Harness) -> str:
    from prometheus_client import generate_latest

    return generate_latest(cluster.metrics.registry).decode()


def test_an_agentruntime_created_later_makes_existing_pods_stale(cluster: Harness) -> None:
    cluster.pods_of("web-7d9f", 2, "7d9f")
    reconciler = cluster.reconciler("report")
    assert cluster.run(reconciler) == []
    cluster.runtime("writer", "web", [V1])
    stale = cluster.run(reconciler)
    assert {v.reason for v in stale} == {"no-record"} and cluster.gauge("writer") == 2


def test_only_the_leader_writes_events(cluster: Harness) -> None:
    cluster.runtime("writer", "web", [V1])
    cluster.pods_of("web-7d9f", 2, "7d9f")
    cluster.runtime("writer", "web", [V2])
    leading = [False]
    reconciler = cluster.reconciler("evict", is_leader=lambda: leading[0])
    assert len(cluster.run(reconciler)) == 2
    assert cluster.gauge("writer") == 2  # every replica keeps its gauge
    assert cluster.server.writes == []
    leading[0] = True
    cluster.run(reconciler)
    assert len(cluster.events("SkillsChanged")) == 1


# -- evict -----------------------------------------------------------------------------------------


def roll(cluster: Harness, reconciler: Reconciler, done, timeout: float = 20.0, check=None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cluster.run(reconciler)
        if check is not None:
            check()
        if done():
            return
        time.sleep(0.05)
    raise AssertionError(f"rollout did not finish; evictions so far {cluster.server.evictions}")


def unready(cluster: Harness, prefix: str) -> int:
    return sum(1 for p in cluster.server.pods()
               if p["metadata"]["name"].startswith(prefix) and (not is_ready(p) or p["metadata"].get("deletionTimestamp")))


def test_evict_rolls_opted_in_workloads_one_pod_at_a_time(cluster: Harness) -> None:
    cluster.runtime("writer", "web", [V1], annotations=EVICT)
    cluster.runtime("plain", "api", [{**V1, "name": "other", "mountPath": "/skills/other"}])
    cluster.runtime("solo-rt", "solo", [V1], kind="Pod", annotations=EVICT)
    cluster.pods_of("web-7d9f", 3, "7d9f")
    cluster.pods_of("api-5c4b", 2, "5c4b")
    cluster.server.create_pod(pod("solo", NS, labels={DEFAULT_DOMAIN.type_label: "agent"}))
    cluster.runtime("batch-rt", "batch", [V1], kind="Job", annotations=EVICT)
    cluster.server.create_pod(pod("batch-x1", NS, owner=owner_reference("Job", "batch", api_version="batch/v1"),
                                  labels={DEFAULT_DOMAIN.type_label: "agent"}))
    reconciler = cluster.reconciler("evict")
    assert cluster.run(reconciler) == []

    cluster.runtime("writer", "web", [V2], annotations=EVICT)
    cluster.runtime("plain", "api", [{**V2, "name": "other", "mountPath": "/skills/other"}])
    cluster.runtime("solo-rt", "solo", [V2], kind="Pod", annotations=EVICT)
    cluster.runtime("batch-rt", "batch", [V2], kind="Job", annotations=EVICT)

    def at_most_one_down() -> None:
        assert unready(cluster, "web-7d9f") <= 1

    def writer_current() -> bool:
        return cluster.gauge("writer") is None and len(cluster.server.evictions) == 3

    roll(cluster, reconciler, writer_current, check=at_most_one_down)
    assert sorted(cluster.server.evictions) == [(NS, "web-7d9f-p0"), (NS, "web-7d9f-p1"), (NS, "web-7d9f-p2")]
    assert cluster.evictions("evicted") == 3
    # The replacements came back with the new skills (the real mutation ran on them).
    web = [p for p in cluster.server.pods() if p["metadata"]["name"].startswith("web-7d9f")]
    assert len(web) == 3
    for p in web:
        assert json.loads(p["metadata"]["annotations"][DEFAULT_DOMAIN.skills_injected])["skills"] == {
            "blog-writer": "ghcr.io/a/blog-writer:v2"}
    # Not opted in, ownerless, a Job's pod: reported, never evicted.
    for _ in range(3):
        cluster.run(reconciler)
    assert cluster.gauge("plain") == 2 and cluster.gauge("solo-rt") == 1 and cluster.gauge("batch-rt") == 1
    assert len(cluster.server.evictions) == 3
    cluster.assert_no_workload_writes()


def test_a_disruption_budget_stops_the_rollout_and_it_resumes_later(cluster: Harness) -> None:
    cluster.runtime("writer", "web", [V1], annotations=EVICT)
    cluster.pods_of("web-7d9f", 2, "7d9f")
    cluster.server.set_pdb(NS, owner="web-7d9f", max_unavailable=0)
    clock = FakeClock()
    reconciler = cluster.reconciler("evict", clock=clock, retry_initial=10, retry_max=300)
    cluster.runtime("writer", "web", [V2], annotations=EVICT)
    cluster.run(reconciler)
    assert len(cluster.server.refused_evictions) == 1
    assert cluster.evictions("blocked") == 1
    [blocked] = cluster.events("RolloutBlocked")
    assert blocked["type"] == "Warning" and blocked["involvedObject"]["name"] == "writer"
    assert "disruption budget" in blocked["message"]
    assert cluster.metrics.registry.get_sample_value(
        "skill_webhook_rollouts_blocked", {"namespace": NS, "agentruntime": "writer"}) == 1
    # Within the back-off (10 s, of which at least half is waited) nothing is retried.
    clock.advance(4.9)
    cluster.run(reconciler)
    cluster.run(reconciler)
    assert len(cluster.server.refused_evictions) == 1
    # Still refused after the back-off: retried once more, no second RolloutBlocked Event in the interval.
    clock.advance(5.1)
    cluster.run(reconciler)
    assert len(cluster.server.refused_evictions) == 2
    assert len(cluster.events("RolloutBlocked")) == 1
    cluster.server.clear_pdbs()
    clock.advance(20)  # the second back-off: 10 to 20 s
    roll(cluster, reconciler, lambda: cluster.gauge("writer") is None and len(cluster.server.evictions) == 2)
    assert cluster.metrics.registry.get_sample_value(
        "skill_webhook_rollouts_blocked", {"namespace": NS, "agentruntime": "writer"}) is None
    assert sorted(cluster.server.evictions) == [(NS, "web-7d9f-p0"), (NS, "web-7d9f-p1")]
    cluster.assert_no_workload_writes()


def test_statefulset_pods_are_replaced_under_the_same_name(cluster: Harness) -> None:
    cluster.server.deletion_grace = 0.2
    cluster.runtime("db-rt", "db", [V1], kind="StatefulSet", annotations=EVICT)
    for i in range(2):
        cluster.server.create_pod(pod(f"db-{i}", NS, owner=("StatefulSet", "db"),
                                      labels={DEFAULT_DOMAIN.type_label: "agent"}))
    reconciler = cluster.reconciler("evict")
    cluster.runtime("db-rt", "db", [V2], kind="StatefulSet", annotations=EVICT)
    roll(cluster, reconciler, lambda: cluster.gauge("db-rt") is None and len(cluster.server.evictions) == 2,
         check=lambda: unready_ok(cluster))
    assert sorted(cluster.server.evictions) == [(NS, "db-0"), (NS, "db-1")]


def unready_ok(cluster: Harness) -> None:
    assert unready(cluster, "db-") <= 1


def test_the_replacement_wait_ends_at_the_rollout_timeout(cluster: Harness) -> None:
    cluster.server.replacement_ready_after = None  # replacements never turn Ready
    cluster.runtime("writer", "web", [V1], annotations=EVICT)
    cluster.pods_of("web-7d9f", 2, "7d9f")
    clock = FakeClock()
    reconciler = cluster.reconciler("evict", clock=clock, rollout_timeout=300)
    cluster.runtime("writer", "web", [V2], annotations=EVICT)
    cluster.run(reconciler)
    assert len(cluster.server.evictions) == 1
    for _ in range(3):
        clock.advance(99)
        cluster.run(reconciler)
    assert len(cluster.server.evictions) == 1  # still waiting for a Ready replacement
    clock.advance(3)
    cluster.run(reconciler)
    assert len(cluster.server.evictions) == 2


def test_report_mode_never_evicts(cluster: Harness) -> None:
    cluster.runtime("writer", "web", [V1], annotations=EVICT)
    cluster.pods_of("web-7d9f", 2, "7d9f")
    reconciler = cluster.reconciler("report")
    cluster.runtime("writer", "web", [V2], annotations=EVICT)
    for _ in range(3):
        cluster.run(reconciler)
    assert cluster.server.evictions == [] and cluster.gauge("writer") == 2
    assert [w.path for w in cluster.server.writes if "/eviction" in w.path] == []


def test_an_invalid_agentruntime_is_never_rolled(cluster: Harness) -> None:
    cluster.runtime("writer", "web", [V1], annotations=EVICT)
    cluster.pods_of("web-7d9f", 2, "7d9f")
    reconciler = cluster.reconciler("evict")
    # As the cache holds one that fails validation (its new pods would be denied).
    current = cluster.index.get(NS, "writer")
    invalid = dataclasses.replace(current, spec=dataclasses.replace(current.spec, skills=[]))
    cluster.index.upsert(invalid.with_problems(("spec.skills[0].mountPath: Invalid value",)))
    for _ in range(3):
        stale = cluster.run(reconciler)
    assert {v.reason for v in stale} == {"invalid-agentruntime"}
    assert cluster.server.evictions == []


# -- the worker, as serve runs it ----------------------------------------------------------------


def test_the_running_worker_follows_changes_through_its_handlers_alone(cluster: Harness) -> None:
    cluster.runtime("writer", "web", [V1], annotations=EVICT)
    cluster.runtime("other", "api", [{**V1, "name": "api-skill", "mountPath": "/skills/api"}])
    cluster.pods_of("web-7d9f", 2, "7d9f")
    cluster.server.create_pod(pod("api-5c4b-p0", "team-b", owner=("ReplicaSet", "api-5c4b"),
                                  labels={"pod-template-hash": "5c4b", DEFAULT_DOMAIN.type_label: "agent"}))
    cluster.settle()
    # Real time, and no resync after the first: only the handlers bring keys.
    reconciler = cluster.reconciler("evict", clock=Clock(), resync_every=3600, debounce=0.05)
    synced: list[tuple] = []
    sync = reconciler.sync
    reconciler.sync = lambda key: (synced.append(key), sync(key))[1]
    reconciler.start()
    try:
        assert wait_until(lambda: len(synced) >= 2)  # the first resync: both workloads
        # A heartbeat changes nothing judged: no key; a Ready flip: its workload's.
        heartbeat = cluster.server.get("team-b", "api-5c4b-p0", "pods")
        heartbeat["metadata"].setdefault("annotations", {})["example.com/heartbeat"] = "1"
        cluster.server.update(heartbeat, "pods")
        cluster.server.set_ready("team-b", "api-5c4b-p0", False)
        assert wait_until(lambda: len(synced) == 3)
        assert synced[-1][0] == "team-b" and synced[-1][1].name == "api"
        cluster.runtime("writer", "web", [V2], annotations=EVICT)
        assert wait_until(lambda: cluster.gauge("writer") is None and len(cluster.server.evictions) == 2,
                          timeout=20), cluster.server.evictions
        assert sorted(cluster.server.evictions) == [(NS, "web-7d9f-p0"), (NS, "web-7d9f-p1")]
        assert cluster.evictions("evicted") == 2
    finally:
        reconciler.stop()
    assert not any(thread.is_alive() for thread in reconciler._threads)
    cluster.assert_no_workload_writes()
