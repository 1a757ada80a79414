"""The real `skill-webhook serve --kubeconfig K` process against the stand-in API server: pods are
mutated from live AgentRuntimes, and changes on the server reach the next admission."""

from __future__ import annotations

import base64
import json
import threading
import time

import httpx
import pytest

from tests.apiserver_standin import agentruntime
from tests.informer_harness import running_standin
from tests.polling import wait_until
from tests.serve_process import SAMPLE_REVIEW_BYTES

pytestmark = pytest.mark.process

SKILL = {"name": "live-skill", "image": "ghcr.io/example/live-skill:v1", "mountPath": "/skills/live"}


def mutate(served) -> dict:
    with httpx.Client(verify=served.verified_context(), timeout=10) as client:
        response = client.post(served.url + "/mutate", content=SAMPLE_REVIEW_BYTES)
    assert response.status_code == 200
    return response.json()["response"]


def injected_images(answer: dict) -> list[str]:
    patch = json.loads(base64.b64decode(answer["patch"])) if answer.get("patch") else []
    return [v["image"]["reference"] for op in patch if op["path"] == "/spec/volumes" for v in op["value"]]


def test_serve_with_a_kubeconfig_mutates_from_live_agentruntimes(serve_process) -> None:
    with running_standin() as server:
        server.create(agentruntime("live", skills=[SKILL]))
        served = serve_process("--image-volumes", "on", kube_api=server.url)
        assert injected_images(mutate(served)) == ["ghcr.io/example/live-skill:v1"]

        updated = agentruntime("live", skills=[{**SKILL, "image": "ghcr.io/example/live-skill:v2"}])
        server.update(updated)
        wait_until(lambda: injected_images(mutate(served)) == ["ghcr.io/example/live-skill:v2"], what="the update applied")

        server.delete("team-a", "live")
        wait_until(lambda: "patch" not in mutate(served), what="the deletion applied")
        log = served.log.read_text()
        assert "image volumes on" in log and '"source":"kube"' in log


def test_no_admission_misses_the_agentruntime_while_modified_events_stream(serve_process) -> None:
    """The black-box side of the index's single-assignment updates: the informer thread applies a
    stream of MODIFIED events to the AgentRuntime while /mutate is hammered over one connection; every
    answer must carry the skill (one version or the next), never a pod admitted without it."""
    with running_standin() as server:
        server.create(agentruntime("live", skills=[SKILL]))
        served = serve_process("--image-volumes", "on", "--log-level", "warning", kube_api=server.url)
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


def test_an_agentruntime_whose_crd_pruned_spec_skills_is_served_from_its_annotation(serve_process) -> None:
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
        served = serve_process("--image-volumes", "on", "--domain", "rossoctl.io",
                               "--agentruntime-api", "agent.rossoctl.dev/v1alpha1", kube_api=server.url)
        with httpx.Client(verify=served.verified_context(), timeout=10) as client:
            answer = client.post(served.url + "/mutate", content=review).json()["response"]
        assert injected_images(answer) == ["ghcr.io/example/live-skill:v1"]
        patch = json.loads(base64.b64decode(answer["patch"]))
        annotations = next(op["value"] for op in patch if op["path"] == "/metadata/annotations")
        assert json.loads(annotations["rossoctl.io/skills"]) == ["live-skill"]
        assert "rossoctl.io/skills-injected" in annotations
