"""manifests/crd.yaml: a valid CRD for Kubernetes 1.33+, and where its schema and CEL rules can
decide, they agree with the webhook (on the table of tests/validation_cases/rules.yaml and on
generated objects)."""

from __future__ import annotations

import copy
import importlib.util
import re
import sys
from pathlib import Path
from typing import Any, Iterator

import celpy
import jsonschema
import kubernetes_validate
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from app.core.model import MAX_SKILLS
from app.core.validation import validate_agentruntime

CRD_FILE = Path(__file__).parent.parent / "manifests" / "crd.yaml"
CRD = yaml.safe_load(CRD_FILE.read_text())
VERSION = CRD["spec"]["versions"][0]
SCHEMA = VERSION["schema"]["openAPIV3Schema"]


def _rule_cases_module():
    """The table-driven cases of test_validation_rules, loaded by path so that it works whether or
    not tests/ is a package."""
    name = "_skill_webhook_rule_cases"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("test_validation_rules.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


RULE_CASES = _rule_cases_module().RULE_CASES


# -- the manifest itself -----------------------------------------------------------------------------


@pytest.mark.parametrize("kubernetes_version", ["1.33", "1.35", kubernetes_validate.latest_version()])
def test_kubernetes_validate_accepts_the_crd(kubernetes_version: str) -> None:
    kubernetes_validate.validate(CRD, kubernetes_version, strict=True)


def test_crd_names_scope_and_subresources() -> None:
    spec = CRD["spec"]
    assert CRD["metadata"]["name"] == "agentruntimes.agent.kagenti.dev"
    assert spec["group"] == "agent.kagenti.dev" and spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == "AgentRuntime" and spec["names"]["plural"] == "agentruntimes"
    assert spec["names"]["shortNames"] == ["art", "agentrt"]
    assert [v["name"] for v in spec["versions"]] == ["v1alpha1"]
    assert VERSION["served"] and VERSION["storage"] and VERSION["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in VERSION["additionalPrinterColumns"]}
    assert columns == {
        "Type": ".spec.type",
        "Target-Kind": ".spec.targetRef.kind",
        "Target": ".spec.targetRef.name",
        "Skills": ".spec.skills[*].name",
        "Age": ".metadata.creationTimestamp",
    }


def test_unknown_fields_are_preserved_except_inside_a_skill() -> None:
    spec = SCHEMA["properties"]["spec"]
    assert spec["x-kubernetes-preserve-unknown-fields"] is True
    assert spec["properties"]["targetRef"]["x-kubernetes-preserve-unknown-fields"] is True
    assert SCHEMA["properties"]["status"]["x-kubernetes-preserve-unknown-fields"] is True
    assert "x-kubernetes-preserve-unknown-fields" not in spec["properties"]["skills"]["items"]
    assert spec["properties"]["skills"]["maxItems"] == MAX_SKILLS


def test_every_cel_rule_compiles() -> None:
    rules = [rule for _, rules in _rule_sites(SCHEMA) for rule in rules]
    assert len(rules) == 8
    for rule in rules:
        _program(rule["rule"])


# -- what the CRD decides, as the API server would ------------------------------------------------------

_environment = celpy.Environment()
_programs: dict[str, Any] = {}


def _program(rule: str) -> Any:
    if rule not in _programs:
        _programs[rule] = _environment.program(_environment.compile(rule))
    return _programs[rule]


def _rule_sites(schema: dict, path: str = "") -> Iterator[tuple[str, list[dict]]]:
    if "x-kubernetes-validations" in schema:
        yield path, schema["x-kubernetes-validations"]
    for name, child in schema.get("properties", {}).items():
        yield from _rule_sites(child, f"{path}.{name}" if path else name)
    if "items" in schema:
        yield from _rule_sites(schema["items"], path + "[]")


def _without_nulls(value: Any) -> Any:
    """The API server drops null fields of a structural schema that are not nullable."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


_JSON_TYPES = {"string": str, "object": dict, "array": list}


def _cel_failures(schema: dict, value: Any, path: str) -> Iterator[str]:
    """Paths at which a CEL rule fails. Like the API server, rules run only on values that are
    present and of their schema's type."""
    expected = _JSON_TYPES.get(schema.get("type", ""))
    if expected is not None and not isinstance(value, expected):
        return
    for rule in schema.get("x-kubernetes-validations", []):
        if not _rule_holds(rule["rule"], value):
            yield path
    if isinstance(value, dict):
        for name, child in schema.get("properties", {}).items():
            if name in value:
                yield from _cel_failures(child, value[name], f"{path}.{name}" if path else name)
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            yield from _cel_failures(schema["items"], item, f"{path}[{i}]")


def _rule_holds(rule: str, value: Any) -> bool:
    """A rule that cannot be evaluated (a required field is missing) fails, as on the API server."""
    try:
        result = _program(rule).evaluate({"self": celpy.json_to_cel(value)})
    except celpy.CELEvalError:
        return False
    return result is True or (isinstance(result, celpy.celtypes.BoolType) and bool(result))


_REQUIRED_RE = re.compile(r"^'(.+)' is a required property$")


def _schema_failures(obj: dict) -> list[tuple[str, str]]:
    """(path, JSON-schema keyword) of each schema violation."""
    failures = []
    for error in jsonschema.Draft7Validator(SCHEMA).iter_errors(obj):
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path).lstrip(".")
        missing = _REQUIRED_RE.match(error.message) if error.validator == "required" else None
        if missing:
            path = f"{path}.{missing.group(1)}" if path else missing.group(1)
        failures.append((path, str(error.validator)))
    return failures


def crd_failures(obj: dict) -> set[str]:
    obj = _without_nulls(obj)
    schema_failures = _schema_failures(obj)
    paths = {path for path, _ in schema_failures}
    # The API server skips the CEL rules when the schema found a wrong type (a "blocking" error).
    if not any(keyword == "type" for _, keyword in schema_failures):
        paths |= set(_cel_failures(SCHEMA, obj, ""))
    return paths


def _webhook_error_paths(errors: list[str]) -> set[str]:
    return {error.split(": ", 1)[0] for error in errors}


def _covered(crd_path: str, webhook_paths: set[str]) -> bool:
    """A CRD failure at `spec.skills` (say, duplicate names) is the webhook's error on a field in it."""
    return any(p == crd_path or p.startswith(crd_path + ".") or p.startswith(crd_path + "[") for p in webhook_paths)


def _assert_agreement(obj: dict, errors: list[str], crd_rejects: bool | None = None) -> None:
    failures = crd_failures(obj)
    webhook_paths = _webhook_error_paths(errors)
    for failure in failures:
        assert _covered(failure, webhook_paths), f"the CRD rejects {failure} but the webhook does not: {errors}"
    if crd_rejects is not None:
        assert bool(failures) is crd_rejects, (failures, errors)


CRD_CASES = [c for c in RULE_CASES if isinstance(c.object, dict)]


@pytest.mark.parametrize("case", CRD_CASES, ids=[c.id for c in CRD_CASES])
def test_crd_agrees_with_the_webhook(case) -> None:
    report = validate_agentruntime(case.object, options=case.options)
    _assert_agreement(case.object, report.errors, crd_rejects=case.crd_rejects)


def test_the_table_exercises_every_cel_rule() -> None:
    failing_rule_sites = set()
    for case in CRD_CASES:
        for failure in _cel_failures(SCHEMA, _without_nulls(case.object), ""):
            failing_rule_sites.add(re.sub(r"\[\d+\]", "[]", failure))
    cel_sites = {path for path, _ in _rule_sites(SCHEMA)}
    assert cel_sites <= failing_rule_sites, cel_sites - failing_rule_sites


_skill = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["a", "b", "resume-reviewer", "Bad", "a-", "x" * 57, "x" * 58, ""]),
        "image": st.sampled_from(["ghcr.io/a/b:v1", "", "GHCR.io/A", "nginx"]),
        "mountPath": st.sampled_from(["/s/a", "/s/b", "/s/a/b", "rel", "/a/../b", "/dev/x", "", "/..", "../x"]),
    },
    optional={"pullPolicy": st.sampled_from(["Always", "Never", "never", "", None])},
)
_objects = st.fixed_dictionaries(
    {
        "apiVersion": st.just("agent.kagenti.dev/v1alpha1"),
        "kind": st.just("AgentRuntime"),
        "metadata": st.just({"name": "r", "namespace": "team-a"}),
        "spec": st.fixed_dictionaries(
            {
                "type": st.sampled_from(["agent", "tool", "robot", ""]),
                "targetRef": st.fixed_dictionaries(
                    {
                        "apiVersion": st.sampled_from(["apps/v1", ""]),
                        "kind": st.sampled_from(["Deployment", "Sandbox", "CronJob", ""]),
                        "name": st.sampled_from(["w", ""]),
                    }
                ),
                "skills": st.lists(_skill, max_size=MAX_SKILLS + 2),
            }
        ),
    }
)


@settings(max_examples=150, deadline=None)
@given(obj=_objects)
def test_crd_never_rejects_what_the_webhook_accepts(obj: dict) -> None:
    report = validate_agentruntime(copy.deepcopy(obj))
    _assert_agreement(obj, report.errors)
    if report.allowed:
        assert not crd_failures(obj)
