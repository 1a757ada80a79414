"""The Pod informer against the stand-in API server, through the real `kubernetes` client: the label
selector applied by the server, compact summaries, the same faults as the AgentRuntime informer
(drop, 410, restart) converging within 5 seconds, and the memory 10,000 summaries take."""

from __future__ import annotations

import dataclasses
import gc
import json
import random
import threading
import time
import tracemalloc

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.core.names import DEFAULT_DOMAIN, Domain
from app.core.matching.workload import resolve_workload
from app.core.model import WorkloadRef
from app.core.staleness.rollout import OwnerRef
from app.sources.kube.pods import PodInformer, PodStore, PodSummary, pod_selector, summarize
from tests.apiserver_standin import StandInApiServer, owner_reference, pod
from tests.informer_harness import (  # noqa: F401 - server and metrics are the shared fixtures
    CONVERGENCE_SECONDS,
    RecordedMetrics,
    api_client_for,
    metrics,
    running_standin,
    server,
)
from tests.polling import wait_until

DOMAIN = DEFAULT_DOMAIN
TYPE = DOMAIN.type_label


@pytest.fixture
def make_informer(server, metrics):
    made: list[PodInformer] = []

    def make(**options) -> PodInformer:
        options.setdefault("backoff_initial", 0.05)
        options.setdefault("backoff_max", 0.5)
        options.setdefault("page_size", 10)
        options.setdefault("rng", random.Random(3))
        options.setdefault("domain", DOMAIN)
        informer = PodInformer(api_client_for(server), metrics=metrics.hooks, **options)
        made.append(informer)
        return informer

    yield make
    for informer in made:
        informer.stop()


def started(make_informer, server, **options) -> PodInformer:
    informer = make_informer(**options)
    informer.start()
    assert informer.synced.wait(CONVERGENCE_SECONDS), "first LIST did not complete"
    server.wait_for_watches(1)
    return informer


def agent_pod(name: str, namespace: str = "team-a", kind: str = "agent", **options) -> dict:
    labels = {TYPE: kind, "pod-template-hash": "abc", "app": "x", **options.pop("labels", {})}
    options.setdefault("owner", ("ReplicaSet", "web-abc"))
    return pod(name, namespace, labels=labels, **options)


def truth(server: StandInApiServer, domain: Domain = DOMAIN) -> dict:
    selected = [p for p in server.pods() if p["metadata"].get("labels", {}).get(domain.type_label) in ("agent", "tool")]
    return {(p["metadata"]["namespace"], p["metadata"]["name"]): summarize(p, domain) for p in selected}


def assert_converges(store: PodStore, server: StandInApiServer, domain: Domain = DOMAIN) -> None:
    def difference() -> str:
        expected, actual = truth(server, domain), {p.key: p for p in store.all()}
        return (f"missing {sorted(set(expected) - set(actual))}, extra {sorted(set(actual) - set(expected))}, "
                f"stale {sorted(k for k in set(expected) & set(actual) if expected[k] != actual[k])}")

    wait_until(lambda: {p.key: p for p in store.all()} == truth(server, domain),
               what="the store to equal the server's pods", explain=difference)


def populate(server: StandInApiServer, count: int) -> None:
    for i in range(count):
        server.create_pod(agent_pod(f"p-{i}", f"ns-{i % 3}", "agent" if i % 2 else "tool"))
        server.create_pod(pod(f"plain-{i}", f"ns-{i % 3}", labels={"app": "x"}))


# -- what is listed and kept ----------------------------------------------------------------------


def test_the_selector_is_applied_by_the_server(server, make_informer):
    populate(server, 12)
    server.create_pod(pod("other-type", labels={TYPE: "other"}))
    informer = started(make_informer, server)
    assert_converges(informer.store, server)
    assert len(informer.store) == 12

    lists = [q for path, q in server.requests if path == "/api/v1/pods"]
    assert lists and all(q["labelSelector"] == f"{TYPE} in (agent,tool)" for q in lists)
    assert informer.store.get("ns-0", "plain-0") is None and informer.store.get("team-a", "other-type") is None
    # A pod created, relabelled into and out of the selection, and deleted on the open watch.
    server.create_pod(pod("late", labels={"app": "x"}))
    late = server.pod("team-a", "late")
    late["metadata"]["labels"][TYPE] = "agent"
    server.update(late, "pods")
    assert wait_until(lambda: informer.store.get("team-a", "late") is not None)
    late = server.pod("team-a", "late")
    late["metadata"]["labels"][TYPE] = "none"
    server.update(late, "pods")
    assert wait_until(lambda: informer.store.get("team-a", "late") is None)
    server.delete_pod("ns-1", "p-1")
    assert_converges(informer.store, server)
    assert informer.store.get("ns-1", "p-1") is None


def test_a_rossoctl_domain_selects_its_own_label():
    rossoctl = Domain("rossoctl.io")
    assert pod_selector(rossoctl) == "rossoctl.io/type in (agent,tool)"
    standin = StandInApiServer().start()
    try:
        standin.create_pod(pod("old-domain", labels={TYPE: "agent"}))
        standin.create_pod(pod("new-domain", labels={"rossoctl.io/type": "tool", TYPE: "agent"}))
        informer = PodInformer(api_client_for(standin), rossoctl, backoff_initial=0.05)
        informer.start()
        try:
            assert informer.synced.wait(CONVERGENCE_SECONDS)
            assert [p.name for p in informer.store.all()] == ["new-domain"]
            assert informer.store.get("team-a", "new-domain").labels == (("rossoctl.io/type", "tool"),)
        finally:
            informer.stop()
    finally:
        standin.close()


def test_a_summary_keeps_only_what_staleness_needs(server, make_informer):
    record = json.dumps({"agentRuntime": "rt", "skills": {"s": "ghcr.io/x/s:v1"}, "fingerprint": "abc"})
    server.create_pod(agent_pod(
        "p",
        labels={DOMAIN.skills_inject_label: "enabled"},
        annotations={DOMAIN.skills_injected: record, "unrelated": "x" * 1000},
        owner_references=[owner_reference("Node", "n1", api_version="v1", controller=False),
                          owner_reference("ReplicaSet", "web-abc")],
        ready=False,
    ))
    informer = started(make_informer, server)
    summary = informer.store.get("team-a", "p")
    assert summary.labels == ((DOMAIN.skills_inject_label, "enabled"), (TYPE, "agent"), ("pod-template-hash", "abc"))
    assert summary.owner == OwnerRef("apps/v1", "ReplicaSet", "web-abc", True)
    assert summary.skills_injected == record
    assert (summary.ready, summary.deleting) == (False, False)
    assert summary.uid == server.pod("team-a", "p")["metadata"]["uid"]
    assert summary.workloads == (WorkloadRef("apps", "Deployment", "web"), WorkloadRef("apps", "ReplicaSet", "web-abc"))
    assert summary.workload == ("team-a", WorkloadRef("apps", "Deployment", "web"))

    server.set_ready("team-a", "p", True)
    assert wait_until(lambda: informer.store.get("team-a", "p").ready)
    server.deletion_grace = 0.5
    server.delete_pod("team-a", "p")
    assert wait_until(lambda: informer.store.get("team-a", "p").deleting)
    assert wait_until(lambda: informer.store.get("team-a", "p") is None)

    as_pod = summary.as_pod()
    assert resolve_workload(as_pod) == (WorkloadRef("apps", "Deployment", "web"), WorkloadRef("apps", "ReplicaSet", "web-abc"))
    assert as_pod["metadata"]["annotations"] == {DOMAIN.skills_injected: record}


def test_owner_falls_back_to_the_first_reference_and_as_pod_resolves_bare_pods():
    first = summarize(pod("p", owner_references=[owner_reference("Sandbox", "s", api_version="agents.x-k8s.io/v1", controller=False)]), DOMAIN)
    assert first.owner == OwnerRef("agents.x-k8s.io/v1", "Sandbox", "s", False)
    bare = summarize(pod("bare"), DOMAIN)
    assert bare.owner is None and "ownerReferences" not in bare.as_pod()["metadata"]
    assert resolve_workload(bare.as_pod()) == (WorkloadRef("", "Pod", "bare"),)
    assert summarize({"metadata": {"namespace": "x"}}, DOMAIN) is None
    assert summarize("not a pod", DOMAIN) is None


label_keys = st.sampled_from([TYPE, DOMAIN.skills_inject_label, "pod-template-hash", "app", "other.io/type", "kagenti.io.evil/x"])


@given(labels=st.dictionaries(label_keys, st.text(alphabet="abc", max_size=3), max_size=6),
       ready=st.booleans(), deleting=st.booleans())
def test_summaries_round_trip_through_as_pod(labels, ready, deleting):
    raw = pod("p", labels=labels, owner=("StatefulSet", "db"), ready=ready)
    if deleting:
        raw["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    summary = summarize(raw, DOMAIN)
    kept = {k: v for k, v in labels.items() if k.startswith("kagenti.io/") or k == "pod-template-hash"}
    assert dict(summary.labels) == kept
    assert (summary.ready, summary.deleting) == (ready, deleting)
    again = summarize(summary.as_pod(), DOMAIN)
    assert (again.labels, again.owner, again.skills_injected) == (summary.labels, summary.owner, summary.skills_injected)
    assert resolve_workload(summary.as_pod()) == resolve_workload(raw) == summary.workloads
    # Equal in everything judged: only a new resourceVersion (a heartbeat) is no change.
    assert dataclasses.replace(summary, resource_version="99") == summary
    assert dataclasses.replace(summary, ready=not ready) != summary


# -- faults: the same as the AgentRuntime informer's ----------------------------------------------


def test_dropped_watches_resume_without_loss(server, make_informer, metrics):
    populate(server, 6)
    informer = started(make_informer, server)
    for round_ in range(3):
        server.drop_watches(mid_event=round_ == 1)
        server.create_pod(agent_pod(f"during-{round_}"))
        server.set_ready("ns-0", "p-0", round_ % 2 == 0)
        assert_converges(informer.store, server)
    assert metrics.restarts["dropped"] >= 3
    assert metrics.syncs == [6]  # never re-listed: every watch resumed from the last version


def test_410_relists_and_reveals_what_the_watch_never_saw(server, make_informer, metrics):
    populate(server, 6)
    informer = started(make_informer, server)
    with server.unseen_changes():
        server.delete_pod("ns-1", "p-1")
        server.create_pod(agent_pod("unseen"))
        server.set_ready("ns-2", "p-2", False)
    server.expire_watches()
    assert_converges(informer.store, server)
    assert metrics.restarts["expired"] == 1 and len(metrics.syncs) == 2


def test_a_restarted_server_with_new_resource_versions_is_relisted(server, make_informer, metrics):
    populate(server, 6)
    informer = started(make_informer, server)
    server.restart()
    server.create_pod(agent_pod("after-restart"))
    assert_converges(informer.store, server)
    assert metrics.restarts["expired"] >= 1
    assert informer.store.get("ns-0", "p-0").resource_version == server.pod("ns-0", "p-0")["metadata"]["resourceVersion"]


def test_listeners_hear_pod_changes_including_a_relist_diff(server, make_informer):
    populate(server, 4)
    heard: list[tuple[str, bool, bool]] = []
    lock = threading.Lock()

    def listen(old, new):
        with lock:
            heard.append(((new or old).name, old is not None, new is not None))

    informer = make_informer(listeners=[listen])
    informer.start()
    assert informer.synced.wait(CONVERGENCE_SECONDS)
    server.wait_for_watches(1)
    heard.clear()
    server.set_ready("ns-0", "p-0", False)
    assert wait_until(lambda: heard == [("p-0", True, True)])
    heard.clear()
    with server.unseen_changes():
        server.delete_pod("ns-1", "p-1")
        server.create_pod(agent_pod("new"))
    server.expire_watches()
    assert wait_until(lambda: sorted(heard) == [("new", False, True), ("p-1", True, False)])


def test_stop_returns_promptly(server, make_informer):
    informer = started(make_informer, server)
    began = time.monotonic()
    informer.stop()
    assert time.monotonic() - began < 2 and not informer.reflector.thread.is_alive()


# -- the store --------------------------------------------------------------------------------------


def test_store_by_workload_and_len():
    store = PodStore()
    hashed = {"pod-template-hash": "abc"}
    summaries = [summarize(pod(f"web-abc-{i}", "ns-0", owner=("ReplicaSet", "web-abc"), labels=hashed), DOMAIN)
                 for i in range(3)]
    summaries += [summarize(pod("web-abc-0", "ns-1", owner=("ReplicaSet", "web-abc"), labels=hashed), DOMAIN),
                  summarize(pod("bare", "ns-0"), DOMAIN)]
    store.replace_all(summaries)
    deployment, replica_set = WorkloadRef("apps", "Deployment", "web"), WorkloadRef("apps", "ReplicaSet", "web-abc")
    assert len(store) == 5
    assert sorted(p.name for p in store.of_workload("ns-0", deployment)) == ["web-abc-0", "web-abc-1", "web-abc-2"]
    assert store.of_workload("ns-0", replica_set) == store.of_workload("ns-0", deployment)
    assert [p.name for p in store.of_workload("ns-0", WorkloadRef("", "Pod", "bare"))] == ["bare"]
    assert [p.namespace for p in store.of_workload("ns-1", deployment)] == ["ns-1"]
    replaced = summarize(pod("web-abc-0", "ns-0", ready=False, owner=("ReplicaSet", "web-abc"), labels=hashed), DOMAIN)
    assert store.upsert(replaced) == summaries[0]
    assert store.get("ns-0", "web-abc-0") is replaced and replaced in store.of_workload("ns-0", deployment)
    assert store.delete("ns-1", "web-abc-0") == summaries[3] and store.delete("ns-1", "web-abc-0") is None
    assert store.of_workload("ns-1", deployment) == [] and len(store) == 4


def test_readers_see_whole_states_while_a_writer_churns():
    """Updates are O(1) in place, so readers that iterate must never see a dict change under them: 10,000
    updates with readers iterating every view all the while, and not one error."""
    store = PodStore()
    store.replace_all([summarize(pod(f"p-{i}", f"ns-{i % 7}"), DOMAIN) for i in range(500)])
    stop = threading.Event()
    problems: list[str] = []
    reads = [0]

    def read() -> None:
        while not stop.is_set():
            try:
                for summary in store.all():
                    if not isinstance(summary, PodSummary):
                        problems.append(repr(summary))
                for summary in store.of_workload("ns-3", WorkloadRef("", "Pod", "p-3")):
                    if summary.key != ("ns-3", "p-3"):
                        problems.append(repr(summary))
                everything = store.all()
                if len({p.key for p in everything}) != len(everything):
                    problems.append("a listing holds a pod twice")
                len(store), store.get("ns-1", "p-1")
                reads[0] += 1
            except Exception as err:  # noqa: BLE001 - what this test looks for
                problems.append(f"{type(err).__name__}: {err}")

    readers = [threading.Thread(target=read) for _ in range(2)]
    for reader in readers:
        reader.start()
    for i in range(10_000):
        store.upsert(summarize(pod(f"p-{i % 700}", f"ns-{i % 7}", ready=i % 2 == 0), DOMAIN))
        if i % 3 == 0:
            store.delete(f"ns-{(i + 1) % 7}", f"p-{(i + 1) % 700}")
        if i % 1000 == 0:
            time.sleep(0.001)  # let the readers in often
    stop.set()
    for reader in readers:
        reader.join()
    assert problems == [] and reads[0] > 0
    assert len(store) == len(store.all())
    assert all(store.of_workload(p.namespace, p.workloads[0]) == [p] for p in store.all())


@pytest.mark.slow
def test_ten_thousand_summaries_stay_small():
    record = json.dumps({"agentRuntime": "rt", "container": "agent", "skills": {"s": "ghcr.io/x/s:v1"},
                         "fingerprint": "f" * 64})
    raw = [
        agent_pod(f"web-abc-{i:05d}", f"ns-{i % 50}", annotations={DOMAIN.skills_injected: record,
                                                                    "big": "x" * 2000})
        for i in range(10_000)
    ]
    for i, obj in enumerate(raw):
        obj["metadata"]["uid"] = f"{i:08d}-0000-0000-0000-000000000000"
        obj["metadata"]["resourceVersion"] = str(100_000 + i)
    wire = json.dumps(raw)
    del raw
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        # As a LIST delivers them: every string its own object; the raw pods are dropped afterwards, so
        # what stays is what the summaries hold on to.
        listed = json.loads(wire)
        store = PodStore()
        store.replace_all([summarize(obj, DOMAIN) for obj in listed])
        del listed
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    used = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert len(store) == 10_000
    assert used < 20 * 1024 * 1024, f"{used / 1e6:.1f} MB for 10,000 pod summaries"
    assert "big" not in store.all()[0].as_pod()["metadata"].get("annotations", {})
