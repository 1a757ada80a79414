"""Every validation rule, table-driven from tests/validation_cases/rules.yaml, plus the /validate
admission decision and a property: validation never raises, whatever it is given."""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from app.core.admission import admission_response, parse_admission_review
from app.core.matching.index import AgentRuntimeIndex
from app.core.model import AgentRuntime
from app.core.validation.agentruntime import ValidationOptions, review_agentruntime, validate_agentruntime
from app.core.validation.skills import DNS1123_LABEL_MESSAGE

CASES_FILE = Path(__file__).parent / "validation_cases" / "rules.yaml"
LONG_PATH = "/" + "x" * 4100
_PATH_TOKEN_RE = re.compile(r'\.?([A-Za-z0-9_$-]+)|\[(\d+)\]|\["((?:[^"\\]|\\.)*)"\]')


@dataclass
class RuleCase:
    id: str
    object: Any
    errors: list[str]
    warnings: list[str]
    crd_rejects: bool
    options: ValidationOptions = ValidationOptions()
    operation: str = "CREATE"
    index: AgentRuntimeIndex = field(default_factory=AgentRuntimeIndex)
    old_object: Any = None


def parse_path(path: str) -> list[str | int]:
    """'spec.skills[1]["a.b"]' -> ["spec", "skills", 1, "a.b"]."""
    parts: list[str | int] = []
    position = 0
    while position < len(path):
        match = _PATH_TOKEN_RE.match(path, position)
        assert match, f"bad path {path!r} at {position}"
        name, index, quoted = match.groups()
        parts.append(int(index) if index is not None else name if name is not None else json.loads(f'"{quoted}"'))
        position = match.end()
    return parts


def set_path(obj: Any, path: str, value: Any) -> None:
    *parents, last = parse_path(path)
    for part in parents:
        obj = obj[part]
    obj[last] = value


def delete_path(obj: Any, path: str) -> None:
    *parents, last = parse_path(path)
    for part in parents:
        obj = obj[part]
    del obj[last]


def _placeholders(value: Any) -> Any:
    if value == "LONG_PATH":
        return LONG_PATH
    if isinstance(value, str):
        rendered = json.dumps(LONG_PATH[:256]) + "...(truncated)"
        return value.replace("<dns-label>", DNS1123_LABEL_MESSAGE).replace("LONG_PATH_RENDERED", rendered)
    return value


def load_rule_cases() -> list[RuleCase]:
    table = yaml.safe_load(CASES_FILE.read_text())
    base = table["base"]
    cases = []
    for raw in table["cases"]:
        obj = copy.deepcopy(raw["object"]) if "object" in raw else copy.deepcopy(base)
        for path in raw.get("delete", []):
            delete_path(obj, path)
        for path, value in raw.get("set", {}).items():
            set_path(obj, path, _placeholders(copy.deepcopy(value)))
        if "generate_skills" in raw:
            obj["spec"]["skills"] = [
                {"name": f"skill-{i}", "image": base["spec"]["skills"][0]["image"], "mountPath": f"/skills/s{i}"}
                for i in range(raw["generate_skills"])
            ]
        case = RuleCase(
            id=raw["id"],
            object=obj,
            errors=[_placeholders(e) for e in raw.get("errors", [])],
            warnings=[_placeholders(w) for w in raw.get("warnings", [])],
            crd_rejects=raw.get("crd") == "rejects",
            options=ValidationOptions(registry_allow=tuple(raw.get("options", {}).get("registry_allow", ()))),
            operation=raw.get("operation", "CREATE"),
        )
        for other in raw.get("others", []):
            case.index.upsert(_other_runtime(base, other))
        if "old_target" in raw:
            case.old_object = copy.deepcopy(obj)
            case.old_object["spec"]["targetRef"] = raw["old_target"]
        cases.append(case)
    return cases


def _other_runtime(base: dict, other: dict) -> AgentRuntime:
    obj = copy.deepcopy(base)
    obj["metadata"] = {
        "name": other["name"],
        "namespace": other.get("namespace", base["metadata"]["namespace"]),
        "creationTimestamp": other.get("creationTimestamp", "2026-01-01T00:00:00Z"),
    }
    if "targetRef" in other:
        obj["spec"]["targetRef"] = other["targetRef"]
    return AgentRuntime.from_object(obj)


RULE_CASES = load_rule_cases()


@pytest.mark.parametrize("case", RULE_CASES, ids=[c.id for c in RULE_CASES])
def test_rule(case: RuleCase) -> None:
    report = validate_agentruntime(
        case.object, operation=case.operation, index=case.index, options=case.options, old_object=case.old_object
    )
    assert report.errors == case.errors
    assert report.warnings == case.warnings
    assert report.allowed == (not case.errors)
    assert report.as_dict() == {"allowed": not case.errors, "errors": case.errors, "warnings": case.warnings}


def test_table_has_a_passing_and_a_failing_case_for_every_field() -> None:
    failing_fields = {re.sub(r"\[\d+\]", "[]", e.split(": ", 1)[0]) for c in RULE_CASES for e in c.errors}
    for rule_field in (
        "spec.type",
        "spec.targetRef",
        "spec.targetRef.apiVersion",
        "spec.targetRef.kind",
        "spec.targetRef.name",
        "spec.skills",
        "spec.skills[].name",
        "spec.skills[].image",
        "spec.skills[].mountPath",
        "spec.skills[].pullPolicy",
    ):
        assert rule_field in failing_fields, rule_field
    assert sum(1 for c in RULE_CASES if not c.errors) >= 30


def test_all_problems_of_one_object_at_once_in_field_order() -> None:
    obj = {
        "apiVersion": "agent.kagenti.dev/v1alpha1",
        "kind": "AgentRuntime",
        "metadata": {"name": "bad", "namespace": "team-a"},
        "spec": {
            "skills": [
                {"name": "ok", "image": "ghcr.io/a/b:v1", "mountPath": "/skills/ok", "pullPolicy": "Sometimes"},
                {"name": "Bad_Name", "image": "GHCR.io/A/b", "mountPath": "/proc/x"},
                {"name": "ok", "image": 5, "mountPath": "/skills/ok/inner/"},
                "not-a-skill",
                {"image": "", "mountPath": "relative/../x", "extra": True},
            ]
            + [{"name": f"s{i}", "image": "ghcr.io/a/b:v1", "mountPath": f"/s/{i}"} for i in range(17)],
            "type": "robot",  # given after skills, reported before them: the order is the schema's
            "targetRef": {"kind": "CronJob", "name": ""},
        },
    }
    report = validate_agentruntime(obj)
    assert report.errors == [
        'spec.type: Unsupported value: "robot": supported values: "agent", "tool"',
        "spec.targetRef.apiVersion: Required value",
        'spec.targetRef.kind: Unsupported value: "CronJob": supported values: "Deployment", "StatefulSet", '
        '"DaemonSet", "ReplicaSet", "Job", "Pod", "Sandbox"',
        "spec.targetRef.name: Required value",
        "spec.skills: Too many: 22: must have at most 20 items",
        'spec.skills[0].pullPolicy: Unsupported value: "Sometimes": supported values: "Always", "IfNotPresent", "Never"',
        f'spec.skills[1].name: Invalid value: "Bad_Name": {DNS1123_LABEL_MESSAGE}',
        'spec.skills[1].image: Invalid value: "GHCR.io/A/b": not a valid OCI image reference: repository path must be lower-case',
        'spec.skills[1].mountPath: Invalid value: "/proc/x": must not be /proc or beneath it',
        'spec.skills[2].name: Duplicate value: "ok"',
        "spec.skills[2].image: Invalid value: 5: must be a string",
        'spec.skills[2].mountPath: Invalid value: "/skills/ok/inner/": must not be beneath spec.skills[0].mountPath ("/skills/ok")',
        'spec.skills[3]: Invalid value: "string": must be an object',
        "spec.skills[4].name: Required value",
        "spec.skills[4].image: Required value",
        'spec.skills[4].mountPath: Invalid value: "relative/../x": must be an absolute path',
        "spec.skills[4].mountPath: Invalid value: \"relative/../x\": must not contain '..'",
    ]
    assert report.warnings[-1] == "spec.skills[4].extra: unknown field, ignored"


def test_a_hostile_list_is_examined_only_so_far() -> None:
    obj = copy.deepcopy(RULE_CASES[0].object)
    obj["spec"]["skills"] = [{}] * 100_000
    report = validate_agentruntime(obj)
    assert report.errors[0] == "spec.skills: Too many: 100000: must have at most 20 items"
    assert len(report.errors) == 1 + 3 * 100  # name, image and mountPath of the first 100 items
    assert report.errors[-1] == "spec.skills[99].mountPath: Required value"


def test_a_huge_value_is_cut_in_the_message() -> None:
    obj = copy.deepcopy(RULE_CASES[0].object)
    obj["spec"]["type"] = "x" * 3_000_000
    (error,) = validate_agentruntime(obj).errors
    assert len(error) < 400 and error.endswith('...(truncated): supported values: "agent", "tool"')


def test_other_agentruntime_api_setting() -> None:
    obj = copy.deepcopy(RULE_CASES[0].object)
    obj["apiVersion"] = "agents.example.org/v1"
    assert validate_agentruntime(obj, options=ValidationOptions(agentruntime_api="agents.example.org/v1")).allowed
    assert not validate_agentruntime(obj).allowed


# -- the admission decision ------------------------------------------------------------------------


def _review(obj: Any, *, operation: str = "CREATE", kind: str = "AgentRuntime", **request: Any) -> dict:
    body = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "agent.kagenti.dev", "version": "v1alpha1", "kind": kind},
            "resource": {"group": "agent.kagenti.dev", "version": "v1alpha1", "resource": "agentruntimes"},
            "operation": operation,
            "namespace": "team-a",
            "name": "resume-agent-runtime",
            "object": obj,
            **request,
        },
    }
    return body


def _decide(body: dict, index: AgentRuntimeIndex | None = None, options: ValidationOptions = ValidationOptions()):
    request = parse_admission_review(body)
    return review_agentruntime(request, index or AgentRuntimeIndex(), options)


def test_review_denies_with_422_and_every_error() -> None:
    obj = copy.deepcopy(RULE_CASES[0].object)
    obj["spec"]["type"] = "robot"
    obj["spec"]["skills"][1]["mountPath"] = "/dev/x"
    obj["spec"]["skills"][0]["image"] = "ghcr.io/a/b:latest"
    decision = _decide(_review(obj))
    assert not decision.allowed and decision.code == 422 and decision.reason == "Invalid"
    assert decision.message == (
        'AgentRuntime "resume-agent-runtime" is invalid: '
        'spec.type: Unsupported value: "robot": supported values: "agent", "tool"; '
        'spec.skills[1].mountPath: Invalid value: "/dev/x": must not be /dev or beneath it'
    )
    assert len(decision.warnings) == 2 and decision.runtime == "resume-agent-runtime"
    response = admission_response("u", decision)["response"]
    assert response["status"] == {"code": 422, "message": decision.message, "reason": "Invalid"}
    assert response["warnings"] == decision.warnings


def test_review_allows_with_warnings() -> None:
    obj = copy.deepcopy(RULE_CASES[0].object)
    obj["spec"]["skills"][0]["image"] = "ghcr.io/a/b:v1"
    decision = _decide(_review(obj, operation="UPDATE", oldObject=obj))
    assert decision.allowed and decision.code is None and decision.runtime == "resume-agent-runtime"
    assert decision.warnings == [
        "spec.skills: 1 skill image is not pinned by digest (resume-reviewer): a tag can be moved, so pods "
        "created later may mount other content; use image@sha256:<digest>"
    ]


@pytest.mark.parametrize(
    "change",
    [
        {"operation": "DELETE"},
        {"operation": "CONNECT"},
        {"kind": "Pod"},
        {"subResource": "status"},
    ],
    ids=["delete", "connect", "other-kind", "status-subresource"],
)
def test_review_lets_everything_else_pass_unchecked(change: dict) -> None:
    body = _review("not even an object", **{k: v for k, v in change.items() if k != "kind"})
    if "kind" in change:
        body["request"]["kind"]["kind"] = change["kind"]
    decision = _decide(body)
    assert decision.allowed and not decision.warnings and decision.code is None


def test_review_of_another_group_passes() -> None:
    body = _review({"spec": {}})
    body["request"]["kind"]["group"] = "other.example.com"
    assert _decide(body).allowed


@pytest.mark.parametrize("obj", [None, "text", [1]], ids=["missing", "string", "list"])
def test_review_of_a_missing_object_is_a_400(obj: Any) -> None:
    decision = _decide(_review(obj))
    assert not decision.allowed and decision.code == 400
    assert decision.message == "request.object must be an AgentRuntime object"


def test_review_without_request_kind_reads_the_object() -> None:
    obj = copy.deepcopy(RULE_CASES[0].object)
    obj["spec"]["type"] = "robot"
    body = _review(obj)
    del body["request"]["kind"]
    assert _decide(body).code == 422


def test_review_uses_the_request_namespace_for_the_conflict_check() -> None:
    obj = copy.deepcopy(RULE_CASES[0].object)
    del obj["metadata"]["namespace"]  # the API server fills it in; a hand-written review may not
    index = AgentRuntimeIndex()
    index.upsert(_other_runtime(RULE_CASES[0].object, {"name": "older"}))
    decision = _decide(_review(obj), index)
    assert decision.code == 422 and 'AgentRuntime "older" already targets' in decision.message


def test_review_passes_the_registry_allow_list() -> None:
    obj = copy.deepcopy(RULE_CASES[0].object)
    decision = _decide(_review(obj), options=ValidationOptions(registry_allow=("quay.io",)))
    assert decision.code == 422 and "is not in the registry allow-list (quay.io)" in decision.message


# -- never raises --------------------------------------------------------------------------------

_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
_garbage = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8) | st.integers(), children, max_size=4),
    max_leaves=20,
)
_names = st.sampled_from(["a", "resume-reviewer", "", "Bad_Name", "x" * 58, "-a", "dup"]) | st.text(max_size=10)
_images = (
    st.sampled_from(
        [
            "ghcr.io/org/skill:v1",
            "ghcr.io/org/skill",
            "nginx",
            "localhost:5000/a/b@sha256:" + "a" * 64,
            "GHCR.io/A/b",
            "a@sha256:short",
            "",
        ]
    )
    | st.text(max_size=30)
)
_mount_paths = st.sampled_from(["/skills/a", "/skills/a/b", "/skills//a/", "/dev", "/devices", "/", "rel", "/a/../b", ""]) | st.text(
    alphabet="/.abdev", max_size=12
)
_skill = st.fixed_dictionaries(
    {"name": _names, "image": _images, "mountPath": _mount_paths},
    optional={"pullPolicy": st.sampled_from(["Always", "IfNotPresent", "Never", "always", ""]) | _garbage, "extra": _garbage},
)
_agentruntime = st.fixed_dictionaries(
    {
        "apiVersion": st.sampled_from(["agent.kagenti.dev/v1alpha1", "x/v1"]) | _garbage,
        "kind": st.just("AgentRuntime") | _garbage,
        "metadata": st.fixed_dictionaries({"name": st.just("r") | _garbage, "namespace": st.just("team-a")}) | _garbage,
        "spec": st.fixed_dictionaries(
            {
                "type": st.sampled_from(["agent", "tool", "robot"]) | _garbage,
                "targetRef": st.fixed_dictionaries(
                    {
                        "apiVersion": st.sampled_from(["apps/v1", "v1", ""]) | _garbage,
                        "kind": st.sampled_from(["Deployment", "Pod", "CronJob"]) | _garbage,
                        "name": st.just("resume-agent") | _garbage,
                    }
                )
                | _garbage,
                "skills": st.lists(_skill | _garbage, max_size=22) | _garbage,
            }
        )
        | _garbage,
    }
)


@given(obj=_agentruntime | _garbage, operation=st.sampled_from(["CREATE", "UPDATE"]))
def test_validation_never_raises(obj: Any, operation: str) -> None:
    index = AgentRuntimeIndex()
    index.upsert(_other_runtime(RULE_CASES[0].object, {"name": "other"}))
    report = validate_agentruntime(obj, operation=operation, index=index, old_object=obj)
    assert all(isinstance(e, str) and ": " in e for e in report.errors + report.warnings)
    # Every message must survive the trip to a JSON response body.
    json.dumps(report.as_dict(), ensure_ascii=False).encode("utf-8")
    if report.allowed:
        # Valid means the shared model, which mutation reads, takes it as is.
        AgentRuntime.from_object(obj)


def test_a_comma_in_a_mount_path_is_a_warning_naming_skill_folders() -> None:
    obj = copy.deepcopy(RULE_CASES[0].object)
    obj["spec"]["skills"][0]["mountPath"] = "/agent/skills/a,b"
    report = validate_agentruntime(obj)
    assert report.allowed
    assert any(w.startswith("spec.skills[0].mountPath: ") and "SKILL_FOLDERS" in w for w in report.warnings)
