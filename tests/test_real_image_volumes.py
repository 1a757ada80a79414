"""Why `--image-volumes auto` only turns image volumes on where the ImageVolume feature is on by default:
an API server with the `ImageVolume` feature gate off does not refuse a pod with an image volume, it
silently drops the volume (and its mounts), so a pod "with its skills" would start without them. Shown on a
second API server (same etcd, its own prefix) started with `--feature-gates=ImageVolume=false`, as
1.31-1.34 clusters are by default, next to the main one (1.35, gate on)."""

from __future__ import annotations

import json
from typing import Iterator

import pytest
from tests.kube_cluster import ApiServer, KubeCluster, kube


pytestmark = kube

IMAGE = "ghcr.io/example/skill:v1"


@pytest.fixture(scope="module")
def gate_off(kube_cluster: KubeCluster) -> Iterator[ApiServer]:
    server = kube_cluster.start_apiserver("kube-apiserver-imagevolume-off", "--feature-gates=ImageVolume=false",
                                          etcd_prefix="/imagevolume-off")
    yield server
    server.kill()


def pod_with_an_image_volume(namespace: str) -> dict:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "agent", "namespace": namespace},
        "spec": {
            "automountServiceAccountToken": False,
            "volumes": [{"name": "skill-x", "image": {"reference": IMAGE, "pullPolicy": "IfNotPresent"}}],
            "containers": [{"name": "agent", "image": "registry.example/agent:v1",
                            "volumeMounts": [{"name": "skill-x", "mountPath": "/skills/x", "readOnly": True}]}],
        },
    }


def create_and_read_back(cluster: KubeCluster, server: ApiServer, namespace: str) -> tuple[object, dict | None]:
    """Create the namespace and the pod through `server`; returns (kubectl result, stored pod or None)."""
    cluster.kubectl("create", "namespace", namespace, server=server)
    # No controller manager on this server to make the namespace's default ServiceAccount.
    cluster.kubectl("apply", "-f", "-", server=server, input=json.dumps(
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": namespace}}))
    created = cluster.kubectl("create", "-f", "-", "-o", "json", server=server, check=False,
                              input=json.dumps(pod_with_an_image_volume(namespace)))
    return created, (json.loads(created.stdout) if created.returncode == 0 else None)


def test_the_image_volume_survives_where_the_feature_gate_is_on(kube_cluster: KubeCluster) -> None:
    assert kube_cluster.api is not None
    created, pod = create_and_read_back(kube_cluster, kube_cluster.api, "image-volume-gate-on")
    assert pod is not None, created.stderr
    assert pod["spec"]["volumes"] == [{"name": "skill-x", "image": {"reference": IMAGE, "pullPolicy": "IfNotPresent"}}]


def test_an_api_server_with_the_gate_off_drops_the_image_volume(kube_cluster: KubeCluster, gate_off: ApiServer) -> None:
    created, pod = create_and_read_back(kube_cluster, gate_off, "image-volume-gate-off")
    if pod is None:
        pytest.fail(f"expected the pod to be stored without its image volume, got a refusal:\n{created.stderr}")
    # Accepted without a word: the volume and its mount are gone, so the agent would start without the skill.
    assert created.stderr == ""
    assert pod["spec"].get("volumes", []) == []
    assert pod["spec"]["containers"][0].get("volumeMounts", []) == []
