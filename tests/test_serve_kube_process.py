"""The real `skill-webhook serve --kubeconfig K` process against the stand-in API server: pods are
mutated from live AgentRuntimes, and changes on the server reach the next admission."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import httpx

from app.service.certs import write_cert_bundle
from tests.apiserver_standin import agentruntime
from tests.informer_harness import KUBECONFIG, running_standin
from tests.test_serve_process import SAMPLE_REVIEW_BYTES, serving

SKILL = {"name": "live-skill", "image": "ghcr.io/example/live-skill:v1", "mountPath": "/skills/live"}


def mutate(served) -> dict:
    with httpx.Client(verify=served.verified_context(), timeout=10) as client:
        response = client.post(served.url + "/mutate", content=SAMPLE_REVIEW_BYTES)
    assert response.status_code == 200
    return response.json()["response"]


def injected_images(answer: dict) -> list[str]:
    patch = json.loads(base64.b64decode(answer["patch"])) if answer.get("patch") else []
    return [v["image"]["reference"] for op in patch if op["path"] == "/spec/volumes" for v in op["value"]]


def eventually(check, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.05)


def test_serve_with_a_kubeconfig_mutates_from_live_agentruntimes(tmp_path: Path) -> None:
    certs = write_cert_bundle(tmp_path / "certs", "skill-webhook", "skill-webhook")
    with running_standin() as server:
        server.create(agentruntime("live", skills=[SKILL]))
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(KUBECONFIG.format(url=server.url))
        with serving(tmp_path, "--source", "kube", "--kubeconfig", str(kubeconfig),
                     "--tls-cert-file", str(certs.tls_cert), "--tls-key-file", str(certs.tls_key),
                     "--image-volumes", "on") as served:
            assert injected_images(mutate(served)) == ["ghcr.io/example/live-skill:v1"]

            updated = agentruntime("live", skills=[{**SKILL, "image": "ghcr.io/example/live-skill:v2"}])
            server.update(updated)
            assert eventually(lambda: injected_images(mutate(served)) == ["ghcr.io/example/live-skill:v2"])

            server.delete("team-a", "live")
            assert eventually(lambda: "patch" not in mutate(served))
            log = served.log.read_text()
            assert "image volumes on" in log and '"source":"kube"' in log
