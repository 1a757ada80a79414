"""The node informer against the stand-in API server, and what `serve` decides with it: a node whose
container runtime cannot mount image volumes makes `--delivery auto` extract; a 403 on nodes leaves the
decision to the API server's version; a node upgraded later changes the decision without a restart."""

from __future__ import annotations

import copy
import logging
from typing import Any, Iterator

import pytest

from app.core.mutation.delivery import NodeRuntimes
from app.service.http.server import build_state
from app.service.install.certs import CertBundlePaths, ensure_dev_certs
from app.service.settings import Settings
from app.sources.kube.nodes import NodeInformer, NodesForbidden
from tests.apiserver_standin import Resource, StandInApiServer, agentruntime, version_info
from tests.builders import NAMESPACE, deployment_pod, index_of
from tests.informer_harness import KUBECONFIG, api_client_for, running_standin
from tests.polling import wait_until

NODES = ("", "v1", "nodes")


def node(name: str, runtime_version: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "namespace": ""},
            "status": {"nodeInfo": {"containerRuntimeVersion": runtime_version, "kubeletVersion": "v1.35.0"}}}


@pytest.fixture
def server() -> Iterator[StandInApiServer]:
    with running_standin() as standin:
        standin.version = version_info("1", "35", "v1.35.0")  # image volumes on by default
        standin.resources[NODES] = Resource("", "v1", "nodes", "Node", namespaced=False)
        yield standin


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> CertBundlePaths:
    return ensure_dev_certs(tmp_path_factory.mktemp("certs"))


def test_first_verdict_lists_every_page(server):
    for i in range(7):
        server.create(node(f"node-{i}", "containerd://2.1.0" if i % 3 else "containerd://1.7.24"), "nodes")
    informer = NodeInformer(api_client_for(server), lambda verdict: None, page_size=2)
    verdict = informer.first_verdict()
    assert (verdict.nodes, [n for n, _ in verdict.unable]) == (7, ["node-0", "node-3", "node-6"])


def test_forbidden_is_said_as_such(server):
    server.fail_requests("GET", "/api/v1/nodes", 403, reason="Forbidden", message="nodes is forbidden")
    with pytest.raises(NodesForbidden):
        NodeInformer(api_client_for(server), lambda verdict: None).first_verdict()


def test_a_runtime_upgrade_or_a_new_node_gives_a_new_verdict(server):
    server.create(node("a", "containerd://2.0.5"), "nodes")
    verdicts: list[NodeRuntimes] = []
    informer = NodeInformer(api_client_for(server), verdicts.append, backoff_initial=0.05)
    first = informer.first_verdict()
    assert not first.can_mount
    informer.start()
    try:
        upgraded = copy.deepcopy(server.get("", "a", "nodes"))
        upgraded["status"]["nodeInfo"]["containerRuntimeVersion"] = "containerd://2.1.1"
        server.update(upgraded, "nodes")
        wait_until(lambda: verdicts and verdicts[-1].can_mount, what="the upgraded node's verdict")
        server.create(node("b", "cri-o://1.30.2"), "nodes")
        wait_until(lambda: verdicts[-1].unable == (("b", "cri-o://1.30.2"),), what="the new node's verdict")
        # A status change that leaves the runtime as it was is no news.
        seen = len(verdicts)
        heartbeat = copy.deepcopy(server.get("", "b", "nodes"))
        heartbeat["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
        server.update(heartbeat, "nodes")
        server.delete("", "a", "nodes")
        wait_until(lambda: verdicts[-1].nodes == 1, what="the removed node's verdict")
        assert len(verdicts) == seen + 1
    finally:
        informer.stop()


# -- serve ---------------------------------------------------------------------------------------------------


SKILL = {"name": "notes", "image": "quay.io/acme/notes:2.0", "mountPath": "/skills/notes"}


def state_for(server: StandInApiServer, certs: CertBundlePaths, tmp_path, **settings: Any):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG.format(url=server.url))
    parts = build_state(Settings(source="kube", kubeconfig=kubeconfig, tls_cert_file=certs.tls_cert,
                                 tls_key_file=certs.tls_key, **settings))
    return parts


def extracted(parts) -> int:
    from app.core.mutation.review import mutate_pod

    index = index_of(agentruntime("rt", target="my-agent", skills=[SKILL]))
    decision = mutate_pod(deployment_pod(), NAMESPACE, index, parts.state.mutation)
    assert decision.allowed, decision.message
    return decision.extracted


def metric(parts, name: str, **labels: str) -> float | None:
    return parts.state.metrics.registry.get_sample_value(name, labels)


def test_serve_extracts_while_a_node_cannot_mount_and_follows_its_upgrade(server, certs, tmp_path, caplog):
    server.create(node("old", "containerd://1.7.24"), "nodes")
    server.create(node("new", "containerd://2.1.0"), "nodes")
    with caplog.at_level(logging.INFO, logger="skill_webhook.delivery"):
        parts = state_for(server, certs, tmp_path)
    assert extracted(parts) == 1
    assert any("delivery extract" in r.getMessage() and "old (containerd://1.7.24)" in r.getMessage()
               for r in caplog.records), [r.getMessage() for r in caplog.records]
    assert metric(parts, "skill_webhook_nodes_without_image_volumes", node="old",
                  runtime_version="containerd://1.7.24") == 1
    parts.delivery.start()
    try:
        upgraded = copy.deepcopy(server.get("", "old", "nodes"))
        upgraded["status"]["nodeInfo"]["containerRuntimeVersion"] = "containerd://2.1.0"
        server.update(upgraded, "nodes")
        wait_until(lambda: extracted(parts) == 0, what="image volumes once every node can mount them")
        assert metric(parts, "skill_webhook_nodes_without_image_volumes", node="old",
                      runtime_version="containerd://1.7.24") is None
    finally:
        parts.delivery.stop()


def test_serve_without_rights_on_nodes_decides_from_the_server_version_and_says_so(server, certs, tmp_path, caplog):
    server.create(node("old", "containerd://1.7.24"), "nodes")
    server.fail_requests("GET", "/api/v1/nodes", 403, reason="Forbidden", message="nodes is forbidden")
    with caplog.at_level(logging.INFO, logger="skill_webhook.delivery"):
        parts = state_for(server, certs, tmp_path)
    assert extracted(parts) == 0 and parts.delivery.informer is None
    assert any("403" in r.getMessage() and "server's version alone" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("settings", [{"delivery": "image"}, {"delivery": "extract"}, {"image_volumes": "off"}])
def test_nodes_are_not_read_where_they_cannot_change_the_decision(server, certs, tmp_path, settings):
    parts = state_for(server, certs, tmp_path, **settings)
    assert parts.delivery.informer is None
    assert not [path for path, _ in server.requests if path.startswith("/api/v1/nodes")]
