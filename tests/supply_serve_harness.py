"""A real `skill-webhook serve` process with its registry resolver on, for the supply-chain tests
(docs/registries.md): AgentRuntimes written as files, pods sent to `/mutate` over
one keep-alive HTTPS connection, metrics read from `/metrics`.

Builds on tests/serve_process.py (`serving`: the process, certificates, readiness, SIGTERM at
the end) and tests/builders.py (AgentRuntimes, pods, AdmissionReviews).
"""

from __future__ import annotations

import base64
import json
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import httpx
import jsonpatch
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.builders import admission_review, deployment_pod, runtime_object, skill
from tests.serve_process import Served, serving

NAMESPACE = "team-a"


def write_runtimes(directory: Path, runtimes: dict[str, list[dict[str, Any]]]) -> Path:
    """One file of AgentRuntimes: runtime name -> its skills; each targets Deployment `<name>-agent`."""
    directory.mkdir(parents=True, exist_ok=True)
    documents = [
        runtime_object(name, target=f"{name}-agent", skills=skills, namespace=NAMESPACE)
        for name, skills in runtimes.items()
    ]
    (directory / "agentruntimes.yaml").write_text(yaml.safe_dump_all(documents))
    return directory


def skill_entry(name: str, image: str) -> dict[str, Any]:
    return skill(name, image, f"/agent/skills/{name}")


def pod_review(runtime: str) -> dict[str, Any]:
    """The AdmissionReview of a new pod of Deployment `<runtime>-agent`, with a fresh uid."""
    pod = deployment_pod(deployment=f"{runtime}-agent", labels={"app": runtime})
    return admission_review(pod, namespace=NAMESPACE, uid=str(uuid.uuid4()))


@dataclass
class Answer:
    """One AdmissionReview response, with the pod as the API server would store it."""

    response: dict[str, Any]
    pod: dict[str, Any]

    @property
    def allowed(self) -> bool:
        return bool(self.response["allowed"])

    @property
    def code(self) -> int | None:
        return self.response.get("status", {}).get("code")

    @property
    def message(self) -> str:
        return self.response.get("status", {}).get("message", "")

    @property
    def warnings(self) -> list[str]:
        return list(self.response.get("warnings") or [])

    def volume_references(self) -> dict[str, str]:
        return {v["name"]: v["image"]["reference"] for v in self.pod["spec"].get("volumes", []) if "image" in v}

    def annotation(self, key: str) -> Any:
        value = self.pod["metadata"].get("annotations", {}).get(key)
        return json.loads(value) if value is not None else None


@dataclass
class Webhook:
    """A started serve process and one keep-alive HTTPS client to it."""

    served: Served
    client: httpx.Client

    def mutate(self, runtime: str) -> Answer:
        review = pod_review(runtime)
        reply = self.client.post(self.served.url + "/mutate", content=json.dumps(review),
                                 headers={"content-type": "application/json"})
        assert reply.status_code == 200, reply.text
        response = reply.json()["response"]
        assert response["uid"] == review["request"]["uid"]
        pod = review["request"]["object"]
        if response.get("patch"):
            pod = jsonpatch.apply_patch(pod, json.loads(base64.b64decode(response["patch"])))
        return Answer(response, pod)

    def dry_run(self, document: dict[str, Any]) -> dict[str, Any]:
        """The plain report `/validate` answers for a bare AgentRuntime."""
        reply = self.client.post(self.served.url + "/validate", content=json.dumps(document),
                                 headers={"content-type": "application/json"})
        assert reply.status_code == 200, reply.text
        return reply.json()

    def validate(self, document: dict[str, Any]) -> dict[str, Any]:
        """The AdmissionReview response `/validate` answers for an AgentRuntime CREATE."""
        review = admission_review(document, namespace=NAMESPACE, uid=str(uuid.uuid4()),
                                  kind=("agent.kagenti.dev", "v1alpha1", "AgentRuntime"))
        reply = self.client.post(self.served.url + "/validate", content=json.dumps(review),
                                 headers={"content-type": "application/json"})
        assert reply.status_code == 200, reply.text
        return reply.json()["response"]

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of /metrics: (sample name, sorted labels) -> value."""
        text = httpx.get(self.served.metrics_url + "/metrics", timeout=5).text
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples
        }

    def metric(self, name: str, **labels: str) -> float:
        return self.metrics().get((name, tuple(sorted(labels.items()))), 0.0)

    def alive(self) -> bool:
        return self.served.process.poll() is None and \
            httpx.get(self.served.metrics_url + "/healthz", timeout=5).status_code == 200

    def log(self) -> str:
        return self.served.log.read_text()


@contextmanager
def webhook(tmp_path: Path, runtimes: Path, *flags: str) -> Iterator[Webhook]:
    """`serve --source file --runtimes RUNTIMES FLAGS...`, ready, with a keep-alive client."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    with serving(tmp_path, "--runtimes", str(runtimes), "--log-level", "warning", *flags) as served:
        with httpx.Client(verify=served.verified_context(), timeout=10) as client:
            yield Webhook(served, client)
