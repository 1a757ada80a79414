"""Which workload a pod belongs to (resolve_workload) and so which AgentRuntime applies.

One row per line of the owner table, then the rules around it: controller owner preferred, API
group compared with the version ignored, same namespace only."""

from __future__ import annotations

import pytest

from app.core.model import WorkloadRef
from app.core.mutation.review import mutate_pod
from app.core.matching.workload import controller_owner, resolve_workload
from tests.builders import DEFAULT_OPTIONS, NAMESPACE, index_of, owner, pod, runtime_object, skill

APPS = "apps"

OWNER_TABLE = [
    pytest.param(
        pod(generate_name="web-7d9f8b6c5d-", owners=[owner("ReplicaSet", "web-7d9f8b6c5d")],
            labels={"pod-template-hash": "7d9f8b6c5d"}),
        (WorkloadRef(APPS, "Deployment", "web"), WorkloadRef(APPS, "ReplicaSet", "web-7d9f8b6c5d")),
        id="replicaset-with-matching-template-hash-is-deployment-and-replicaset",
    ),
    pytest.param(
        pod(owners=[owner("ReplicaSet", "my-app-v2-abc12")], labels={"pod-template-hash": "abc12"}),
        (WorkloadRef(APPS, "Deployment", "my-app-v2"), WorkloadRef(APPS, "ReplicaSet", "my-app-v2-abc12")),
        id="deployment-name-with-dashes",
    ),
    pytest.param(
        pod(owners=[owner("ReplicaSet", "web-7d9f8b6c5d")], labels={"pod-template-hash": "0000000000"}),
        (WorkloadRef(APPS, "ReplicaSet", "web-7d9f8b6c5d"),),
        id="replicaset-whose-name-does-not-end-in-the-hash",
    ),
    pytest.param(
        pod(owners=[owner("ReplicaSet", "web-7d9f8b6c5d")]),
        (WorkloadRef(APPS, "ReplicaSet", "web-7d9f8b6c5d"),),
        id="replicaset-without-template-hash-label",
    ),
    pytest.param(
        pod(owners=[owner("ReplicaSet", "web7d9f8b6c5d")], labels={"pod-template-hash": "7d9f8b6c5d"}),
        (WorkloadRef(APPS, "ReplicaSet", "web7d9f8b6c5d"),),
        id="hash-suffix-without-dash-is-not-a-deployment",
    ),
    pytest.param(
        pod(owners=[owner("ReplicaSet", "-7d9f8b6c5d")], labels={"pod-template-hash": "7d9f8b6c5d"}),
        (WorkloadRef(APPS, "ReplicaSet", "-7d9f8b6c5d"),),
        id="name-that-is-only-the-suffix-is-not-a-deployment",
    ),
    pytest.param(
        pod(owners=[owner("ReplicaSet", "web-h1", api_version="example.com/v1")],
            labels={"pod-template-hash": "h1"}),
        (WorkloadRef("example.com", "ReplicaSet", "web-h1"),),
        id="replicaset-of-another-group-is-not-a-deployment",
    ),
    pytest.param(
        pod(name="db-0", owners=[owner("StatefulSet", "db")]),
        (WorkloadRef(APPS, "StatefulSet", "db"),),
        id="statefulset",
    ),
    pytest.param(
        pod(owners=[owner("DaemonSet", "node-agent")]),
        (WorkloadRef(APPS, "DaemonSet", "node-agent"),),
        id="daemonset",
    ),
    pytest.param(
        pod(owners=[owner("Job", "nightly", api_version="batch/v1")]),
        (WorkloadRef("batch", "Job", "nightly"),),
        id="job",
    ),
    pytest.param(
        pod(name="sb", owners=[owner("Sandbox", "sb", api_version="agents.x-k8s.io/v1alpha1")]),
        (WorkloadRef("agents.x-k8s.io", "Sandbox", "sb"),),
        id="sandbox",
    ),
    pytest.param(pod(name="solo"), (WorkloadRef("", "Pod", "solo"),), id="no-owner-with-name-is-the-pod"),
    pytest.param(pod(generate_name="warm-"), (), id="no-owner-and-no-name-matches-nothing"),
    pytest.param(
        pod(name="solo", owners=[]),
        (WorkloadRef("", "Pod", "solo"),),
        id="empty-owner-list-is-no-owner",
    ),
    pytest.param(
        pod(name="p", owners=[owner("StatefulSet", "first", controller=None), owner("DaemonSet", "ctl")]),
        (WorkloadRef(APPS, "DaemonSet", "ctl"),),
        id="controller-owner-preferred-over-first",
    ),
    pytest.param(
        pod(name="p", owners=[owner("StatefulSet", "first", controller=False), owner("DaemonSet", "second", controller=False)]),
        (WorkloadRef(APPS, "StatefulSet", "first"),),
        id="no-controller-owner-takes-the-first",
    ),
    pytest.param(
        pod(name="p", owners=[{"apiVersion": "apps/v1", "kind": "StatefulSet"}]),
        (),
        id="owner-without-name-matches-nothing",
    ),
]


@pytest.mark.parametrize(("the_pod", "workloads"), OWNER_TABLE)
def test_resolve_workload_owner_table(the_pod, workloads):
    assert resolve_workload(the_pod) == workloads


@pytest.mark.parametrize(
    "metadata",
    [None, "not-a-map", {"ownerReferences": "nope"}, {"ownerReferences": [1, "x"]}, {"name": 7}],
    ids=["absent", "not-a-map", "owner-refs-not-a-list", "owner-refs-not-maps", "name-not-a-string"],
)
def test_resolve_workload_survives_malformed_metadata(metadata):
    assert resolve_workload({"metadata": metadata}) == ()


def test_controller_owner_prefers_controller_true_only():
    refs = [owner("Job", "a", controller=None), owner("Job", "b", controller=False), owner("Job", "c")]
    assert controller_owner(pod(owners=refs))["name"] == "c"
    assert controller_owner(pod(owners=refs[:2]))["name"] == "a"
    assert controller_owner(pod()) is None


# -- through the index: the workload decides which AgentRuntime applies ------------------------------

TARGET_MATCHES = [
    # (pod, targetRef apiVersion, kind, name, matches)
    pytest.param(pod(owners=[owner("ReplicaSet", "web-h1")], labels={"pod-template-hash": "h1"}),
                 "apps/v1", "Deployment", "web", True, id="deployment"),
    pytest.param(pod(owners=[owner("ReplicaSet", "web-h1")], labels={"pod-template-hash": "h1"}),
                 "apps/v1", "ReplicaSet", "web-h1", True, id="deployment-pod-by-its-replicaset"),
    pytest.param(pod(owners=[owner("ReplicaSet", "web-h1")], labels={"pod-template-hash": "h1"}),
                 "apps/v2", "Deployment", "web", True, id="version-ignored-apps-v2"),
    pytest.param(pod(owners=[owner("ReplicaSet", "web-h1")], labels={"pod-template-hash": "h1"}),
                 "example.com/v1", "Deployment", "web", False, id="other-group-does-not-match"),
    pytest.param(pod(owners=[owner("ReplicaSet", "web-h1")], labels={"pod-template-hash": "h1"}),
                 "apps/v1", "StatefulSet", "web", False, id="other-kind-does-not-match"),
    pytest.param(pod(owners=[owner("ReplicaSet", "web-h1")], labels={"pod-template-hash": "h1"}),
                 "apps/v1", "Deployment", "web-h1", False, id="replicaset-name-is-not-the-deployment"),
    pytest.param(pod(owners=[owner("ReplicaSet", "web-h1")]),
                 "apps/v1", "Deployment", "web", False, id="no-template-hash-no-deployment"),
    pytest.param(pod(owners=[owner("StatefulSet", "db", api_version="apps/v1beta2")]),
                 "apps/v1", "StatefulSet", "db", True, id="owner-version-ignored"),
    pytest.param(pod(owners=[owner("Job", "nightly", api_version="batch/v1")]),
                 "batch/v1", "Job", "nightly", True, id="job"),
    pytest.param(pod(owners=[owner("Job", "nightly", api_version="batch/v1")]),
                 "apps/v1", "Job", "nightly", False, id="job-in-the-wrong-group"),
    pytest.param(pod(owners=[owner("Sandbox", "sb", api_version="agents.x-k8s.io/v1alpha1")]),
                 "agents.x-k8s.io/v1", "Sandbox", "sb", True, id="sandbox"),
    pytest.param(pod(name="solo"), "v1", "Pod", "solo", True, id="pod-by-name"),
    pytest.param(pod(name="solo"), "example.com/v1", "Pod", "solo", False, id="pod-in-another-group"),
    pytest.param(pod(name="solo", owners=[owner("StatefulSet", "db")]), "v1", "Pod", "solo", False,
                 id="owned-pod-does-not-match-by-its-name"),
]


@pytest.mark.parametrize(("the_pod", "api_version", "kind", "name", "matches"), TARGET_MATCHES)
def test_targetref_matching(the_pod, api_version, kind, name, matches):
    index = index_of(runtime_object("rt", kind=kind, target=name, api_version=api_version, skills=[skill("s")]))
    decision = mutate_pod(the_pod, NAMESPACE, index, DEFAULT_OPTIONS)
    assert decision.allowed
    assert (decision.runtime == "rt") is matches
    assert bool(decision.patch) is matches


def test_only_same_namespace_agentruntimes_count():
    the_pod = pod(name="solo", namespace="team-b")
    index = index_of(runtime_object("rt", kind="Pod", target="solo", namespace="team-a", skills=[skill("s")]))
    assert mutate_pod(the_pod, "team-b", index, DEFAULT_OPTIONS).patch is None
    assert mutate_pod(the_pod, "team-a", index, DEFAULT_OPTIONS).runtime == "rt"


def test_request_namespace_wins_and_pod_namespace_is_the_fallback():
    index = index_of(runtime_object("rt", kind="Pod", target="solo", namespace="team-b", skills=[skill("s")]))
    # The API server fills request.namespace; the pod's own field may be empty at creation.
    assert mutate_pod(pod(name="solo", namespace=None), "team-b", index, DEFAULT_OPTIONS).runtime == "rt"
    assert mutate_pod(pod(name="solo", namespace="team-b"), "", index, DEFAULT_OPTIONS).runtime == "rt"
    assert mutate_pod(pod(name="solo", namespace="team-b"), "team-a", index, DEFAULT_OPTIONS).runtime is None
