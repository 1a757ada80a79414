"""The HTTP surface of both apps through httpx on the ASGI app (docs/mutation.md, "Validation", "Service surface").

/mutate with the sample review (patch decoded and applied, agent container only, reinvocation a
no-op), uid echo, warnings, denial shapes (409, 503 before sync), 400 for everything that is not an
AdmissionReview, 413 for bodies over 3 MiB (declared or chunked, and not read whole), /validate with
reviews and bare JSON/YAML AgentRuntimes, and the health listener's /healthz, /readyz and /metrics.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import hashlib
import json
import re
import socket
import threading
import time
from pathlib import Path
from typing import Any, AsyncIterator

import httpx
import jsonpatch
import pytest
import uvicorn
import yaml
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from app.core.matching.index import AgentRuntimeIndex
from app.core.model import AgentRuntime
from app.service.cli import main as cli
from app.service.http.app import ServiceState, create_app, create_health_app
from app.sources.files.source import FileSource
from tests.fuzzing import HttpxAppClient
from tests.polling import wait_until

SAMPLES = Path(__file__).resolve().parent.parent / "manifests" / "samples"
SAMPLE_REVIEW_BYTES = (SAMPLES / "admission-review.json").read_bytes()
SAMPLE_REVIEW = json.loads(SAMPLE_REVIEW_BYTES)
SAMPLE_RUNTIMES = list(yaml.safe_load_all((SAMPLES / "agentruntimes.yaml").read_text()))
SAMPLE_UID = SAMPLE_REVIEW["request"]["uid"]
MIB = 1024 * 1024
RESUME = "ghcr.io/redhat-et/skillimage/resume-reviewer:v1.0.0"
BLOG = "ghcr.io/redhat-et/skillimage/blog-writer:latest"


def sample_state(*extra_runtimes: dict[str, Any], synced: bool = True) -> ServiceState:
    """The samples loaded by the file source, as `serve` loads them, plus `extra_runtimes`."""
    index = AgentRuntimeIndex()
    FileSource(index, SAMPLES).reload()
    for runtime in extra_runtimes:
        index.upsert(AgentRuntime.from_object(runtime))
    if synced:
        index.synced.set()
    return ServiceState(index=index)


@pytest.fixture
def state() -> ServiceState:
    return sample_state()


@pytest.fixture
def client(state):
    client = HttpxAppClient(create_app(state))
    yield client
    client.close()


@pytest.fixture
def health(state):
    client = HttpxAppClient(create_health_app(state))
    yield client
    client.close()


def review_of(obj: Any, uid: str = SAMPLE_UID, **request: Any) -> dict[str, Any]:
    review = copy.deepcopy(SAMPLE_REVIEW)
    review["request"].update(uid=uid, object=obj, **request)
    return review


def runtime_review(obj: Any, operation: str = "CREATE", uid: str = "u-1") -> dict[str, Any]:
    request = {
        "uid": uid, "operation": operation, "namespace": "team-a",
        "kind": {"group": "agent.kagenti.dev", "version": "v1alpha1", "kind": "AgentRuntime"},
        "resource": {"group": "agent.kagenti.dev", "version": "v1alpha1", "resource": "agentruntimes"},
        "object": obj, "oldObject": obj if operation == "UPDATE" else None,
    }
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def admission_response(response) -> dict[str, Any]:
    """The `response` of a well-formed AdmissionReview answer (HTTP 200, JSON, v1)."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["apiVersion"] == "admission.k8s.io/v1" and body["kind"] == "AdmissionReview"
    assert isinstance(body["response"]["allowed"], bool)
    return body["response"]


def patch_of(response: dict[str, Any]) -> list[dict[str, Any]]:
    assert response["patchType"] == "JSONPatch"
    return json.loads(base64.b64decode(response["patch"]))


def json_error(response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["code"] == status and isinstance(body["error"], str) and body["error"]
    assert set(body) <= {"error", "code", "detail"}
    return body["error"]


# -- /mutate ---------------------------------------------------------------------------------------


def test_sample_review_mounts_the_skills_into_the_agent_container_only(client):
    response = admission_response(client.post("/mutate", content=SAMPLE_REVIEW_BYTES))
    assert response["uid"] == SAMPLE_UID and response["allowed"] is True
    pod = SAMPLE_REVIEW["request"]["object"]
    patched = jsonpatch.apply_patch(pod, patch_of(response))

    assert patched["spec"]["volumes"] == [
        {"name": "skill-resume-reviewer", "image": {"reference": RESUME}},
        {"name": "skill-blog-writer", "image": {"reference": BLOG, "pullPolicy": "Always"}},
    ]
    sidecar, agent = patched["spec"]["containers"]
    assert sidecar == pod["spec"]["containers"][0]
    assert patched["spec"]["initContainers"] == pod["spec"]["initContainers"]
    assert agent["volumeMounts"] == [
        {"name": "skill-resume-reviewer", "mountPath": "/agent/skills/resume-reviewer", "readOnly": True},
        {"name": "skill-blog-writer", "mountPath": "/app/.claude/skills/blog-writer", "readOnly": True},
    ]
    assert agent["env"] == [
        {"name": "LOG_LEVEL", "value": "info"},
        {"name": "SKILL_FOLDERS", "value": "/agent/skills/resume-reviewer,/app/.claude/skills/blog-writer"},
    ]
    annotations = patched["metadata"]["annotations"]
    assert json.loads(annotations["kagenti.io/skills"]) == ["resume-reviewer", "blog-writer"]
    # The fingerprint is the SHA-256 of the injected skills as canonical JSON, written out here.
    injected_skills = (
        '[{"image":"' + RESUME + '","mountPath":"/agent/skills/resume-reviewer","name":"resume-reviewer"},'
        '{"image":"' + BLOG + '","mountPath":"/app/.claude/skills/blog-writer","name":"blog-writer","pullPolicy":"Always"}]'
    )
    assert json.loads(annotations["kagenti.io/skills-injected"]) == {
        "agentRuntime": "resume-agent-runtime", "container": "resume-agent",
        "skills": {"resume-reviewer": RESUME, "blog-writer": BLOG},
        "fingerprint": "sha256:" + hashlib.sha256(injected_skills.encode()).hexdigest(),
    }
    # Nothing but the documented fields changed.
    unchanged = copy.deepcopy(patched)
    del unchanged["spec"]["volumes"], unchanged["metadata"]["annotations"]
    del unchanged["spec"]["containers"][1]["volumeMounts"]
    unchanged["spec"]["containers"][1]["env"].pop()
    assert unchanged == pod

    again = admission_response(client.post("/mutate", json=review_of(patched)))
    assert again == {"uid": SAMPLE_UID, "allowed": True}


@pytest.mark.parametrize("uid", ["a", "ü-😀-\u2028", "x" * 2000, 'quote " and \\ backslash'])
def test_the_request_uid_is_echoed_by_both_endpoints(client, uid):
    mutate = client.post("/mutate", json=review_of(SAMPLE_REVIEW["request"]["object"], uid))
    assert admission_response(mutate)["uid"] == uid
    validate = client.post("/validate", json=runtime_review(SAMPLE_RUNTIMES[0], "UPDATE", uid))
    assert admission_response(validate)["uid"] == uid


def test_dry_run_and_non_pod_requests(client):
    pod = SAMPLE_REVIEW["request"]["object"]
    dry = admission_response(client.post("/mutate", json=review_of(pod, dryRun=True)))
    assert dry["allowed"] is True and patch_of(dry)  # no side effects, so a dry run gets the same patch
    for request in ({"operation": "UPDATE"}, {"kind": {"group": "apps", "version": "v1", "kind": "Deployment"}}):
        assert admission_response(client.post("/mutate", json=review_of(pod, **request))) == {
            "uid": SAMPLE_UID, "allowed": True}


def test_warnings_for_shadowed_runtimes_and_skill_folders_from_value_from():
    newer = copy.deepcopy(SAMPLE_RUNTIMES[0])
    newer["metadata"].update(name="newer-runtime", creationTimestamp="2026-06-01T00:00:00Z")
    client = HttpxAppClient(create_app(sample_state(newer)))
    try:
        pod = copy.deepcopy(SAMPLE_REVIEW["request"]["object"])
        from_field = {"fieldRef": {"fieldPath": "metadata.name"}}
        pod["spec"]["containers"][1]["env"].append({"name": "SKILL_FOLDERS", "valueFrom": from_field})
        response = admission_response(client.post("/mutate", json=review_of(pod)))
    finally:
        client.close()
    assert response["allowed"] is True
    shadow = [w for w in response["warnings"] if "several AgentRuntimes" in w]
    assert len(shadow) == 1 and '"resume-agent-runtime"' in shadow[0] and '"newer-runtime"' in shadow[0]
    assert any("SKILL_FOLDERS" in w and "valueFrom" in w for w in response["warnings"])
    patched = jsonpatch.apply_patch(pod, patch_of(response))
    assert patched["spec"]["containers"][1]["env"] == pod["spec"]["containers"][1]["env"]


@pytest.mark.parametrize(
    "change, named",
    [
        (lambda p: p["spec"].setdefault("volumes", []).append({"name": "skill-resume-reviewer", "emptyDir": {}}),
         ["resume-agent-runtime", "resume-reviewer", "skill-resume-reviewer"]),
        (lambda p: p["spec"]["containers"][1].setdefault("volumeMounts", []).append(
            {"name": "data", "mountPath": "/app/.claude/skills/blog-writer/"}),
         ["resume-agent-runtime", "blog-writer", "/app/.claude/skills/blog-writer", '"data"']),
        (lambda p: p["metadata"].setdefault("annotations", {}).update({"kagenti.io/agent-container": "nope"}),
         ["resume-agent-runtime", "nope"]),
    ],
    ids=["volume-name-taken", "mount-path-taken", "agent-container-missing"],
)
def test_conflicts_deny_with_409_naming_what_collided(client, change, named):
    pod = copy.deepcopy(SAMPLE_REVIEW["request"]["object"])
    change(pod)
    response = admission_response(client.post("/mutate", json=review_of(pod)))
    assert response["allowed"] is False and "patch" not in response and "patchType" not in response
    assert response["status"]["code"] == 409 and response["status"]["reason"] == "Conflict"
    for text in named:
        assert text in response["status"]["message"]


def test_before_the_first_sync_pods_are_denied_with_a_retryable_503():
    client = HttpxAppClient(create_app(sample_state(synced=False)))
    try:
        pod = SAMPLE_REVIEW["request"]["object"]
        response = admission_response(client.post("/mutate", json=review_of(pod)))
        assert response["allowed"] is False and response["uid"] == SAMPLE_UID
        assert response["status"]["code"] == 503 and "not synchronized" in response["status"]["message"]
        opted_out = copy.deepcopy(pod)
        opted_out["metadata"]["labels"]["kagenti.io/skills-inject"] = "disabled"
        assert admission_response(client.post("/mutate", json=review_of(opted_out)))["allowed"] is True
    finally:
        client.close()


# -- bodies that are not AdmissionReviews ------------------------------------------------------------

_REVIEW = json.dumps(SAMPLE_REVIEW)
NOT_A_REVIEW = {
    "wrong-kind": (json.dumps({**SAMPLE_REVIEW, "kind": "Pod"}).encode(), "kind"),
    "no-kind": (json.dumps({k: v for k, v in SAMPLE_REVIEW.items() if k != "kind"}).encode(), "kind"),
    "wrong-apiVersion": (json.dumps({**SAMPLE_REVIEW, "apiVersion": "admission.k8s.io/v1beta1"}).encode(),
                         "apiVersion"),
    "no-request": (json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}).encode(), "request"),
    "request-null": (json.dumps({**SAMPLE_REVIEW, "request": None}).encode(), "request"),
    "request-list": (json.dumps({**SAMPLE_REVIEW, "request": [SAMPLE_REVIEW["request"]]}).encode(), "request"),
    "no-uid": (json.dumps(review_of({}, uid="")).replace('"uid": "",', "").encode(), "uid"),
    "empty-uid": (json.dumps(review_of({}, uid="")).encode(), "uid"),
    "numeric-uid": (_REVIEW.replace(f'"{SAMPLE_UID}"', "12345").encode(), "uid"),
    "not-json": (b"this is not json", "JSON"),
    "empty": (b"", "empty"),
    "whitespace": (b"  \n ", "JSON"),
    "array": (json.dumps([SAMPLE_REVIEW]).encode(), "object"),
    "string": (b'"AdmissionReview"', "object"),
    "huge-number": (b"9" * 100_000, "JSON"),
    "huge-number-inside": (_REVIEW.replace('"dryRun": false', '"dryRun": ' + "9" * 5000).encode(), "JSON"),
    "invalid-utf8": (_REVIEW.replace("team-a", "team-\udcff", 1).encode("utf-8", "surrogateescape"), "JSON"),
    "truncated": (SAMPLE_REVIEW_BYTES[: len(SAMPLE_REVIEW_BYTES) // 2], "JSON"),
    "deeply-nested": (b"[" * 100_000 + b"]" * 100_000, "JSON"),
}


@pytest.mark.parametrize("body, hint", NOT_A_REVIEW.values(), ids=NOT_A_REVIEW.keys())
def test_mutate_answers_400_with_a_json_error_to_anything_but_a_review(client, body, hint):
    assert hint.lower() in json_error(client.post("/mutate", content=body), 400).lower()


@pytest.mark.parametrize("name", ["wrong-apiVersion", "no-request", "request-null", "no-uid", "empty-uid",
                                  "numeric-uid", "empty", "whitespace", "huge-number", "invalid-utf8", "truncated",
                                  "deeply-nested"])
def test_validate_answers_400_to_a_broken_review_or_unparsable_body(client, name):
    body, _ = NOT_A_REVIEW[name]
    json_error(client.post("/validate", content=body, headers={"content-type": "application/json"}), 400)


def test_validate_reports_the_position_of_a_yaml_syntax_error(client):
    text = "apiVersion: agent.kagenti.dev/v1alpha1\nkind: AgentRuntime\nspec: {type: [agent}\n"
    response = client.post("/validate", content=text, headers={"content-type": "application/yaml"})
    json_error(response, 400)
    assert response.json()["detail"]["line"] == 3


# -- body size -------------------------------------------------------------------------------------


def padded(document: Any, size: int) -> bytes:
    """`document` as JSON padded with trailing whitespace to exactly `size` bytes."""
    text = json.dumps(document).encode()
    return text + b" " * (size - len(text))


@pytest.mark.parametrize("endpoint, document", [("/mutate", SAMPLE_REVIEW), ("/validate", SAMPLE_RUNTIMES[0])])
def test_a_body_over_3_mib_gets_413_and_one_of_exactly_3_mib_is_answered(client, endpoint, document):
    assert "larger than" in json_error(client.post(endpoint, content=padded(document, 3 * MIB + 1)), 413)
    assert client.post(endpoint, content=padded(document, 3 * MIB)).status_code == 200


@pytest.mark.parametrize("endpoint", ["/mutate", "/validate"])
def test_a_chunked_body_over_3_mib_gets_413_without_being_read_whole(client, endpoint):
    chunk, chunks = 64 * 1024, 4 * MIB // (64 * 1024)
    pulled = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal pulled
        for _ in range(chunks):
            pulled += 1
            yield b" " * chunk

    response = client.post(endpoint, content=body())
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in response.request.headers
    json_error(response, 413)
    assert pulled <= 3 * MIB // chunk + 1 < chunks


def test_a_chunked_review_under_the_cap_is_answered(client):
    async def body() -> AsyncIterator[bytes]:
        for i in range(0, len(SAMPLE_REVIEW_BYTES), 100):
            yield SAMPLE_REVIEW_BYTES[i:i + 100]

    assert patch_of(admission_response(client.post("/mutate", content=body())))


# -- /validate -------------------------------------------------------------------------------------


def bad_runtime() -> dict[str, Any]:
    runtime = copy.deepcopy(SAMPLE_RUNTIMES[0])
    runtime["metadata"]["name"] = "bad-runtime"
    runtime["spec"]["targetRef"]["name"] = "another-agent"
    runtime["spec"]["skills"][0]["mountPath"] = "/proc/x"
    runtime["spec"]["skills"][1]["image"] = "Not A Reference"
    return runtime


def test_validate_a_review_allows_with_warnings_and_denies_with_every_error(client):
    allowed = admission_response(client.post("/validate", json=runtime_review(SAMPLE_RUNTIMES[0], "UPDATE")))
    assert allowed["allowed"] is True and allowed["uid"] == "u-1"
    assert any("pinned by digest" in w for w in allowed["warnings"])

    denied = admission_response(client.post("/validate", json=runtime_review(bad_runtime())))
    assert denied["allowed"] is False and denied["status"]["code"] == 422
    assert "spec.skills[0].mountPath" in denied["status"]["message"]
    assert "spec.skills[1].image" in denied["status"]["message"]

    taken = copy.deepcopy(SAMPLE_RUNTIMES[0])
    taken["metadata"]["name"] = "second-runtime"
    response = admission_response(client.post("/validate", json=runtime_review(taken, "CREATE")))
    assert response["allowed"] is False and "spec.targetRef" in response["status"]["message"]


def test_validate_lets_other_kinds_through(client):
    assert admission_response(client.post("/validate", json=review_of(SAMPLE_REVIEW["request"]["object"]))) == {
        "uid": SAMPLE_UID, "allowed": True}


def test_validate_reads_a_review_as_the_api_server_writes_it_and_a_dry_run_strictly(client):
    # The API server's text goes to orjson as it is (it cannot hold a duplicate key; orjson keeps the last).
    kind, twice = '"kind": "AgentRuntime"', '"kind": "Pod", "kind": "AgentRuntime"'
    text = json.dumps(runtime_review(bad_runtime())).replace(kind, twice, 1)
    denied = admission_response(client.post("/validate", content=text, headers={"content-type": "application/json"}))
    assert denied["uid"] == "u-1" and denied["status"]["code"] == 422
    # A person's text goes through the strict loader: the same duplicate in a bare AgentRuntime is a 400.
    bare = json.dumps(bad_runtime()).replace(kind, twice, 1)
    error = json_error(client.post("/validate", content=bare, headers={"content-type": "application/json"}), 400)
    assert 'duplicate key "kind"' in error
    # A review written by hand in YAML is still answered as a review.
    written = yaml.safe_dump(runtime_review(bad_runtime(), uid="u-yaml"))
    by_hand = client.post("/validate", content=written, headers={"content-type": "application/yaml"})
    assert admission_response(by_hand)["uid"] == "u-yaml" and admission_response(by_hand)["allowed"] is False


def report_of(response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"allowed", "errors", "warnings"}
    assert body["allowed"] is (not body["errors"])
    assert all(isinstance(line, str) for line in body["errors"] + body["warnings"])
    return body


@pytest.mark.parametrize("content_type", [None, "application/json", "application/x-www-form-urlencoded"])
def test_validate_a_bare_json_agentruntime(client, content_type):
    headers = {"content-type": content_type} if content_type else {}
    runtime = copy.deepcopy(SAMPLE_RUNTIMES[0])
    runtime["metadata"]["name"] = "fresh"
    runtime["spec"]["targetRef"]["name"] = "fresh-agent"
    report = report_of(client.post("/validate", content=json.dumps(runtime), headers=headers))
    assert report["allowed"] is True and report["errors"] == []
    assert any(w.startswith("spec.skills") and "pinned by digest" in w for w in report["warnings"])
    bad = report_of(client.post("/validate", content=json.dumps(bad_runtime()), headers=headers))
    assert bad["allowed"] is False
    assert [e.split(":")[0] for e in bad["errors"]] == ["spec.skills[0].mountPath", "spec.skills[1].image"]


@pytest.mark.parametrize("content_type", [None, "application/yaml", "text/yaml", "application/x-www-form-urlencoded"])
def test_validate_bare_yaml_one_or_several_documents(client, content_type):
    headers = {"content-type": content_type} if content_type else {}
    single = report_of(client.post("/validate", content=yaml.safe_dump(bad_runtime()), headers=headers))
    assert single["allowed"] is False and any(e.startswith("spec.skills[0].mountPath:") for e in single["errors"])
    several = yaml.safe_dump_all([bad_runtime(), {"kind": "AgentRuntime"}])
    report = report_of(client.post("/validate", content=several, headers=headers))
    assert report["allowed"] is False
    assert any(e.startswith("[0] spec.skills[0].mountPath") for e in report["errors"])
    assert any(e.startswith("[1] ") for e in report["errors"])


# -- methods and paths -----------------------------------------------------------------------------


def test_wrong_method_and_unknown_path_are_4xx(client):
    assert client.get("/mutate").status_code == 405
    assert client.post("/nope", content=SAMPLE_REVIEW_BYTES).status_code == 404


# -- health listener -------------------------------------------------------------------------------


def test_healthz_and_readyz_follow_sync_and_certificate():
    state = sample_state(synced=False)
    loaded = {"value": True}
    state.certificate_loaded = lambda: loaded["value"]
    health = HttpxAppClient(create_health_app(state))
    try:
        assert health.get("/healthz").status_code == 200 and health.get("/healthz").text == "ok\n"
        before = health.get("/readyz")
        assert before.status_code == 503 and before.json()["cacheSynced"] is False
        state.index.synced.set()
        after = health.get("/readyz")
        assert after.status_code == 200
        assert after.json() == {"ready": True, "cacheSynced": True, "certificateLoaded": True, "agentRuntimes": 2}
        loaded["value"] = False
        no_cert = health.get("/readyz")
        assert no_cert.status_code == 503 and no_cert.json()["certificateLoaded"] is False
    finally:
        health.close()


def metric_families(text: str) -> dict[str, Metric]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def sample_value(family: Metric, name: str, **labels: str) -> float:
    matching = [s.value for s in family.samples if s.name == name and s.labels == labels]
    assert len(matching) == 1, (name, labels, family.samples)
    return matching[0]


def test_metrics_expose_the_spec_metrics(client, health, state):
    admission_response(client.post("/mutate", content=SAMPLE_REVIEW_BYTES))
    admission_response(client.post("/validate", json=runtime_review(bad_runtime())))
    report_of(client.post("/validate", content=yaml.safe_dump(SAMPLE_RUNTIMES[1])))
    client.post("/mutate", content=b"nope")
    client.post("/mutate", content=padded(SAMPLE_REVIEW, 3 * MIB + 1))

    response = health.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    families = metric_families(response.text)
    admissions = families["skill_webhook_admissions"]
    assert admissions.type == "counter"
    assert sample_value(admissions, "skill_webhook_admissions_total", endpoint="mutate", decision="injected") == 1
    assert sample_value(admissions, "skill_webhook_admissions_total", endpoint="validate", decision="denied") == 1
    assert sample_value(admissions, "skill_webhook_admissions_total", endpoint="validate-dry-run",
                        decision="allowed") == 1
    latency = families["skill_webhook_admission_duration_seconds"]
    assert latency.type == "histogram"
    assert sample_value(latency, "skill_webhook_admission_duration_seconds_count", endpoint="mutate") == 1
    assert sample_value(families["skill_webhook_skills_injected"], "skill_webhook_skills_injected_total",
                        delivery="image") == 2
    assert sample_value(families["skill_webhook_pods_injected"], "skill_webhook_pods_injected_total", delivery="image") == 1
    assert sample_value(families["skill_webhook_cache_synced"], "skill_webhook_cache_synced") == 1
    assert sample_value(families["skill_webhook_agentruntimes_cached"], "skill_webhook_agentruntimes_cached") == 2
    assert families["skill_webhook_watch_restarts"].type == "counter"
    # The certificate expiry is set by `serve` from the certificate it loads: tests/test_serve_process.py.
    bad = families["skill_webhook_bad_requests"]
    assert sample_value(bad, "skill_webhook_bad_requests_total", endpoint="mutate", code="400") == 1
    assert sample_value(bad, "skill_webhook_bad_requests_total", endpoint="mutate", code="413") == 1


# -- the dry run and `skill-webhook validate` agree --------------------------------------------------

_ON_ONE_WORKLOAD = yaml.safe_dump_all([
    SAMPLE_RUNTIMES[0],
    {**SAMPLE_RUNTIMES[0], "metadata": {"name": "second", "namespace": "team-a"}},
])
_LIST_WITH_A_BAD_ITEM = yaml.safe_dump(
    {"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}},
        {**SAMPLE_RUNTIMES[0], "spec": {**SAMPLE_RUNTIMES[0]["spec"], "type": "robot"}},
    ]}
)
_ANNOTATION_FORM = yaml.safe_dump({
    "apiVersion": "agent.kagenti.dev/v1alpha1", "kind": "AgentRuntime",
    "metadata": {"name": "annotated", "namespace": "team-a", "annotations": {
        "kagenti.io/skill-images": json.dumps([{"name": "a", "image": RESUME, "mountPath": "/proc/a"}]),
    }},
    "spec": {"type": "agent", "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "x"},
             "authBridgeMode": "sidecar", "mtlsMode": "strict", "egressEnforcement": "on", "tlsBridgeMode": "off",
             "identity": {"spiffe": True}, "trace": {"enabled": True}},
    "status": {"card": {"name": "annotated"}},
})
_DUPLICATE_KEY = "apiVersion: agent.kagenti.dev/v1alpha1\nkind: AgentRuntime\nkind: AgentRuntime\n"


@pytest.mark.parametrize(
    "text, allowed, errors",
    [
        pytest.param(_ON_ONE_WORKLOAD, False, [
            'spec.targetRef: Forbidden: AgentRuntime "resume-agent-runtime" already targets Deployment '
            '"resume-agent" in namespace "team-a"; a workload takes its skills from one AgentRuntime',
        ], id="two-on-one-workload"),
        pytest.param(_LIST_WITH_A_BAD_ITEM, False, [
            'spec.type: Unsupported value: "robot": supported values: "agent", "tool"',
        ], id="kind-list-opened"),
        pytest.param(_ANNOTATION_FORM, False, [
            'metadata.annotations[kagenti.io/skill-images][0].mountPath: Invalid value: "/proc/a": '
            "must not be /proc or beneath it",
        ], id="skills-in-the-annotation"),
        pytest.param(yaml.safe_dump(SAMPLE_RUNTIMES[0]), True, [], id="valid"),
    ],
)
def test_dry_run_and_the_cli_give_the_same_verdict(text, allowed, errors, tmp_path, capsys):
    # An empty cache: the verdict then depends on the text alone, as it does offline.
    state = ServiceState(index=AgentRuntimeIndex())
    state.index.synced.set()
    client = HttpxAppClient(create_app(state))
    report = report_of(client.post("/validate", content=text, headers={"content-type": "application/yaml"}))
    client.close()
    assert report["allowed"] is allowed
    assert [re.sub(r"^(\[\d+\])?(\.?items\[\d+\])? ", "", e) for e in report["errors"]] == errors

    path = tmp_path / "runtimes.yaml"
    path.write_text(text)
    assert cli.main(["validate", str(path)]) == (0 if allowed else 1)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(": ", 1)[1] for line in lines if ": warning: " not in line] == errors


def test_dry_run_and_the_cli_refuse_a_duplicate_key_at_its_position(client, tmp_path, capsys):
    response = client.post("/validate", content=_DUPLICATE_KEY, headers={"content-type": "application/yaml"})
    assert "duplicate key \"kind\"" in json_error(response, 400)
    assert response.json()["detail"] == {
        "message": "duplicate key \"kind\": the API server's strict decoding refuses it", "line": 3, "column": 1,
    }
    path = tmp_path / "dup.yaml"
    path.write_text(_DUPLICATE_KEY)
    assert cli.main(["validate", str(path)]) == 1
    assert capsys.readouterr().out == f"{path}:3:1: duplicate key \"kind\": the API server's strict decoding refuses it\n"


def test_dry_run_names_a_huge_integer_and_where_it_is(client):
    text = yaml.safe_dump(SAMPLE_RUNTIMES[0]) + "extra: " + "9" * 5000 + "\n"
    response = client.post("/validate", content=text, headers={"content-type": "application/yaml"})
    error = json_error(response, 400)
    assert "integer 99999999999999999999...(5000 characters) is outside the 64-bit range" in error
    assert "int_max_str_digits" not in error and "Exceeds the limit" not in error
    assert response.json()["detail"]["line"] == text.count("\n")


def test_rossoctl_schema_fields_pass_through_untouched(client):
    runtime = yaml.safe_load(_ANNOTATION_FORM)
    runtime["metadata"]["annotations"]["kagenti.io/skill-images"] = json.dumps(
        [{"name": "a", "image": RESUME + "@sha256:" + "0" * 64, "mountPath": "/skills/a"}]
    )
    report = report_of(client.post("/validate", content=json.dumps(runtime)))
    assert report == {"allowed": True, "errors": [], "warnings": []}


# -- a body that trickles in -------------------------------------------------------------------------


@pytest.mark.slow  # waits out a 2 s body timeout
def test_trickling_bodies_get_408_and_closed_and_do_not_slow_normal_requests():
    state = sample_state()
    state.body_timeout = 2.0  # BODY_TIMEOUT_SECONDS (10 s) in production
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    port = listener.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(state), log_config=None, access_log=False, lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    tricklers: list[socket.socket] = []
    try:
        wait_until(lambda: server.started, 10, "uvicorn to start")
        head = (b"POST /mutate HTTP/1.1\r\nHost: webhook\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100000\r\n\r\n{")
        for _ in range(300):
            conn = socket.create_connection(("127.0.0.1", port))
            conn.sendall(head)
            tricklers.append(conn)
        started = time.monotonic()
        stop = threading.Event()

        def trickle() -> None:  # one byte per connection every 0.2 s, until each is cut
            while not stop.wait(0.2):
                for conn in tricklers:
                    with contextlib.suppress(OSError):
                        conn.send(b" ")

        trickler = threading.Thread(target=trickle, daemon=True)
        trickler.start()
        latencies = []
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as normal:
            while time.monotonic() - started < 1.5:  # well inside the 2 s the tricklers are allowed
                before = time.monotonic()
                response = normal.post("/mutate", content=SAMPLE_REVIEW_BYTES,
                                       headers={"content-type": "application/json"})
                latencies.append(time.monotonic() - before)
                assert admission_response(response)["allowed"] is True
        assert len(latencies) >= 3 and max(latencies) < 1.0  # generous: a few ms each when not starved

        answers = []
        for conn in tricklers:
            conn.settimeout(15)
            received = b""
            with contextlib.suppress(ConnectionResetError):
                while chunk := conn.recv(65536):  # until the server closes the connection
                    received += chunk
            answers.append(received)
        stop.set()
        trickler.join(timeout=5)
        assert time.monotonic() - started < 15
        for received in answers:
            assert received.startswith(b"HTTP/1.1 408 "), received[:200]
            headers, _, body = received.partition(b"\r\n\r\n")
            assert b"connection: close" in headers.lower()
            assert json.loads(body) == {"error": "request body not received within 2 s of its headers", "code": 408}
    finally:
        for conn in tricklers:
            conn.close()
        server.should_exit = True
        thread.join(timeout=10)
        listener.close()
