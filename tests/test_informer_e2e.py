"""The informer wired into the service as `serve` wires it, driven through /mutate, /readyz and /metrics.

Stand-in API server -> real `kubernetes` client -> KubeInformerSource -> AgentRuntimeIndex -> FastAPI app
(over httpx). Shows: 503 before the first sync, then readiness; watch events reaching /mutate answers;
410 and dropped connections recovering with nothing stale; the image-volume decision from /version; the
oldest of two AgentRuntimes winning with a warning; restarts counted in /metrics.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any, Iterator

import httpx
import jsonpatch
import pytest
import yaml

from app.service.http.app import create_app, create_health_app
from app.service.install.certs import CertBundlePaths, ensure_dev_certs
from app.service.http.server import build_state
from app.service.settings import Settings
from app.sources.kube.agentruntimes import KubeInformerSource
from tests.apiserver_standin import StandInApiServer, agentruntime, version_info
from tests.builders import decode_patch
from tests.informer_harness import KUBECONFIG, running_standin
from tests.polling import wait_until

SAMPLE_POD = Path(__file__).resolve().parent.parent / "manifests" / "samples" / "pod.yaml"
SKILL = {"name": "resume-reviewer", "image": "ghcr.io/example/resume-reviewer:v1", "mountPath": "/skills/review"}


class AsgiClient:
    """Synchronous requests to an ASGI app through httpx, one short event loop per request."""

    def __init__(self, app: Any) -> None:
        self.transport = httpx.ASGITransport(app=app)

    def request(self, method: str, path: str, **options: Any) -> httpx.Response:
        async def send() -> httpx.Response:
            async with httpx.AsyncClient(transport=self.transport, base_url="http://webhook") as client:
                return await client.request(method, path, **options)

        return asyncio.run(send())

    def get(self, path: str) -> httpx.Response:
        return self.request("GET", path)

    def post(self, path: str, **options: Any) -> httpx.Response:
        return self.request("POST", path, **options)


class Service:
    """The webhook exactly as `serve` builds it for `--source kube --kubeconfig FILE` (build_state), with
    its two apps on ASGI test clients instead of sockets."""

    def __init__(self, server: StandInApiServer, certs: CertBundlePaths, image_volumes: str = "auto",
                 delivery: str = "auto") -> None:
        kubeconfig = certs.ca_cert.parent / f"kubeconfig-{server.port}"
        kubeconfig.write_text(KUBECONFIG.format(url=server.url))
        settings = Settings(
            source="kube",
            kubeconfig=kubeconfig,
            tls_cert_file=certs.tls_cert,
            tls_key_file=certs.tls_key,
            image_volumes=image_volumes,
            delivery=delivery,
        )
        parts = build_state(settings)
        state, self.informer = parts.state, parts.source
        self.image_volumes_reason = state.mutation.image_volumes_reason
        assert isinstance(self.informer, KubeInformerSource)
        self.index, self.metrics = state.index, state.metrics
        self.webhook = AsgiClient(create_app(state))
        self.health = AsgiClient(create_health_app(state))

    def mutate(self) -> dict[str, Any]:
        pod = _sample_pod()
        review = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": str(uuid.uuid4()),
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "operation": "CREATE",
                "namespace": "team-a",
                "object": pod,
            },
        }
        answer = self.webhook.post("/mutate", json=review)
        assert answer.status_code == 200, answer.text
        assert answer.json()["response"]["uid"] == review["request"]["uid"]
        return answer.json()["response"]

    def injected_images(self) -> list[str]:
        """Image references of the volumes the current /mutate answer adds to the sample pod."""
        pod = _sample_pod()
        patched = jsonpatch.apply_patch(pod, decode_patch(self.mutate()))
        before = {v["name"] for v in pod["spec"].get("volumes", [])}
        return [v["image"]["reference"] for v in patched["spec"].get("volumes", []) if v["name"] not in before
                and "image" in v]

    def extracted(self) -> list[str]:
        """The `--skill NAME=REF` arguments of the puller the current /mutate answer adds to the sample pod."""
        pod = _sample_pod()
        patched = jsonpatch.apply_patch(pod, decode_patch(self.mutate()))
        puller = patched["spec"]["initContainers"][0]
        assert puller["name"] == "skill-pull", puller
        return [value for flag, value in zip(puller["args"], puller["args"][1:]) if flag == "--skill"]

    def metric(self, name: str, labels: str = "") -> float:
        for line in self.health.get("/metrics").text.splitlines():
            if line.startswith(f"{name}{labels} "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0


def _sample_pod() -> dict[str, Any]:
    return yaml.safe_load(SAMPLE_POD.read_text())


@pytest.fixture
def server() -> Iterator[StandInApiServer]:
    with running_standin() as standin:
        standin.version = version_info("1", "35", "v1.35.0")  # image volumes on by default; see the version test
        yield standin


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> CertBundlePaths:
    return ensure_dev_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def service(server, certs) -> Iterator[Service]:
    made = Service(server, certs)
    yield made
    made.informer.stop()


def started(service: Service, server: StandInApiServer) -> Service:
    service.informer.start()
    assert service.index.synced.wait(5)
    server.wait_for_watches(1)
    return service


def test_pods_are_denied_with_503_and_readyz_fails_until_the_first_list(server, certs):
    server.create(agentruntime("resume-agent-runtime", target="resume-agent", skills=[SKILL]))
    server.lists_open.clear()
    service = Service(server, certs)
    try:
        service.informer.start()
        response = service.mutate()
        assert response["allowed"] is False
        assert response["status"]["code"] == 503
        assert "skill cache not synchronized yet" in response["status"]["message"]
        ready = service.health.get("/readyz")
        assert ready.status_code == 503 and ready.json()["cacheSynced"] is False
        assert service.metric("skill_webhook_cache_synced") == 0

        server.lists_open.set()
        assert wait_until(lambda: service.health.get("/readyz").status_code == 200)
        assert service.injected_images() == [SKILL["image"]]
        assert service.metric("skill_webhook_cache_synced") == 1
        assert service.metric("skill_webhook_agentruntimes_cached") == 1
    finally:
        service.informer.stop()


def test_added_modified_deleted_reach_mutate_answers(service, server):
    started(service, server)
    assert service.mutate()["allowed"] is True and "patch" not in service.mutate()

    created = server.create(agentruntime("resume-agent-runtime", target="resume-agent", skills=[SKILL]))
    assert wait_until(lambda: service.injected_images() == [SKILL["image"]])

    created["spec"]["skills"][0]["image"] = "ghcr.io/example/resume-reviewer:v2"
    server.update(created)
    assert wait_until(lambda: service.injected_images() == ["ghcr.io/example/resume-reviewer:v2"])

    server.delete("team-a", "resume-agent-runtime")
    assert wait_until(lambda: "patch" not in service.mutate())
    assert service.mutate()["allowed"] is True


def test_410_and_dropped_connections_leave_no_stale_answer(service, server):
    server.create(agentruntime("resume-agent-runtime", target="resume-agent", skills=[SKILL]))
    started(service, server)
    assert service.injected_images() == [SKILL["image"]]

    with server.unseen_changes():  # the watch never hears of the deletion...
        server.delete("team-a", "resume-agent-runtime")
    server.expire_watches()  # ...until a 410 forces a fresh LIST
    assert wait_until(lambda: "patch" not in service.mutate())

    server.drop_watches(mid_event=True)
    server.create(agentruntime("second", target="resume-agent", skills=[dict(SKILL, image="ghcr.io/example/r:v3")]))
    assert wait_until(lambda: service.injected_images() == ["ghcr.io/example/r:v3"])

    assert service.metric("skill_webhook_watch_restarts_total", '{reason="expired"}') >= 1
    assert service.metric("skill_webhook_watch_restarts_total", '{reason="dropped"}') >= 1
    assert service.health.get("/readyz").status_code == 200


@pytest.mark.parametrize(
    ("version", "setting", "injects"),
    [
        (("1", "30", "v1.30.4"), "auto", False),
        (("1", "33+", "v1.33.2-gke.1000"), "auto", False),
        (("1", "33+", "v1.33.2-gke.1000"), "on", True),
        (("1", "35", "v1.35.0"), "auto", True),
        (("1", "36", "v1.36.1"), "off", False),
    ],
)
def test_server_version_decides_image_volumes(server, certs, version, setting, injects):
    """With --delivery image: where image volumes are off nothing is injected (the API server would
    drop them), with a warning and a metric."""
    server.version = version_info(*version)
    server.create(agentruntime("resume-agent-runtime", target="resume-agent", skills=[SKILL]))
    service = Service(server, certs, image_volumes=setting, delivery="image")
    try:
        started(service, server)
        response = service.mutate()
        assert response["allowed"] is True
        if injects:
            assert service.injected_images() == [SKILL["image"]]
            assert not response.get("warnings")
        else:
            assert "patch" not in response
            assert any("image volumes are off" in w for w in response["warnings"])
            if setting == "auto":  # the warning says why: the version read from /version
                assert any(f"Kubernetes {version[0]}.{version[1].rstrip('+')}" in w for w in response["warnings"])
            assert service.metric("skill_webhook_image_volumes_unsupported_pods_total") == 1
    finally:
        service.informer.stop()


@pytest.mark.parametrize(("version", "setting"), [(("1", "33+", "v1.33.2-gke.1000"), "auto"), (("1", "36", "v1.36.1"), "off")])
def test_where_image_volumes_are_off_auto_delivers_by_extraction(server, certs, version, setting):
    server.version = version_info(*version)
    server.create(agentruntime("resume-agent-runtime", target="resume-agent", skills=[SKILL]))
    service = Service(server, certs, image_volumes=setting)
    try:
        started(service, server)
        assert service.extracted() == [f"{SKILL['name']}={SKILL['image']}"]
        assert service.injected_images() == []
        assert service.metric("skill_webhook_skills_injected_total", '{delivery="extract"}') >= 1
        assert service.metric("skill_webhook_image_volumes_unsupported_pods_total") == 0
        assert service.metric("skill_webhook_delivery_decision", '{delivery="extract",reason="--delivery auto: image '
                              f'volumes are off ({service.image_volumes_reason})"}}') == 1
    finally:
        service.informer.stop()


def test_two_agentruntimes_on_one_deployment_use_the_oldest_and_warn(service, server):
    server.create(
        agentruntime(
            "newer",
            target="resume-agent",
            created="2026-03-01T00:00:00Z",
            skills=[dict(SKILL, image="ghcr.io/example/newer:v1")],
        )
    )
    server.create(
        agentruntime(
            "older",
            target="resume-agent",
            created="2026-02-01T00:00:00Z",
            skills=[dict(SKILL, image="ghcr.io/example/older:v1")],
        )
    )
    started(service, server)
    response = service.mutate()
    assert service.injected_images() == ["ghcr.io/example/older:v1"]
    assert any('"older"' in w and '"newer"' in w for w in response["warnings"])
