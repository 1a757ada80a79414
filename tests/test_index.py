"""AgentRuntimeIndex: lookup by workload, the oldest of several wins, writes visible at once, and a
lookup that costs the same with 10 or 10,000 AgentRuntimes cached (one dict read per workload)."""

from __future__ import annotations

import dataclasses

import pytest

from app.core.matching.index import NO_MATCH, AgentRuntimeIndex
from app.core.model import WorkloadRef
from app.core.mutation.review import MutationOptions, mutate_pod
from tests.builders import NAMESPACE, container, deployment_pod, index_of, pod, runtime, runtime_object, skill

DEPLOYMENT = WorkloadRef("apps", "Deployment", "my-agent")
REPLICA_SET = WorkloadRef("apps", "ReplicaSet", "my-agent-h1")


def test_lookup_finds_the_runtime_of_a_workload():
    index = index_of(runtime("rt"))
    found = index.lookup(NAMESPACE, [DEPLOYMENT])
    assert found.runtime is not None and found.runtime.metadata.name == "rt"
    assert found.shadowed == ()
    assert found.warnings == []


@pytest.mark.parametrize(
    ("namespace", "workloads"),
    [
        ("team-b", [DEPLOYMENT]),
        (NAMESPACE, [WorkloadRef("apps", "StatefulSet", "my-agent")]),
        (NAMESPACE, [WorkloadRef("example.com", "Deployment", "my-agent")]),
        (NAMESPACE, [WorkloadRef("apps", "Deployment", "other")]),
        (NAMESPACE, []),
    ],
    ids=["other-namespace", "other-kind", "other-group", "other-name", "no-workload"],
)
def test_lookup_misses(namespace, workloads):
    assert index_of(runtime("rt")).lookup(namespace, workloads) is NO_MATCH


def test_runtime_without_target_is_stored_but_never_matches():
    obj = runtime_object("loose")
    del obj["spec"]["targetRef"]
    index = index_of(obj)
    assert len(index) == 1 and index.get(NAMESPACE, "loose") is not None
    assert index.lookup(NAMESPACE, [DEPLOYMENT]) is NO_MATCH


@pytest.mark.parametrize(
    "runtimes",
    [
        [("b-newer", "2026-02-01T00:00:00Z"), ("a-older", "2026-01-01T00:00:00Z")],
        [("z-older", "2026-01-01T00:00:00Z"), ("a-newer", "2026-03-01T00:00:00Z")],
        [("b-same-time", "2026-01-01T00:00:00Z"), ("a-same-time", "2026-01-01T00:00:00Z")],
    ],
    ids=["by-creation-time", "creation-time-before-name", "name-breaks-ties"],
)
def test_oldest_wins_with_a_warning_naming_both(runtimes):
    index = index_of(*(runtime(name, created=created) for name, created in runtimes))
    expected = sorted(runtimes, key=lambda r: (r[1], r[0]))
    found = index.lookup(NAMESPACE, [DEPLOYMENT])
    assert found.runtime.metadata.name == expected[0][0]
    assert [r.metadata.name for r in found.shadowed] == [expected[1][0]]
    [warning] = found.warnings
    assert expected[0][0] in warning and expected[1][0] in warning


def test_deployment_and_replicaset_targets_compete_by_age():
    index = index_of(
        runtime("by-replicaset", kind="ReplicaSet", target="my-agent-h1", created="2026-01-01T00:00:00Z"),
        runtime("by-deployment", created="2026-01-02T00:00:00Z"),
    )
    found = index.lookup(NAMESPACE, [DEPLOYMENT, REPLICA_SET])
    assert found.runtime.metadata.name == "by-replicaset"
    assert [r.metadata.name for r in found.shadowed] == ["by-deployment"]


def test_two_runtimes_reach_the_pod_as_a_warning():
    index = index_of(
        runtime_object("second", skills=[skill("b")], created="2026-01-02T00:00:00Z"),
        runtime_object("first", skills=[skill("a")], created="2026-01-01T00:00:00Z"),
    )
    the_pod = pod(owners=[{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "my-agent-h1", "uid": "u",
                           "controller": True}], labels={"pod-template-hash": "h1"})
    decision = mutate_pod(the_pod, NAMESPACE, index, MutationOptions())
    assert decision.runtime == "first"
    assert decision.skills == ["a"]
    assert any('"first"' in w and '"second"' in w for w in decision.warnings)


def test_upsert_is_visible_at_once_and_replaces_the_old_target():
    index = AgentRuntimeIndex()
    index.upsert(runtime("rt"))
    assert index.lookup(NAMESPACE, [DEPLOYMENT]).runtime.metadata.name == "rt"
    index.upsert(runtime("rt", kind="StatefulSet", target="db"))
    assert index.lookup(NAMESPACE, [DEPLOYMENT]) is NO_MATCH
    assert index.lookup(NAMESPACE, [WorkloadRef("apps", "StatefulSet", "db")]).runtime.metadata.name == "rt"
    assert len(index) == 1


def test_upsert_of_new_skills_is_what_the_next_pod_gets():
    index = index_of(runtime("rt", skills=[skill("a")]))
    index.upsert(runtime("rt", skills=[skill("a"), skill("b")]))
    assert [s.name for s in index.lookup(NAMESPACE, [DEPLOYMENT]).runtime.spec.skills] == ["a", "b"]


def test_delete_is_visible_at_once_and_uncovers_the_next_oldest():
    index = index_of(runtime("old", created="2026-01-01T00:00:00Z"), runtime("new", created="2026-01-02T00:00:00Z"))
    removed = index.delete(NAMESPACE, "old")
    assert removed is not None and removed.metadata.name == "old"
    found = index.lookup(NAMESPACE, [DEPLOYMENT])
    assert found.runtime.metadata.name == "new" and found.shadowed == ()
    assert index.delete(NAMESPACE, "new") is not None
    assert index.lookup(NAMESPACE, [DEPLOYMENT]) is NO_MATCH
    assert index.delete(NAMESPACE, "new") is None
    assert len(index) == 0


def test_replace_all_swaps_the_whole_view():
    index = index_of(runtime("gone"), runtime("kept", kind="StatefulSet", target="db"))
    index.replace_all([runtime("kept", kind="Job", target="nightly", api_version="batch/v1"), runtime("fresh")])
    assert index.get(NAMESPACE, "gone") is None
    assert index.lookup(NAMESPACE, [WorkloadRef("apps", "StatefulSet", "db")]) is NO_MATCH
    assert index.lookup(NAMESPACE, [WorkloadRef("batch", "Job", "nightly")]).runtime.metadata.name == "kept"
    assert index.lookup(NAMESPACE, [DEPLOYMENT]).runtime.metadata.name == "fresh"
    assert sorted(r.metadata.name for r in index.all()) == ["fresh", "kept"]


def test_replace_all_keeps_the_oldest_first():
    index = AgentRuntimeIndex()
    index.replace_all([runtime("c", created="2026-03-01T00:00:00Z"), runtime("a", created="2026-01-01T00:00:00Z"),
                       runtime("b", created="2026-02-01T00:00:00Z")])
    assert [r.metadata.name for r in index.targeting(NAMESPACE, DEPLOYMENT)] == ["a", "b", "c"]


def test_writes_do_not_touch_the_synced_flag():
    index = AgentRuntimeIndex()
    index.replace_all([runtime("rt")])
    index.upsert(runtime("other"))
    assert not index.synced.is_set()


def test_index_writes_reach_the_next_pod_at_once():
    index = index_of()
    the_pod = deployment_pod(container("agent"))

    def mutate():
        return mutate_pod(the_pod, NAMESPACE, index, MutationOptions())

    assert mutate().patch is None
    index.upsert(runtime("rt", skills=[skill("alpha")]))
    assert mutate().skills == ["alpha"]
    index.upsert(runtime("rt", skills=[skill("alpha"), skill("beta")]))
    assert mutate().skills == ["alpha", "beta"]
    index.replace_all([runtime("other", skills=[skill("gamma")])])
    assert (mutate().runtime, mutate().skills) == ("other", ["gamma"])
    index.delete(NAMESPACE, "other")
    assert mutate().patch is None


class _CountingTargets(dict):
    """Stands in for the index's target map: counts reads and fails any walk over all entries."""

    gets = 0

    def get(self, key, default=None):
        type(self).gets += 1
        return super().get(key, default)

    def _walk(self, *args, **kwargs):
        raise AssertionError("lookup walked every AgentRuntime")

    __iter__ = keys = values = items = _walk


def test_lookup_reads_one_entry_per_workload_whatever_the_size():
    index = index_of(*(runtime(f"rt-{i}", target=f"agent-{i}") for i in range(10_000)))
    _CountingTargets.gets = 0
    index._by_target = _CountingTargets(index._by_target)
    found = index.lookup(NAMESPACE, [WorkloadRef("apps", "Deployment", "agent-4242"), REPLICA_SET])
    assert found.runtime.metadata.name == "rt-4242"
    assert _CountingTargets.gets == 2


def test_the_cache_keeps_only_what_admission_reads() -> None:
    from app.core.model import AgentRuntime

    obj = {
        "apiVersion": "agent.kagenti.dev/v1alpha1",
        "kind": "AgentRuntime",
        "metadata": {
            "name": "rt", "namespace": "team-a", "uid": "u1", "resourceVersion": "7",
            "creationTimestamp": "2026-01-01T00:00:00Z", "labels": {"a": "b"},
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{...}"},
            "managedFields": [{"manager": "kubectl"}],
        },
        "spec": {
            "type": "agent", "identity": {"spiffe": True},
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "d"},
            "skills": [{"name": "a", "image": "ghcr.io/x/a:1", "mountPath": "/s/a", "pullPolicy": "Always"}],
        },
        "status": {"conditions": []},
    }
    cached = AgentRuntime.for_cache(obj)
    full = AgentRuntime.from_object(obj)
    assert cached.metadata == type(full.metadata)(
        name="rt", namespace="team-a", uid="u1", resourceVersion="7", creationTimestamp="2026-01-01T00:00:00Z"
    )
    assert cached.spec.skills == full.spec.skills and cached.spec.targetRef == full.spec.targetRef
    assert cached.workload == full.workload and cached.age_key == full.age_key
    dumped = dataclasses.asdict(cached)
    assert "managedFields" not in dumped["metadata"] and dumped["metadata"]["annotations"] is None
    assert "identity" not in dumped["spec"] and "status" not in dumped


# -- readers never see half an update --------------------------------------------------------------


def test_lookups_never_miss_while_an_agentruntime_is_replaced_concurrently():
    """The informer thread applies MODIFIED events while the event loop answers admissions. A reader
    must find the AgentRuntime in every lookup, whichever version: a miss admits a pod without skills.
    (The defect: upsert unlinked the old version, then linked the new one.)"""
    import sys
    import threading

    index = index_of(runtime("rt", skills=[skill("s")]), runtime("other", target="other-agent"))
    versions = [runtime("rt", skills=[skill("s", image=f"ghcr.io/example/s:v{i}")]) for i in range(200)]
    stop = threading.Event()
    writes = 0

    def writer() -> None:
        nonlocal writes
        while not stop.is_set() and writes < 20_000:
            index.upsert(versions[writes % len(versions)])
            writes += 1

    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible, to hit every window there is
    thread = threading.Thread(target=writer)
    misses = lookups = 0
    try:
        thread.start()
        while thread.is_alive() and lookups < 200_000:
            found = index.lookup(NAMESPACE, [DEPLOYMENT, REPLICA_SET])
            lookups += 1
            if found.runtime is None or found.runtime.metadata.name != "rt" or found.shadowed:
                misses += 1
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(previous)
    assert writes > 1000 and lookups > 1000
    assert misses == 0, f"{misses} of {lookups} lookups saw half an update"


def test_a_runtime_moving_to_another_workload_is_found_at_one_of_them():
    index = index_of(runtime("rt", target="a"))
    moved = runtime("rt", target="b")
    index.upsert(moved)
    assert index.lookup(NAMESPACE, [WorkloadRef("apps", "Deployment", "a")]) is NO_MATCH
    assert index.lookup(NAMESPACE, [WorkloadRef("apps", "Deployment", "b")]).runtime is moved
    assert index.delete(NAMESPACE, "rt") is moved
    assert index.lookup(NAMESPACE, [WorkloadRef("apps", "Deployment", "b")]) is NO_MATCH


def test_listeners_hear_old_and_new_for_each_change_and_what_a_replace_all_changed() -> None:
    index = AgentRuntimeIndex()
    heard: list[tuple[str | None, str | None]] = []

    def name(r):
        return None if r is None else f"{r.metadata.name}:{r.spec.targetRef.name}"

    index.add_listener(lambda old, new: heard.append((name(old), name(new))))
    index.replace_all([runtime("a", target="web"), runtime("b", target="api")])
    assert sorted(heard, key=str) == [(None, "a:web"), (None, "b:api")]
    heard.clear()
    index.upsert(runtime("a", target="other"))
    index.delete(NAMESPACE, "b")
    index.delete(NAMESPACE, "b")  # gone already: nothing to hear
    assert heard == [("a:web", "a:other"), ("b:api", None)]
    heard.clear()
    # A new view: only what differs from the current one is announced, as a watch would have.
    index.replace_all([runtime("a", target="other"), runtime("c", target="web")])
    assert heard == [(None, "c:web")]
    heard.clear()
    index.replace_all([runtime("c", target="web")])
    assert heard == [("a:other", None)]
