"""KubeInformerSource against the stand-in API server, through the real `kubernetes` client: first sync
and readiness, watch events, /version, client construction, backoff and the RBAC it needs.
(Faults are in test_informer_faults.py.)
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import kubernetes.client
import kubernetes_validate
import pytest
import yaml

from app.core.matching.index import AgentRuntimeIndex
from app.core.model import WorkloadRef
from app.sources.kube.agentruntimes import (
    AGENTRUNTIME_PLURAL,
    KubeInformerSource,
    ServerVersionUnavailable,
    make_api_client,
)
from tests.apiserver_standin import agentruntime, version_info
from tests.informer_harness import (  # noqa: F401 (fixtures: server, metrics, make_informer)
    make_informer,
    metrics,
    server,
    CONVERGENCE_SECONDS,
    KUBECONFIG,
    RecordedMetrics,
    assert_converges,
    informer_factory,
    list_requests,
    populate,
    running_standin,
    started,
)
from tests.polling import wait_until



RBAC_MANIFEST = Path(__file__).resolve().parent.parent / "manifests" / "rbac.yaml"


# -- first sync and readiness ------------------------------------------------------------------------


def test_paginated_first_list_fills_the_index_and_only_then_marks_it_synced(server, make_informer, metrics):
    populate(server, 25)
    server.lists_open.clear()  # hold the LIST: the informer has started but not synced
    informer = make_informer(page_size=10)
    informer.start()
    wait_until(lambda: list_requests(server), what="the first LIST to reach the server (where it is held)")
    assert not informer.index.synced.is_set()
    assert len(informer.index) == 0

    server.lists_open.set()
    assert informer.index.synced.wait(CONVERGENCE_SECONDS)
    assert_converges(informer.index, server)
    pages = list_requests(server)
    assert [q.get("limit") for q in pages] == ["10", "10", "10"]
    assert "continue" not in pages[0] and all("continue" in q for q in pages[1:])
    assert metrics.syncs == [25]

    server.wait_for_watches(1)
    watch = server.watch_requests()[0]
    assert watch["allowWatchBookmarks"] == "true"
    assert watch["resourceVersion"] == str(server.resource_version)
    assert 60 <= int(watch["timeoutSeconds"]) <= 120


def test_first_list_retries_until_the_server_answers(server, make_informer, metrics):
    populate(server, 3)
    server.stop()
    informer = make_informer()
    informer.start()
    assert wait_until(lambda: metrics.restarts["dropped"] >= 2)
    assert not informer.index.synced.is_set()

    server.start()
    assert informer.index.synced.wait(CONVERGENCE_SECONDS)
    assert_converges(informer.index, server)


def test_synced_stays_set_through_later_outages(server, make_informer, metrics):
    populate(server, 4)
    informer = started(make_informer, server)
    with server.outage():
        server.delete("ns-0", "rt-0")
        wait_until(lambda: metrics.restarts["dropped"] >= 2, what="the informer failing to reach the server twice")
        assert informer.index.synced.is_set()  # readiness drops only before the first sync
    assert_converges(informer.index, server)
    assert informer.index.synced.is_set()


def test_an_expired_continue_token_restarts_the_list_from_the_beginning(server, make_informer, metrics):
    populate(server, 12)
    expired_once = threading.Event()

    def expire_after_first_page(page: dict[str, Any]) -> None:
        if page["metadata"].get("continue") and not expired_once.is_set():
            expired_once.set()
            server.expire_continue_tokens()

    server.after_list_page = expire_after_first_page
    informer = started(make_informer, server, page_size=5)
    assert_converges(informer.index, server)
    assert metrics.restarts["expired"] == 1
    assert metrics.syncs == [12]  # the broken list never reached the index
    assert ["continue" in q for q in list_requests(server)] == [False, True, False, True, True]


# -- watch events ------------------------------------------------------------------------------------


def test_added_modified_deleted_reach_the_index_and_its_lookups(server, make_informer, metrics):
    populate(server, 2)
    informer = started(make_informer, server)
    index = informer.index

    created = server.create(agentruntime("new", namespace="ns-9", target="web"))
    assert_converges(index, server)
    assert index.lookup("ns-9", [WorkloadRef("apps", "Deployment", "web")]).runtime.metadata.name == "new"

    statefulset = {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db"}
    moved = dict(created, spec=dict(created["spec"], targetRef=statefulset))
    moved["spec"]["skills"] = [{"name": "sql", "image": "ghcr.io/example/sql:v2", "mountPath": "/skills/sql"}]
    server.update(moved)
    assert_converges(index, server)
    # No stale copy: the old target finds nothing, the new one finds the new spec.
    assert index.lookup("ns-9", [WorkloadRef("apps", "Deployment", "web")]).runtime is None
    found = index.lookup("ns-9", [WorkloadRef("apps", "StatefulSet", "db")]).runtime
    assert [s.image for s in found.spec.skills] == ["ghcr.io/example/sql:v2"]

    server.delete("ns-9", "new")
    assert_converges(index, server)
    assert index.get("ns-9", "new") is None
    assert metrics.events["ADDED"] == 1 and metrics.events["MODIFIED"] == 1 and metrics.events["DELETED"] == 1
    assert sum(metrics.restarts.values()) == 0
    assert len(list_requests(server)) == 1


def test_two_agentruntimes_on_one_deployment_resolve_to_the_oldest_with_a_warning(server, make_informer):
    server.create(agentruntime("younger", target="shared", created="2026-03-01T00:00:00Z"))
    informer = started(make_informer, server)
    server.create(agentruntime("older", target="shared", created="2026-02-01T00:00:00Z"))
    assert_converges(informer.index, server)

    result = informer.index.lookup("team-a", [WorkloadRef("apps", "Deployment", "shared")])
    assert result.runtime.metadata.name == "older"
    assert [r.metadata.name for r in result.shadowed] == ["younger"]
    assert len(result.warnings) == 1 and '"older"' in result.warnings[0] and '"younger"' in result.warnings[0]


def test_a_bookmark_moves_the_resume_point_of_the_next_watch(server, make_informer, metrics):
    populate(server, 2)
    started(make_informer, server)
    latest = server.advance(50)  # other resources changed meanwhile
    server.bookmark()
    assert wait_until(lambda: metrics.events["BOOKMARK"] == 1)

    server.drop_watches()
    assert wait_until(lambda: len(server.watch_requests()) == 2)
    assert server.watch_requests()[1]["resourceVersion"] == str(latest)


def test_unreadable_objects_are_logged_and_skipped(server, make_informer, caplog):
    caplog.set_level(logging.WARNING, logger="app.sources.kube.agentruntimes")
    server.create(agentruntime("broken", spec={"type": "agent", "skills": "not-a-list"}))
    server.create(agentruntime("fine"))
    informer = started(make_informer, server)
    assert sorted(informer.index._by_key) == [("team-a", "fine")]
    assert "team-a/broken" in caplog.text

    # A MODIFIED that makes an object unreadable drops its old version instead of keeping it stale...
    fine = next(o for o in server.objects() if o["metadata"]["name"] == "fine")
    server.update(dict(fine, spec={"type": "agent", "targetRef": "nonsense"}))
    assert wait_until(lambda: informer.index.get("team-a", "fine") is None)
    # ...and fixing it brings it back, on the same watch.
    server.update(agentruntime("fine", target="fixed"))
    assert wait_until(lambda: informer.index.get("team-a", "fine") is not None)
    assert informer.index.get("team-a", "fine").spec.targetRef.name == "fixed"
    assert len(list_requests(server)) == 1


# -- faults ------------------------------------------------------------------------------------------

# -- server version and client construction ---------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (version_info("1", "33+", "v1.33.2-gke.1000"), (1, 33)),
        (version_info("1", "30", "v1.30.4"), (1, 30)),
        (version_info("", "", "v1.35.0+k3s1"), (1, 35)),
        ({"major": "1", "minor": "34", "gitVersion": "v1.34.1"}, (1, 34)),  # a distribution with fewer fields
    ],
)
def test_server_version_reads_slash_version(server, make_informer, answer, expected):
    server.version = answer
    assert make_informer().server_version() == expected


def test_server_version_raises_when_the_server_cannot_be_reached(server, make_informer):
    informer = make_informer()
    server.stop()
    with pytest.raises(ServerVersionUnavailable, match="cannot read"):
        informer.server_version(attempts=2)


def test_server_version_raises_on_an_answer_that_is_not_a_version(server, make_informer):
    server.version = {"major": "", "minor": "", "gitVersion": "unknown"}
    with pytest.raises(ServerVersionUnavailable, match="cannot read a Kubernetes version"):
        make_informer().server_version()


def test_make_api_client_reads_a_kubeconfig(server, tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG.format(url=server.url))
    before = kubeconfig.read_text()
    informer = KubeInformerSource(AgentRuntimeIndex(), api_client=make_api_client(kubeconfig))
    assert informer.server_version() == (1, 33)
    assert kubeconfig.read_text() == before


def test_make_api_client_outside_a_cluster_without_kubeconfig_fails_clearly(monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(kubernetes.config.ConfigException):
        make_api_client(None)


# -- RBAC --------------------------------------------------------------------------------------------


def test_rbac_grants_the_informer_exactly_what_it_uses():
    documents = [d for d in yaml.safe_load_all(RBAC_MANIFEST.read_text()) if d]
    for document in documents:
        kubernetes_validate.validate(document, "1.33.0", strict=True)
    # The node informer's own role (--delivery auto) is optional and tested in tests/test_manifests.py.
    documents = [d for d in documents if d["metadata"]["name"] != "skill-webhook-nodes"]
    by_kind = {d["kind"]: d for d in documents}
    assert sorted(by_kind) == ["ClusterRole", "ClusterRoleBinding", "ServiceAccount"]

    account = by_kind["ServiceAccount"]["metadata"]
    assert (account["namespace"], account["name"]) == ("skill-webhook", "skill-webhook")
    assert by_kind["ClusterRole"]["rules"] == [
        {"apiGroups": ["agent.kagenti.dev"], "resources": [AGENTRUNTIME_PLURAL], "verbs": ["get", "list", "watch"]}
    ]
    binding = by_kind["ClusterRoleBinding"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": by_kind["ClusterRole"]["metadata"]["name"],
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "skill-webhook", "namespace": "skill-webhook"}]
