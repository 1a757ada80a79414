"""The real `skill-webhook serve --kubeconfig K` process against the stand-in API server: pods are
mutated from live AgentRuntimes, and changes on the server reach the next admission."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import httpx

from app.service.install.certs import write_cert_bundle
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


def serving_kube(tmp_path: Path, server, *extra: str):
    """`skill-webhook serve --source kube` against `server`, with its own certificates and kubeconfig."""
    certs = write_cert_bundle(tmp_path / "certs", "skill-webhook", "skill-webhook")
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG.format(url=server.url))
    return serving(tmp_path, "--source", "kube", "--kubeconfig", str(kubeconfig),
                   "--tls-cert-file", str(certs.tls_cert), "--tls-key-file", str(certs.tls_key),
                   "--image-volumes", "on", *extra)


def test_serve_with_a_kubeconfig_mutates_from_live_agentruntimes(tmp_path: Path) -> None:
    with running_standin() as server:
        server.create(agentruntime("live", skills=[SKILL]))
        with serving_kube(tmp_path, server) as served:
            assert injected_images(mutate(served)) == ["ghcr.io/example/live-skill:v1"]

            updated = agentruntime("live", skills=[{**SKILL, "image": "ghcr.io/example/live-skill:v2"}])
            server.update(updated)
            assert eventually(lambda: injected_images(mutate(served)) == ["ghcr.io/example/live-skill:v2"])

            server.delete("team-a", "live")
            assert eventually(lambda: "patch" not in mutate(served))
            log = served.log.read_text()
            assert "image volumes on" in log and '"source":"kube"' in log


def test_no_admission_misses_the_agentruntime_while_modified_events_stream(tmp_path: Path) -> None:
    """The black-box side of the index's single-assignment updates: the informer thread applies a
    stream of MODIFIED events to the AgentRuntime while /mutate is hammered over one connection; every
    answer must carry the skill (one version or the next), never a pod admitted without it."""
    import threading

    with running_standin() as server:
        server.create(agentruntime("live", skills=[SKILL]))
        with serving_kube(tmp_path, server, "--log-level", "warning") as served:
            assert injected_images(mutate(served)) == ["ghcr.io/example/live-skill:v1"]
            stop = threading.Event()
            modified = 0

            def modify() -> None:
                nonlocal modified
                while not stop.is_set() and modified < 3000:
                    modified += 1
                    server.update(agentruntime("live", skills=[{**SKILL, "image": f"ghcr.io/example/live-skill:v{modified}"}]))

            writer = threading.Thread(target=modify)
            answers: list[list[str]] = []
            writer.start()
            try:
                with httpx.Client(verify=served.verified_context(), timeout=10) as client:
                    deadline = time.monotonic() + 8
                    while time.monotonic() < deadline and (writer.is_alive() or len(answers) < 200):
                        response = client.post(served.url + "/mutate", content=SAMPLE_REVIEW_BYTES)
                        assert response.status_code == 200
                        answers.append(injected_images(response.json()["response"]))
            finally:
                stop.set()
                writer.join()
            assert modified > 100 and len(answers) > 100
            missing = [a for a in answers if len(a) != 1]
            assert missing == [], f"{len(missing)} of {len(answers)} admissions had no skill"
            assert len({a[0] for a in answers}) > 1  # the answers did follow the MODIFIED events


def test_an_agentruntime_whose_crd_pruned_spec_skills_is_served_from_its_annotation(tmp_path: Path) -> None:
    """A rossoctl cluster: the CRD has no spec.skills, the skills are in rossoctl.io/skill-images, the
    group is agent.rossoctl.dev, and the pod is labelled rossoctl.io/type."""
    with running_standin(agentruntime_api="agent.rossoctl.dev/v1alpha1") as server:
        obj = agentruntime("live", skills=[SKILL])
        obj["apiVersion"] = "agent.rossoctl.dev/v1alpha1"
        del obj["spec"]["skills"]  # pruned by the operator's CRD
        obj["spec"]["authBridgeMode"] = "proxy"
        obj["metadata"]["annotations"] = {"rossoctl.io/skill-images": json.dumps([SKILL])}
        server.create(obj)
        review = SAMPLE_REVIEW_BYTES.replace(b"kagenti.io/", b"rossoctl.io/")
        with serving_kube(tmp_path, server, "--domain", "rossoctl.io",
                          "--agentruntime-api", "agent.rossoctl.dev/v1alpha1") as served:
            with httpx.Client(verify=served.verified_context(), timeout=10) as client:
                answer = client.post(served.url + "/mutate", content=review).json()["response"]
            assert injected_images(answer) == ["ghcr.io/example/live-skill:v1"]
            patch = json.loads(base64.b64decode(answer["patch"]))
            annotations = next(op["value"] for op in patch if op["path"] == "/metadata/annotations")
            assert json.loads(annotations["rossoctl.io/skills"]) == ["live-skill"]
            assert "rossoctl.io/skills-injected" in annotations
