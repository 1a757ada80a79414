"""AgentRuntimes as the sources cache them: the skills come from spec.skills or the `<domain>/skill-images`
annotation, and an object the validating webhook would have refused (stored before it existed, while
it was down, or read from a file) is re-checked once per version and its pods are denied with 422."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.core import decode as cache
from app.core.decode import cached_runtime
from app.core.model import AgentRuntime
from app.core.matching.index import AgentRuntimeIndex
from app.core.mutation.review import MutationOptions, mutate_pod
from app.core.names import DEFAULT_DOMAIN, Domain
from app.core.validation.agentruntime import ValidationOptions, validate_agentruntime
from app.sources.files.source import RuntimesFileError, read_runtimes_file
from tests.builders import NAMESPACE, apply_and_recheck, container, deployment_pod, runtime_object, skill

ROSSOCTL = Domain("rossoctl.io")


def index_with(*objects, options=ValidationOptions()) -> AgentRuntimeIndex:
    index = AgentRuntimeIndex()
    index.replace_all(r for r in (cached_runtime(o, options) for o in objects) if r is not None)
    index.synced.set()
    return index


def mutate(index, domain=DEFAULT_DOMAIN, pod=None):
    the_pod = pod or deployment_pod(container("agent"))
    options = MutationOptions(domain=domain)
    return the_pod, options, mutate_pod(the_pod, NAMESPACE, index, options)


@pytest.mark.parametrize(
    ("entry", "options", "expected"),
    [
        pytest.param(skill("s", mount_path="/proc/x"), ValidationOptions(), "spec.skills[0].mountPath", id="proc"),
        pytest.param(skill("BAD_NAME"), ValidationOptions(), "spec.skills[0].name", id="bad-name"),
        pytest.param(skill("s", image="docker.io/evil/s:v1"), ValidationOptions(registry_allow=("ghcr.io/example",)),
                     "is not in the registry allow-list", id="outside-allow-list"),
        pytest.param(skill("s", mount_path=5), ValidationOptions(), "spec.skills[0].mountPath", id="ill-typed"),
    ],
)
def test_a_stored_invalid_agentruntime_denies_its_pods_with_422(entry, options, expected):
    index = index_with(runtime_object("rt", skills=[entry]), options=options)
    *_, decision = mutate(index)
    assert not decision.allowed and decision.code == 422 and decision.reason == "Invalid"
    assert 'AgentRuntime "rt" is invalid' in decision.message and expected in decision.message
    assert decision.patch is None


def test_the_verdict_is_computed_once_per_version_not_per_pod(monkeypatch):
    calls = []
    real = cache.stored_object_verdict
    monkeypatch.setattr(cache, "stored_object_verdict", lambda obj, options: calls.append(1) or real(obj, options))
    index = index_with(runtime_object("rt", skills=[skill("s")]))
    for _ in range(50):
        assert mutate(index)[-1].allowed
    assert len(calls) == 1


def annotated(domain: Domain, skills, *, spec_skills=None, raw: str | None = None) -> dict:
    obj = runtime_object("rt", skills=spec_skills or [])
    if spec_skills is None:
        del obj["spec"]["skills"]
    obj["metadata"]["annotations"] = {domain.skill_images: raw if raw is not None else json.dumps(skills)}
    return obj


def test_skills_declared_in_the_annotation_are_injected():
    options = ValidationOptions(domain=ROSSOCTL)
    index = index_with(annotated(ROSSOCTL, [skill("s1"), skill("s2", pullPolicy="Always")]), options=options)
    the_pod, mutation, decision = mutate(index, ROSSOCTL)
    patched = apply_and_recheck(the_pod, decision, index, mutation)
    assert [v["name"] for v in patched["spec"]["volumes"]] == ["skill-s1", "skill-s2"]
    assert json.loads(patched["metadata"]["annotations"]["rossoctl.io/skills"]) == ["s1", "s2"]


def test_the_annotation_of_another_domain_is_not_read():
    index = index_with(annotated(ROSSOCTL, [skill("s1")]))  # served with the default domain
    *_, decision = mutate(index)
    assert decision.allowed and decision.outcome == "no-skills"


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        pytest.param(annotated(DEFAULT_DOMAIN, [skill("s1")], spec_skills=[skill("s2")]), "not both", id="both-forms"),
        pytest.param(annotated(DEFAULT_DOMAIN, None, raw='[{"name": "s1",'), "metadata.annotations[", id="bad-json"),
        pytest.param(annotated(DEFAULT_DOMAIN, [skill("s1", mount_path="/etc")]),
                     f"metadata.annotations[{DEFAULT_DOMAIN.skill_images}][0].mountPath", id="rule-with-annotation-path"),
    ],
)
def test_annotation_problems_deny_the_pods(obj, expected):
    *_, decision = mutate(index_with(obj))
    assert not decision.allowed and decision.code == 422
    assert expected in decision.message, decision.message


def test_the_cache_keeps_only_what_admission_and_the_reconciler_read():
    obj = annotated(DEFAULT_DOMAIN, [skill("s1")])
    obj["metadata"]["annotations"][DEFAULT_DOMAIN.skills_rollout] = "evict"
    obj["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] = "x" * 10_000
    obj["spec"]["authBridgeMode"] = "proxy"
    cached = cached_runtime(obj, ValidationOptions())
    assert cached.annotation(DEFAULT_DOMAIN.skills_rollout) == "evict"
    assert cached.annotation("kubectl.kubernetes.io/last-applied-configuration") is None
    assert [s.name for s in cached.spec.skills] == ["s1"]
    assert cached.metadata.annotations == {DEFAULT_DOMAIN.skills_rollout: "evict"}


def test_no_key_of_the_object_can_set_its_verdict():
    obj = runtime_object("rt", skills=[skill("s")])
    obj["problems"] = ["forged"]
    obj["metadata"]["problems"] = ["forged"]
    assert cached_runtime(obj, ValidationOptions()).problems == ()
    invalid = runtime_object("rt", skills=[skill("s", mount_path="/proc/x")])
    invalid["problems"] = []
    assert cached_runtime(invalid, ValidationOptions()).problems


def test_a_verdict_is_set_on_a_copy():
    runtime = AgentRuntime.from_object(runtime_object("rt", skills=[skill("s")]))
    invalid = runtime.with_problems(("spec.skills[0].name: Invalid value",))
    assert runtime.problems == () and invalid.problems == ("spec.skills[0].name: Invalid value",)
    assert invalid.spec == runtime.spec and invalid != runtime


# -- one pass: the verdict, the model and the garbage -------------------------------------------------

_names = st.sampled_from(["a", "b", "c", "web-search", "Bad_Name"])
_entries = st.builds(
    lambda name, image, pull, extra: {**skill(name, image=image), **({"pullPolicy": pull} if pull else {}), **extra},
    _names,
    st.sampled_from([None, "ghcr.io/o/x:latest", "ghcr.io/o/x@sha256:" + "b" * 64, "docker.io/evil/x:v1"]),
    st.sampled_from([None, "Always", "IfNotPresent", "Sometimes"]),
    st.sampled_from([{}, {"note": "kept"}]),
)


@given(entries=st.lists(_entries, max_size=5), in_annotation=st.booleans(), allow=st.sampled_from([(), ("ghcr.io",)]))
def test_the_cached_model_is_the_fully_validated_one(entries, in_annotation: bool, allow) -> None:
    """What cached_runtime builds in its one pass equals what full validation says and what
    the model builds of the whole object, field by field that the cache keeps."""
    options = ValidationOptions(registry_allow=allow)
    obj = annotated(DEFAULT_DOMAIN, entries) if in_annotation else runtime_object("rt", skills=entries)
    cached = cached_runtime(obj, options)
    errors = validate_agentruntime(obj, operation="UPDATE", options=options).errors
    assert cached is not None and list(cached.problems) == errors
    full = AgentRuntime.from_object({**obj, "spec": {**obj["spec"], "skills": entries}})
    assert (cached.metadata.name, cached.metadata.namespace, cached.metadata.creationTimestamp) == (
        full.metadata.name, full.metadata.namespace, full.metadata.creationTimestamp)
    assert cached.spec.targetRef == full.spec.targetRef and cached.workload == full.workload
    assert cached.spec.type == full.spec.type
    assert cached.spec.skills == ([] if errors else full.spec.skills)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        pytest.param("anchors.yaml", "a: &x [1]\nb: *x\n", id="anchors"),
        pytest.param("dup.yaml", "kind: AgentRuntime\nkind: Pod\n", id="duplicate-yaml"),
        pytest.param("dup.json", '{"kind": "AgentRuntime", "kind": "Pod"}', id="duplicate-json"),
        pytest.param("yaml.json", "kind: AgentRuntime\n", id="yaml-named-json"),
        pytest.param("tag.yml", "kind: !!binary aGVsbG8=\n", id="tag"),
        pytest.param("nan.json", '{"spec": {"n": NaN}}', id="nan"),
        pytest.param("latin1.yaml", "kind: caf\xe9\n", id="not-utf8"),
    ],
)
def test_the_file_source_reads_a_file_as_validate_reads_it(tmp_path, capsys, name, text):
    """serve (file source) and `skill-webhook validate` refuse the same files with the same words."""
    from app.service.cli import main as cli

    path = tmp_path / name
    path.write_bytes(text.encode("latin-1") if name.startswith("latin1") else text.encode())
    with pytest.raises(RuntimesFileError) as caught:
        read_runtimes_file(path)
    assert cli.main(["validate", str(path)]) == 1
    assert capsys.readouterr().out.strip() == str(caught.value)
