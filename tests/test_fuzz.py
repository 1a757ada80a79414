"""Fuzzing both admission endpoints in-process (docs/testing.md "Hostile input and fuzzing"): zero 5xx, zero crashes, every answer a
well-formed AdmissionReview, a dry-run report, or a 400/413 JSON error (judged by tests/fuzzing.py).

- the volume run: SKILL_WEBHOOK_FUZZ_INPUTS generated and mutated inputs (default 5,000 in the full
  run and on CI, 500 in the fast run; scripts/fuzz runs 100,000+ through the same harness), seed
  SKILL_WEBHOOK_FUZZ_SEED;
- hypothesis: the same generators driven by hypothesis' Random (so failures shrink), arbitrary
  JSON values, YAML texts and raw bytes, sent with httpx through ASGITransport;
- hostile input with a clock: alias bombs and 1 MiB of nesting get a 400 within 1 s, and no YAML
  tag constructs anything.
"""

from __future__ import annotations

import json
import os
import random
import time

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from app.service.http.app import create_app
from tests.fuzz_inputs import (
    FuzzInput,
    SAMPLE_REVIEW,
    SAMPLE_RUNTIMES,
    YAML_TAGS,
    alias_bomb,
    deep_json,
    deep_yaml,
    mutate_bytes,
    mutate_value,
    random_agentruntime,
    random_pod,
    random_review,
    runtime_review,
)
from tests.fuzzing import (
    DEFAULT_SEED,
    FUZZ_INPUTS_ENV,
    FUZZ_SEED_ENV,
    HttpxAppClient,
    answer_of,
    check_answer,
    fuzz_state,
    run_fuzz,
    strict_json_or_none,
)

MIB = 1024 * 1024
HOSTILE_DEADLINE = 1.0  # alias bombs and deep nesting refused within 1 s
ENDPOINTS = st.sampled_from(["/mutate", "/validate"])
CONTENT_TYPES = st.sampled_from([None, "application/json", "application/yaml", "text/plain",
                                 "application/x-www-form-urlencoded"])


@pytest.fixture(scope="module")
def client():
    client = HttpxAppClient(create_app(fuzz_state()))
    yield client
    client.close()


def send(client: HttpxAppClient, endpoint: str, body: bytes, content_type: str | None = None,
         family: str = "hypothesis") -> str:
    """POST through httpx and judge the answer; returns its class."""
    headers = {"content-type": content_type} if content_type else {}
    started = time.perf_counter()
    response = client.post(endpoint, content=body, headers=headers)
    inp = FuzzInput(family, endpoint, body, content_type)

    def reinvoke(patched):
        review = json.loads(body)
        review["request"]["object"] = patched
        return answer_of(client.post("/mutate", content=json.dumps(review).encode()))  # ASCII: lone surrogates too

    return check_answer(inp, answer_of(response, time.perf_counter() - started), reinvoke)


# -- volume ----------------------------------------------------------------------------------------


def test_generated_and_mutated_inputs_get_only_allowed_answers(full_run):
    count = int(os.environ.get(FUZZ_INPUTS_ENV) or (5000 if full_run else 500))
    report = run_fuzz(count, int(os.environ.get(FUZZ_SEED_ENV, DEFAULT_SEED)))
    assert report.failure_count == 0, report.summary()
    assert report.count == count
    if count >= 5000:  # enough inputs that every kind of answer must have come up
        for answer in ("review/allowed", "review/allowed/patch", "review/denied/409", "review/denied/422",
                       "report/allowed", "report/denied", "error/400", "error/413"):
            assert report.classes[answer] > 0, report.summary()


# -- every field as every type ------------------------------------------------------------------------

# One value of each JSON type (and shapes the code indexes into), to put in place of each field.
# 2**63 - 1: the largest integer the API server holds (beyond it: 400, see the test below).
REPLACEMENTS = [None, True, 0, -1, 2**63 - 1, 1.5, "", "x", [], [None], [{}], {}, {"name": "x"}]


def field_paths(value, prefix: tuple = ()):
    """The path of every field and list item under `value`."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        yield (*prefix, key)
        yield from field_paths(child, (*prefix, key))


def replaced(value, path: tuple, new):
    copy_ = json.loads(json.dumps(value))
    parent = copy_
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = new
    return copy_


def _busy_pod() -> dict:
    """The sample pod with something already in every place the patch extends."""
    pod = json.loads(json.dumps(SAMPLE_REVIEW["request"]["object"]))
    pod["metadata"]["annotations"] = {"kagenti.io/skills": '["other"]', "kagenti.io/agent-container": "resume-agent"}
    pod["spec"]["volumes"] = [
        {"name": "skill-resume-reviewer", "image": {"reference": SAMPLE_RUNTIMES[0]["spec"]["skills"][0]["image"]}},
        {"name": "data", "emptyDir": {}},
    ]
    agent = pod["spec"]["containers"][1]
    agent["volumeMounts"] = [{"name": "skill-resume-reviewer", "mountPath": "/agent/skills/resume-reviewer"}]
    agent["env"].append({"name": "SKILL_FOLDERS", "value": "/x"})
    return pod


BUSY_POD = _busy_pod()


def test_every_field_of_a_pod_as_every_type(client):
    classes = set()
    for path in field_paths(BUSY_POD):
        for new in REPLACEMENTS:
            review = {**SAMPLE_REVIEW, "request": {**SAMPLE_REVIEW["request"], "object": replaced(BUSY_POD, path, new)}}
            classes.add(send(client, "/mutate", json.dumps(review).encode(), family=f"pod{list(path)}={new!r}"))
    assert {"review/allowed/patch", "review/denied/400", "review/denied/409"} <= classes


@pytest.mark.parametrize("number", ["9223372036854775808", "-9223372036854775809", "1" * 5000, "1e400"])
def test_a_number_the_api_server_cannot_hold_is_a_400_naming_its_place(client, number):
    text = json.dumps(SAMPLE_RUNTIMES[0]).replace('"type": "agent"', f'"type": {number}', 1)
    response = client.post("/validate", content=text, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    message = response.json()["detail"]["message"]
    assert number[:20] in message and message.endswith("(at spec.type)")
    # An AdmissionReview is read by orjson as the API server wrote it (the API server holds no such
    # number): what orjson reads is reviewed, what it refuses goes to the strict loader.
    review = json.dumps(runtime_review(random.Random(0), "OBJECT")).replace('"OBJECT"', text, 1)
    response = client.post("/validate", content=review, headers={"content-type": "application/json"})
    if response.status_code == 200:
        status = response.json()["response"]["status"]
        assert status["code"] == 422 and "spec.type: Invalid value" in status["message"]
    else:
        assert response.json()["detail"]["message"].endswith("(at request.object.spec.type)"), response.text


def test_every_field_of_an_agentruntime_as_every_type(client):
    runtime = SAMPLE_RUNTIMES[0]
    for path in field_paths(runtime):
        for new in REPLACEMENTS:
            broken = replaced(runtime, path, new)
            assert send(client, "/validate", json.dumps(broken).encode()).startswith("report/")
            review = runtime_review(random.Random(0), broken)
            review["request"]["operation"] = "UPDATE"
            assert send(client, "/validate", json.dumps(review).encode()).startswith("review/")


# -- hypothesis --------------------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=25,
)


@given(rng=st.randoms(use_true_random=False))
def test_generated_pod_reviews(client, rng: random.Random):
    review = random_review(rng, random_pod(rng))
    body = json.dumps(review).encode()
    answer = send(client, "/mutate", body)
    # A generated uid or name may hold a lone surrogate: not I-JSON, so a 400 is a right answer too.
    assert answer.startswith("review/") or (strict_json_or_none(body) is None and answer == "error/400")


@given(rng=st.randoms(use_true_random=False), form=st.sampled_from(["json", "yaml", "review"]))
def test_generated_agentruntimes(client, rng: random.Random, form: str):
    runtime = random_agentruntime(rng)
    if form == "review":
        body = json.dumps(runtime_review(rng, runtime)).encode()
        answer = send(client, "/validate", body)
        # As for pods: a generated uid may hold a lone surrogate, not I-JSON, so a 400 is right too.
        assert answer.startswith("review/") or (strict_json_or_none(body) is None and answer == "error/400")
    elif form == "yaml":
        assert send(client, "/validate", yaml.safe_dump(runtime).encode(), "application/yaml").startswith("report/")
    else:
        assert send(client, "/validate", json.dumps(runtime).encode()).startswith("report/")


@given(rng=st.randoms(use_true_random=False), rounds=st.integers(1, 6), endpoint=ENDPOINTS)
def test_structural_mutations_of_the_samples(client, rng: random.Random, rounds: int, endpoint: str):
    base = SAMPLE_REVIEW if endpoint == "/mutate" else rng.choice(SAMPLE_RUNTIMES)
    send(client, endpoint, json.dumps(mutate_value(rng, base, rounds)).encode(), "application/json")


@given(rng=st.randoms(use_true_random=False), endpoint=ENDPOINTS)
def test_byte_mutations_of_the_samples(client, rng: random.Random, endpoint: str):
    base = json.dumps(SAMPLE_REVIEW).encode() if endpoint == "/mutate" else yaml.safe_dump(SAMPLE_RUNTIMES[0]).encode()
    send(client, endpoint, mutate_bytes(rng, base))


@given(value=JSON_VALUES, endpoint=ENDPOINTS, content_type=CONTENT_TYPES)
def test_arbitrary_json_values(client, value, endpoint: str, content_type):
    send(client, endpoint, json.dumps(value).encode(), content_type)


@given(value=JSON_VALUES, uid=st.text(min_size=1), endpoint=ENDPOINTS)
def test_arbitrary_request_objects_in_a_valid_envelope(client, value, uid: str, endpoint: str):
    review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
              "request": {**SAMPLE_REVIEW["request"], "uid": uid, "object": value}}
    if endpoint == "/validate":
        review["request"]["kind"] = {"group": "agent.kagenti.dev", "version": "v1alpha1", "kind": "AgentRuntime"}
    assert send(client, endpoint, json.dumps(review).encode(), "application/json").startswith("review/")


@given(text=st.text(alphabet=st.sampled_from(list("{}[]-:?,&*!|>'\"%@`#\n\t ab01.~")) | st.characters(),
                    max_size=300),
       content_type=CONTENT_TYPES)
def test_arbitrary_yaml_text(client, text: str, content_type):
    send(client, "/validate", text.encode("utf-8", "surrogatepass"), content_type)


@given(body=st.binary(max_size=2048), endpoint=ENDPOINTS, content_type=CONTENT_TYPES)
def test_raw_bytes(client, body: bytes, endpoint: str, content_type):
    send(client, endpoint, body, content_type)


# -- hostile input with a clock ------------------------------------------------------------------------


def refused_quickly(client: HttpxAppClient, endpoint: str, body: bytes, content_type: str | None) -> str:
    headers = {"content-type": content_type} if content_type else {}
    started = time.perf_counter()
    response = client.post(endpoint, content=body, headers=headers)
    elapsed = time.perf_counter() - started
    assert response.status_code == 400, response.text[:500]
    assert elapsed < HOSTILE_DEADLINE, f"{elapsed:.2f} s"
    error = response.json()
    assert error["code"] == 400
    return json.dumps(error)


@pytest.mark.parametrize("content_type", [None, "application/yaml", "application/x-www-form-urlencoded"])
@pytest.mark.parametrize("levels, width", [(9, 9), (30, 2), (3, 1000)])
def test_alias_bombs_get_400_within_a_second(client, levels, width, content_type):
    bomb = alias_bomb(levels, width)  # 9 levels of 9: 387 million strings if expanded
    assert "anchors are not allowed" in refused_quickly(client, "/validate", bomb.encode(), content_type)
    inside = yaml.safe_dump(SAMPLE_RUNTIMES[0]).replace("spec:\n", "bomb:\n" + _indent(bomb) + "spec:\n")
    refused_quickly(client, "/validate", inside.encode(), content_type)
    refused_quickly(client, "/mutate", bomb.encode(), content_type)


def _indent(text: str) -> str:
    return "".join("  " + line + "\n" for line in text.splitlines())


def mib_of_nesting(kind: str) -> bytes:
    if kind == "json-array":
        return b"[" * MIB + b"]" * MIB
    if kind == "json-object":
        return deep_json(MIB // 5 | 1).encode()
    if kind == "yaml-flow":
        return deep_yaml(MIB // 2, "flow").encode()
    if kind == "yaml-block-seq":
        return deep_yaml(MIB // 2, "block-seq").encode()
    return deep_yaml(1448, "block-map").encode()  # 1448 levels of indentation: about 1 MiB


@pytest.mark.parametrize("kind", ["json-array", "json-object", "yaml-flow", "yaml-block-seq", "yaml-block-map"])
@pytest.mark.parametrize("endpoint", ["/mutate", "/validate"])
def test_a_mib_of_nesting_gets_400_within_a_second(client, kind, endpoint):
    body = mib_of_nesting(kind)
    assert MIB * 0.9 < len(body) <= 3 * MIB
    content_type = "application/json" if kind.startswith("json") else "application/yaml"
    refused_quickly(client, endpoint, body, content_type)


@pytest.mark.parametrize("tag", YAML_TAGS)
def test_no_yaml_tag_constructs_an_object(client, tag, tmp_path):
    marker = tmp_path / "constructed"
    tag = tag.replace("echo pwned", f"touch {marker}")
    runtime = yaml.safe_dump(SAMPLE_RUNTIMES[0]).replace("type: agent", f"type: {tag}", 1)
    response = client.post("/validate", content=runtime, headers={"content-type": "application/yaml"})
    assert not marker.exists()
    if tag.startswith(("!!str", "!!int", "!!bool", "!!null", "!!float")) and ".nan" not in tag:
        # The JSON-compatible tags are plain values; the field check then has its say.
        report = response.json()
        assert response.status_code == 200 and set(report) == {"allowed", "errors", "warnings"}
    else:
        assert response.status_code == 400, response.text
        assert response.json()["code"] == 400


def test_json_numbers_beyond_the_digit_limit_get_400(client):
    for endpoint in ("/mutate", "/validate"):
        refused_quickly(client, endpoint, b"1" * 5000, "application/json")
        runtime = json.dumps(SAMPLE_RUNTIMES[0]).replace('"type": "agent"', '"type": ' + "7" * 5000)
        refused_quickly(client, endpoint, runtime.encode(), "application/json")
