"""The stand-in API server's pods, evictions, events and leases, through the real `kubernetes` client
(CoreV1Api, EventsV1Api, CoordinationV1Api): what the reconciler and leader election tests rely on."""

from __future__ import annotations

import datetime
import json

import kubernetes.client
import pytest
from hypothesis import given
from hypothesis import strategies as st
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from tests.apiserver_standin import (
    PDB_MESSAGE,
    StandInApiServer,
    agentruntime,
    is_ready,
    parse_selector,
    pod,
    selector_matches,
)
from tests.informer_harness import api_client_for
from tests.polling import wait_until

TYPE = "kagenti.io/type"


@pytest.fixture
def server():
    standin = StandInApiServer(replacement_ready_after=0.3).start()
    try:
        yield standin
    finally:
        standin.close()


@pytest.fixture
def core(server) -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(api_client_for(server))


def names(pod_list) -> list[str]:
    return sorted(p.metadata.name for p in pod_list.items)


def status_of(exc: ApiException) -> dict:
    return json.loads(exc.body)


# -- pods: list, selectors, watch -----------------------------------------------------------------


def test_pods_list_across_namespaces_with_label_selectors(server, core):
    server.create_pod(pod("agent-1", "a", labels={TYPE: "agent", "app": "x"}))
    server.create_pod(pod("tool-1", "b", labels={TYPE: "tool"}))
    server.create_pod(pod("other-1", "b", labels={TYPE: "other"}))
    server.create_pod(pod("plain", "a", labels={"app": "x"}))

    assert names(core.list_pod_for_all_namespaces()) == ["agent-1", "other-1", "plain", "tool-1"]
    assert names(core.list_pod_for_all_namespaces(label_selector=f"{TYPE} in (agent,tool)")) == ["agent-1", "tool-1"]
    assert names(core.list_pod_for_all_namespaces(label_selector=f"{TYPE} notin (agent,tool)")) == ["other-1", "plain"]
    assert names(core.list_pod_for_all_namespaces(label_selector=TYPE)) == ["agent-1", "other-1", "tool-1"]
    assert names(core.list_pod_for_all_namespaces(label_selector=f"{TYPE}=agent,app=x")) == ["agent-1"]
    assert names(core.list_pod_for_all_namespaces(label_selector=f"{TYPE}!=agent")) == ["other-1", "plain", "tool-1"]
    assert names(core.list_namespaced_pod("a")) == ["agent-1", "plain"]
    with pytest.raises(ApiException) as refused:
        core.list_pod_for_all_namespaces(label_selector="in in in (")
    assert refused.value.status == 400


def test_pod_lists_paginate_with_continue(server, core):
    for i in range(7):
        server.create_pod(pod(f"p-{i}", labels={TYPE: "agent"}))
    seen, token, pages = [], None, 0
    while True:
        page = core.list_pod_for_all_namespaces(label_selector=TYPE, limit=3, _continue=token)
        seen += [p.metadata.name for p in page.items]
        pages += 1
        token = page.metadata._continue
        if not token:
            break
    assert pages == 3 and sorted(seen) == [f"p-{i}" for i in range(7)]


def watch_events(core, **options) -> list[tuple[str, str]]:
    response = core.list_pod_for_all_namespaces(watch=True, _preload_content=False, timeout_seconds=1, **options)
    try:
        return [(e["type"], e["object"]["metadata"].get("name", "")) for e in map(json.loads, iter_resp_lines(response))]
    finally:
        response.release_conn()


@pytest.mark.slow
def test_a_selector_watch_sees_objects_entering_and_leaving_the_selection(server, core):
    start = server.resource_version
    server.create_pod(pod("p", labels={TYPE: "agent"}))
    server.create_pod(pod("q", labels={"app": "unrelated"}))
    relabelled = server.pod("team-a", "p")
    relabelled["metadata"]["labels"] = {TYPE: "gone"}
    server.update(relabelled, "pods")
    back = server.pod("team-a", "q")
    back["metadata"]["labels"] = {TYPE: "tool"}
    server.update(back, "pods")
    server.set_ready("team-a", "q", False)
    server.delete_pod("team-a", "q")

    events = watch_events(core, label_selector=f"{TYPE} in (agent,tool)", resource_version=str(start))
    assert events == [("ADDED", "p"), ("DELETED", "p"), ("ADDED", "q"), ("MODIFIED", "q"), ("DELETED", "q")]


def test_pods_are_created_read_and_deleted_through_namespaced_paths(server, core):
    body = kubernetes.client.V1Pod(
        metadata=kubernetes.client.V1ObjectMeta(generate_name="web-", labels={TYPE: "agent"}),
        spec=kubernetes.client.V1PodSpec(containers=[kubernetes.client.V1Container(name="c", image="busybox")]),
    )
    created = core.create_namespaced_pod("team-b", body)
    assert created.metadata.name.startswith("web-") and created.metadata.namespace == "team-b"
    assert created.metadata.uid and created.metadata.resource_version

    read = core.read_namespaced_pod(created.metadata.name, "team-b")
    assert read.metadata.uid == created.metadata.uid
    core.delete_namespaced_pod(created.metadata.name, "team-b")
    assert server.pods() == []
    with pytest.raises(ApiException) as missing:
        core.read_namespaced_pod(created.metadata.name, "team-b")
    assert missing.value.status == 404 and status_of(missing.value)["reason"] == "NotFound"


def test_ready_condition_and_graceful_deletion(server, core):
    server.deletion_grace = 0.3
    server.create_pod(pod("p", ready=False))
    assert not is_ready(server.pod("team-a", "p"))
    server.set_ready("team-a", "p", True)
    ready = [c for c in core.read_namespaced_pod("p", "team-a").status.conditions if c.type == "Ready"]
    assert [c.status for c in ready] == ["True"]

    core.delete_namespaced_pod("p", "team-a")
    terminating = core.read_namespaced_pod("p", "team-a")
    assert terminating.metadata.deletion_timestamp is not None
    assert wait_until(lambda: server.pod("team-a", "p") is None)


def test_on_pod_create_sees_every_created_pod(server, core):
    seen = []

    def mutate(obj):
        seen.append(obj["metadata"].get("name") or obj["metadata"].get("generateName"))
        obj["metadata"].setdefault("annotations", {})["mutated"] = "yes"
        return obj

    server.on_pod_create = mutate
    server.create_pod(pod("direct", owner=("ReplicaSet", "web-abc")))
    core.create_namespaced_pod("team-a", {"metadata": {"name": "posted"}, "spec": {"containers": [{"name": "c", "image": "x"}]}})
    core.create_namespaced_pod_eviction("direct", "team-a", {"metadata": {"name": "direct", "namespace": "team-a"}})
    assert wait_until(lambda: len(server.pods()) == 2 and len(seen) == 3)
    assert seen[:2] == ["direct", "posted"] and seen[2] == "web-abc-"
    assert all(p["metadata"]["annotations"]["mutated"] == "yes" for p in server.pods())

    def refuse(obj):
        raise ValueError("denied by the test")

    server.on_pod_create = refuse
    with pytest.raises(ApiException) as refused:
        core.create_namespaced_pod("team-a", {"metadata": {"name": "refused"}, "spec": {"containers": []}})
    assert refused.value.status == 400 and "denied by the test" in status_of(refused.value)["message"]


# -- evictions --------------------------------------------------------------------------------------


def evict(core, name: str, namespace: str = "team-a"):
    body = kubernetes.client.V1Eviction(metadata=kubernetes.client.V1ObjectMeta(name=name, namespace=namespace))
    return core.create_namespaced_pod_eviction(name, namespace, body)


@pytest.mark.parametrize("kind", ["ReplicaSet", "DaemonSet"])
def test_eviction_deletes_the_pod_and_its_controller_makes_a_replacement_that_turns_ready(server, core, kind):
    original = server.create_pod(pod("web-abc-1", labels={TYPE: "agent", "pod-template-hash": "abc"}, owner=(kind, "web-abc")))
    evict(core, "web-abc-1")
    assert server.evictions == [("team-a", "web-abc-1")]
    assert wait_until(lambda: len(server.pods()) == 1 and server.pods()[0]["metadata"]["name"] != "web-abc-1")
    replacement = server.pods()[0]
    assert replacement["metadata"]["name"].startswith("web-abc-")
    assert replacement["metadata"]["labels"] == original["metadata"]["labels"]
    assert replacement["metadata"]["ownerReferences"] == original["metadata"]["ownerReferences"]
    assert replacement["metadata"]["uid"] != original["metadata"]["uid"]
    assert not is_ready(replacement)
    assert wait_until(lambda: is_ready(server.pods()[0]))


def test_a_statefulset_pod_comes_back_under_its_own_name(server, core):
    server.deletion_grace = 0.2
    original = server.create_pod(pod("db-0", owner=("StatefulSet", "db")))
    evict(core, "db-0")
    assert server.pod("team-a", "db-0")["metadata"].get("deletionTimestamp")
    assert wait_until(lambda: (p := server.pod("team-a", "db-0")) is not None and p["metadata"]["uid"] != original["metadata"]["uid"])
    assert wait_until(lambda: is_ready(server.pod("team-a", "db-0")))


@pytest.mark.parametrize(
    "owner",
    [None, ("Job", "batch-1"), {"apiVersion": "agents.x-k8s.io/v1alpha1", "kind": "Sandbox", "name": "s", "controller": True}],
)
def test_evicted_pods_without_a_replacing_controller_do_not_come_back(server, core, owner):
    server.create_pod(pod("lonely", owner=owner))
    evict(core, "lonely")
    wait_until(server.settled, what="the stand-in to finish what the eviction started")
    assert server.pods() == []


def test_a_disruption_budget_answers_429_like_the_real_server(server, core):
    for i in range(3):
        server.create_pod(pod(f"web-abc-{i}", owner=("ReplicaSet", "web-abc")))
    server.create_pod(pod("other-0", owner=("ReplicaSet", "other")))
    server.set_pdb("team-a", owner="web-abc", max_unavailable=1)

    evict(core, "web-abc-0")  # all healthy: one may go
    with pytest.raises(ApiException) as refused:
        evict(core, "web-abc-1")  # the replacement is not Ready yet
    assert refused.value.status == 429
    answer = status_of(refused.value)
    assert answer["reason"] == "TooManyRequests" and answer["message"] == PDB_MESSAGE
    assert answer["details"]["causes"][0]["reason"] == "DisruptionBudget"
    assert server.refused_evictions == [("team-a", "web-abc-1")]
    evict(core, "other-0")  # another workload is not covered

    assert wait_until(lambda: len(server.pods()) == 4 and all(is_ready(p) for p in server.pods()))
    evict(core, "web-abc-1")  # healthy again

    server.clear_pdbs()
    server.set_pdb("team-a", pod="web-abc-2")  # max_unavailable 0: never
    with pytest.raises(ApiException) as blocked:
        evict(core, "web-abc-2")
    assert blocked.value.status == 429
    with pytest.raises(ApiException) as missing:
        evict(core, "no-such-pod")
    assert missing.value.status == 404


# -- events ----------------------------------------------------------------------------------------


def test_core_and_events_k8s_io_events_are_stored(server):
    client = api_client_for(server)
    core_event = kubernetes.client.CoreV1Event(
        metadata=kubernetes.client.V1ObjectMeta(generate_name="rt.", namespace="team-a"),
        involved_object=kubernetes.client.V1ObjectReference(
            api_version="agent.kagenti.dev/v1alpha1", kind="AgentRuntime", name="rt", namespace="team-a"
        ),
        reason="SkillsChanged",
        message="2 pods run old skills",
        type="Normal",
    )
    kubernetes.client.CoreV1Api(client).create_namespaced_event("team-a", core_event)
    new_event = kubernetes.client.EventsV1Event(
        metadata=kubernetes.client.V1ObjectMeta(name="rt.2", namespace="team-a"),
        event_time=datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc),
        reason="RolloutBlocked",
        action="Evict",
        note="a disruption budget",
        type="Warning",
        reporting_controller="skill-webhook",
        reporting_instance="skill-webhook-0",
    )
    kubernetes.client.EventsV1Api(client).create_namespaced_event("team-a", new_event)
    events = server.events()
    assert [e["reason"] for e in events] == ["SkillsChanged", "RolloutBlocked"]
    assert events[0]["involvedObject"]["kind"] == "AgentRuntime" and events[0]["metadata"]["name"].startswith("rt.")
    listed = kubernetes.client.CoreV1Api(client).list_namespaced_event("team-a")
    assert [e.reason for e in listed.items] == ["SkillsChanged"]


# -- leases ----------------------------------------------------------------------------------------


def lease(name: str, holder: str) -> kubernetes.client.V1Lease:
    return kubernetes.client.V1Lease(
        metadata=kubernetes.client.V1ObjectMeta(name=name, namespace="kube-system"),
        spec=kubernetes.client.V1LeaseSpec(
            holder_identity=holder,
            lease_duration_seconds=15,
            renew_time=datetime.datetime.now(datetime.timezone.utc),
            lease_transitions=0,
        ),
    )


def test_leases_have_optimistic_concurrency(server):
    coordination = kubernetes.client.CoordinationV1Api(api_client_for(server))
    created = coordination.create_namespaced_lease("kube-system", lease("skill-webhook", "a"))
    with pytest.raises(ApiException) as exists:
        coordination.create_namespaced_lease("kube-system", lease("skill-webhook", "b"))
    assert exists.value.status == 409 and status_of(exists.value)["reason"] == "AlreadyExists"

    read = coordination.read_namespaced_lease("skill-webhook", "kube-system")
    assert read.spec.holder_identity == "a" and read.metadata.resource_version == created.metadata.resource_version
    read.spec.holder_identity = "b"
    replaced = coordination.replace_namespaced_lease("skill-webhook", "kube-system", read)
    assert replaced.spec.holder_identity == "b"
    assert int(replaced.metadata.resource_version) > int(created.metadata.resource_version)

    created.spec.holder_identity = "c"  # still carries the first resourceVersion
    with pytest.raises(ApiException) as conflict:
        coordination.replace_namespaced_lease("skill-webhook", "kube-system", created)
    assert conflict.value.status == 409 and status_of(conflict.value)["reason"] == "Conflict"
    assert server.leases()[0]["spec"]["holderIdentity"] == "b"
    with pytest.raises(ApiException) as missing:
        coordination.read_namespaced_lease("other", "kube-system")
    assert missing.value.status == 404


# -- the write log, unknown paths and injected failures ------------------------------------------


def test_every_write_is_recorded_and_unknown_paths_answer_404(server, core):
    server.create_pod(pod("p", owner=("ReplicaSet", "web-abc")))
    core.list_pod_for_all_namespaces()
    assert server.writes == []  # reads and the server's own changes are not writes

    apps = kubernetes.client.AppsV1Api(api_client_for(server))
    with pytest.raises(ApiException) as unknown:
        apps.patch_namespaced_deployment("web", "team-a", {"spec": {"replicas": 2}})
    assert unknown.value.status == 404 and status_of(unknown.value)["kind"] == "Status"
    evict(core, "p")

    assert [(w.method, w.path) for w in server.writes] == [
        ("PATCH", "/apis/apps/v1/namespaces/team-a/deployments/web"),
        ("POST", "/api/v1/namespaces/team-a/pods/p/eviction"),
    ]
    assert server.writes[0].body == {"spec": {"replicas": 2}}
    assert server.writes[1].body["metadata"]["name"] == "p"
    assert [w.method for w in server.writes_to("deployments", "replicasets")] == ["PATCH"]
    assert [w.path for w in server.writes_to("pods")] == ["/api/v1/namespaces/team-a/pods/p/eviction"]


def test_injected_failures_answer_the_next_matching_requests(server, core):
    server.create_pod(pod("p"))
    server.fail_requests("POST", "/eviction", 500, count=1)
    with pytest.raises(ApiException) as failed:
        evict(core, "p")
    assert failed.value.status == 500
    evict(core, "p")
    assert server.evictions == [("team-a", "p")]


def test_the_agentruntime_group_is_configurable():
    standin = StandInApiServer(agentruntime_api="agent.rossoctl.dev/v1alpha1").start()
    try:
        standin.create(agentruntime("rt", api_version="agent.rossoctl.dev/v1alpha1"))
        objects = kubernetes.client.CustomObjectsApi(api_client_for(standin))
        listed = objects.list_cluster_custom_object("agent.rossoctl.dev", "v1alpha1", "agentruntimes")
        assert [i["metadata"]["name"] for i in listed["items"]] == ["rt"]
        with pytest.raises(ApiException) as other_group:
            objects.list_cluster_custom_object("agent.kagenti.dev", "v1alpha1", "agentruntimes")
        assert other_group.value.status == 404
    finally:
        standin.close()


def test_restart_restamps_pods_and_leases_too(server, core):
    server.create_pod(pod("p"))
    coordination = kubernetes.client.CoordinationV1Api(api_client_for(server))
    coordination.create_namespaced_lease("kube-system", lease("l", "a"))
    before = server.resource_version
    server.restart()
    assert int(core.read_namespaced_pod("p", "team-a").metadata.resource_version) > before
    assert int(coordination.read_namespaced_lease("l", "kube-system").metadata.resource_version) > before


# -- the label selector parser ---------------------------------------------------------------------

label_values = st.sampled_from(["agent", "tool", "other", ""])


@given(value=st.one_of(st.none(), label_values), wanted=st.sets(st.sampled_from(["agent", "tool", "other"]), min_size=1))
def test_selector_set_operators_agree_with_their_definition(value, wanted):
    obj = {"metadata": {"labels": {} if value is None else {TYPE: value}}}
    joined = ",".join(sorted(wanted))
    assert selector_matches(parse_selector(f"{TYPE} in ({joined})"), obj) == (value in wanted)
    assert selector_matches(parse_selector(f"{TYPE} notin ({joined})"), obj) == (value not in wanted)
    assert selector_matches(parse_selector(TYPE), obj) == (value is not None)
    assert selector_matches(parse_selector(f"!{TYPE}"), obj) == (value is None)
    assert selector_matches(parse_selector(f"{TYPE}=agent,{TYPE}!=tool"), obj) == (value == "agent")
