"""The mutation rule by rule: the raw JSON patch operations, the decision, and the pod after applying them.

Golden whole-pod comparisons live in tests/cases/ (test_golden_cases.py); here each rule is pinned
down on its own, including the exact op paths (whole array/map vs append, JSON Pointer escaping)."""

from __future__ import annotations

import hashlib
import json

import jsonpatch
import pytest

from app.core.model import AgentRuntime
from app.core.mutation.review import NOT_SYNCED_MESSAGE, MutationOptions, mutate_pod
from app.core.mutation.patch import build_skill_patch, escape_pointer, normalize_mount_path
from tests.builders import (
    decode_patch,
    DEFAULT_OPTIONS,
    NAMESPACE,
    apply_and_recheck,
    assert_valid_pod,
    container,
    deployment_pod,
    index_of,
    review,
    runtime,
    runtime_object,
    skill,
)

SKILLS = [skill("alpha"), skill("beta", pullPolicy="Always")]
SKILLS_ANNOTATION = "kagenti.io/skills"
INJECTED_ANNOTATION = "kagenti.io/skills-injected"


def _index(skills=SKILLS, **kwargs):
    return index_of(runtime_object("rt", skills=skills, **kwargs))


def _mutate(the_pod, index=None, options=DEFAULT_OPTIONS):
    return mutate_pod(the_pod, NAMESPACE, index if index is not None else _index(), options)


def _agent(patched, name="agent"):
    return next(c for c in patched["spec"]["containers"] if c["name"] == name)


# -- escaping --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("segment", "escaped"),
    [
        ("kagenti.io/skills", "kagenti.io~1skills"),
        ("a~b", "a~0b"),
        ("~1", "~01"),  # "~" first: else "~1" would come back as "/"
        ("/~/", "~1~0~1"),
        ("plain", "plain"),
        ("", ""),
    ],
)
def test_escape_pointer(segment, escaped):
    assert escape_pointer(segment) == escaped
    # and jsonpatch reads it back as the same key
    assert jsonpatch.apply_patch({}, [{"op": "add", "path": "/" + escaped, "value": 1}]) == {segment: 1}


@pytest.mark.parametrize(
    ("path", "normal"),
    [("/a/b", "/a/b"), ("/a/b/", "/a/b"), ("//a//b", "/a/b"), ("/a/./b", "/a/b"), ("///a", "/a"), ("/", "/")],
)
def test_normalize_mount_path(path, normal):
    assert normalize_mount_path(path) == normal


# -- whole arrays and maps where absent, appends where present -------------------------------------


def test_bare_pod_gets_whole_arrays_and_maps():
    the_pod = deployment_pod(container("agent"))
    decision = _mutate(the_pod)
    assert decision.allowed and decision.outcome == "injected"
    assert decision.skills == ["alpha", "beta"]
    assert decision.patch == [
        {"op": "add", "path": "/spec/volumes", "value": [
            {"name": "skill-alpha", "image": {"reference": "ghcr.io/example/skills/alpha:v1"}},
            {"name": "skill-beta", "image": {"reference": "ghcr.io/example/skills/beta:v1", "pullPolicy": "Always"}},
        ]},
        {"op": "add", "path": "/spec/containers/0/volumeMounts", "value": [
            {"name": "skill-alpha", "mountPath": "/agent/skills/alpha", "readOnly": True},
            {"name": "skill-beta", "mountPath": "/agent/skills/beta", "readOnly": True},
        ]},
        {"op": "add", "path": "/spec/containers/0/env", "value": [
            {"name": "SKILL_FOLDERS", "value": "/agent/skills/alpha,/agent/skills/beta"},
        ]},
        {"op": "add", "path": "/metadata/annotations", "value": {
            SKILLS_ANNOTATION: '["alpha","beta"]',
            INJECTED_ANNOTATION: json.dumps(
                {"agentRuntime": "rt", "container": "agent", "skills": {
                    "alpha": "ghcr.io/example/skills/alpha:v1", "beta": "ghcr.io/example/skills/beta:v1"},
                 "fingerprint": _fingerprint([
                     {"name": "alpha", "image": "ghcr.io/example/skills/alpha:v1", "mountPath": "/agent/skills/alpha"},
                     {"name": "beta", "image": "ghcr.io/example/skills/beta:v1", "mountPath": "/agent/skills/beta",
                      "pullPolicy": "Always"}])},
                separators=(",", ":"),
            ),
        }},
    ]
    assert_valid_pod(apply_and_recheck(the_pod, decision, _index()))


def test_existing_arrays_and_maps_are_appended_to_with_escaped_keys():
    the_pod = deployment_pod(
        container("envoy-proxy"),
        container("agent", volumeMounts=[{"name": "data", "mountPath": "/data"}], env=[{"name": "A", "value": "1"}]),
        annotations={"team~x/owner": "me"},
        volumes=[{"name": "data", "emptyDir": {}}],
    )
    decision = _mutate(the_pod)
    assert [(op["op"], op["path"]) for op in decision.patch] == [
        ("add", "/spec/volumes/-"),
        ("add", "/spec/volumes/-"),
        ("add", "/spec/containers/1/volumeMounts/-"),
        ("add", "/spec/containers/1/volumeMounts/-"),
        ("add", "/spec/containers/1/env/-"),
        ("add", "/metadata/annotations/kagenti.io~1skills"),
        ("add", "/metadata/annotations/kagenti.io~1skills-injected"),
    ]
    patched = apply_and_recheck(the_pod, decision, _index())
    assert patched["metadata"]["annotations"]["team~x/owner"] == "me"
    assert [m["name"] for m in _agent(patched)["volumeMounts"]] == ["data", "skill-alpha", "skill-beta"]
    assert [v["name"] for v in patched["spec"]["volumes"]] == ["data", "skill-alpha", "skill-beta"]


def test_null_arrays_are_replaced_whole():
    the_pod = deployment_pod(container("agent", env=None, volumeMounts=None), volumes=None)
    the_pod["spec"]["volumes"] = None
    the_pod["metadata"]["annotations"] = None
    decision = _mutate(the_pod)
    assert {op["path"] for op in decision.patch} == {
        "/spec/volumes", "/spec/containers/0/volumeMounts", "/spec/containers/0/env", "/metadata/annotations"}
    apply_and_recheck(the_pod, decision, _index())


def test_pod_without_metadata_gets_the_whole_map():
    the_pod = {"apiVersion": "v1", "kind": "Pod", "spec": {"containers": [container("agent")]}}
    patch = build_skill_patch(the_pod, runtime("rt", skills=[skill("alpha")]), 0)
    assert patch.operations[-1]["path"] == "/metadata"
    patched = jsonpatch.apply_patch(the_pod, patch.operations)
    assert set(patched["metadata"]["annotations"]) == {SKILLS_ANNOTATION, INJECTED_ANNOTATION}


def test_skills_keep_spec_order_everywhere():
    names = ["zeta", "alpha", "mu"]
    index = _index(skills=[skill(n) for n in names])
    the_pod = deployment_pod(container("agent"))
    patched = apply_and_recheck(the_pod, _mutate(the_pod, index), index)
    assert [v["name"] for v in patched["spec"]["volumes"]] == [f"skill-{n}" for n in names]
    assert [m["name"] for m in _agent(patched)["volumeMounts"]] == [f"skill-{n}" for n in names]
    assert _agent(patched)["env"][0]["value"] == ",".join(f"/agent/skills/{n}" for n in names)
    assert json.loads(patched["metadata"]["annotations"][SKILLS_ANNOTATION]) == names


def test_init_and_ephemeral_containers_and_sidecars_are_never_touched():
    the_pod = deployment_pod(container("envoy-proxy"), container("agent"), container("spiffe-helper"),
                             init_containers=[container("setup")])
    the_pod["spec"]["ephemeralContainers"] = [container("debugger")]
    patched = apply_and_recheck(the_pod, _mutate(the_pod), _index())
    for key in ("initContainers", "ephemeralContainers"):
        assert patched["spec"][key] == the_pod["spec"][key]
    assert patched["spec"]["containers"][0] == the_pod["spec"]["containers"][0]
    assert patched["spec"]["containers"][2] == the_pod["spec"]["containers"][2]


# -- volumes ---------------------------------------------------------------------------------------


def test_volume_with_the_same_image_is_kept_as_is():
    existing = {"name": "skill-alpha", "image": {"reference": "ghcr.io/example/skills/alpha:v1", "pullPolicy": "Never"}}
    the_pod = deployment_pod(container("agent"), volumes=[existing])
    decision = _mutate(the_pod)
    volume_ops = [op for op in decision.patch if op["path"].startswith("/spec/volumes")]
    assert [op["value"]["name"] for op in volume_ops] == ["skill-beta"]
    patched = apply_and_recheck(the_pod, decision, _index())
    assert patched["spec"]["volumes"][0] == existing


@pytest.mark.parametrize(
    ("volume", "collided"),
    [
        ({"name": "skill-alpha", "emptyDir": {}}, "emptyDir"),
        ({"name": "skill-alpha", "configMap": {"name": "cm"}}, "configMap"),
        ({"name": "skill-alpha", "image": {"reference": "ghcr.io/example/skills/alpha:v2"}},
         "image ghcr.io/example/skills/alpha:v2"),
        ({"name": "skill-alpha"}, "no source"),
    ],
    ids=["emptyDir", "configMap", "other-image", "no-source"],
)
def test_volume_with_another_source_is_a_409(volume, collided):
    decision = _mutate(deployment_pod(container("agent"), volumes=[volume]))
    assert not decision.allowed and decision.code == 409 and decision.patch is None
    assert decision.outcome == "conflict" and decision.runtime == "rt"
    for part in ('AgentRuntime "rt"', 'skill "alpha"', '"skill-alpha"', collided):
        assert part in decision.message


# -- mounts ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("taken_path", ["/agent/skills/beta", "/agent/skills/beta/", "//agent/skills/./beta"])
def test_mount_path_taken_by_another_volume_is_a_409(taken_path):
    the_pod = deployment_pod(
        container("agent", volumeMounts=[{"name": "cache", "mountPath": taken_path}]),
        volumes=[{"name": "cache", "emptyDir": {}}],
    )
    decision = _mutate(the_pod)
    assert not decision.allowed and decision.code == 409
    for part in ('AgentRuntime "rt"', 'skill "beta"', "/agent/skills/beta", '"cache"', '"agent"'):
        assert part in decision.message


def test_mount_of_the_same_volume_at_the_path_is_kept():
    the_pod = deployment_pod(
        container("agent", volumeMounts=[{"name": "skill-alpha", "mountPath": "/agent/skills/alpha"}]),
        volumes=[{"name": "skill-alpha", "image": {"reference": "ghcr.io/example/skills/alpha:v1"}}],
    )
    decision = _mutate(the_pod)
    mount_ops = [op for op in decision.patch if "volumeMounts" in op["path"]]
    assert [op["value"]["name"] for op in mount_ops] == ["skill-beta"]
    patched = apply_and_recheck(the_pod, decision, _index())
    assert _agent(patched)["volumeMounts"][0] == {"name": "skill-alpha", "mountPath": "/agent/skills/alpha"}


def test_path_taken_in_a_sidecar_is_not_a_conflict():
    the_pod = deployment_pod(
        container("agent"),
        container("envoy-proxy", volumeMounts=[{"name": "cache", "mountPath": "/agent/skills/alpha"}]),
        volumes=[{"name": "cache", "emptyDir": {}}],
    )
    decision = _mutate(the_pod)
    assert decision.allowed
    apply_and_recheck(the_pod, decision, _index())


# -- SKILL_FOLDERS ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("existing", "merged"),
    [
        ("/opt/mine", "/opt/mine,/agent/skills/alpha,/agent/skills/beta"),
        ("/agent/skills/beta", "/agent/skills/beta,/agent/skills/alpha"),
        ("", "/agent/skills/alpha,/agent/skills/beta"),
        ("/opt/mine, /agent/skills/alpha", "/opt/mine,/agent/skills/alpha,/agent/skills/beta"),
        ("/agent/skills/alpha,/agent/skills/beta", None),
        (" /agent/skills/beta , /agent/skills/alpha ", None),
    ],
    ids=["other-path", "one-present", "empty", "spaces-normalised-when-rewritten", "all-present", "all-present-spaced"],
)
def test_skill_folders_by_value_is_merged(existing, merged):
    env = [{"name": "SKILL_FOLDERS", "value": existing}, {"name": "OTHER", "value": "x"}]
    the_pod = deployment_pod(container("agent", env=env))
    decision = _mutate(the_pod)
    env_ops = [op for op in decision.patch if "/env" in op["path"]]
    if merged is None:
        assert env_ops == []
    else:
        assert env_ops == [{"op": "add", "path": "/spec/containers/0/env/0/value", "value": merged}]
    patched = apply_and_recheck(the_pod, decision, _index())
    assert [e["name"] for e in _agent(patched)["env"]] == ["SKILL_FOLDERS", "OTHER"]


def test_skill_folders_last_duplicate_is_the_one_extended():
    env = [{"name": "SKILL_FOLDERS", "value": "/first"}, {"name": "SKILL_FOLDERS", "value": "/last"}]
    the_pod = deployment_pod(container("agent", env=env))
    env_ops = [op for op in _mutate(the_pod).patch if "/env" in op["path"]]
    assert env_ops == [{"op": "add", "path": "/spec/containers/0/env/1/value",
                        "value": "/last,/agent/skills/alpha,/agent/skills/beta"}]


def test_skill_folders_appended_when_env_has_no_such_var():
    the_pod = deployment_pod(container("agent", env=[{"name": "A", "value": "1"}]))
    env_ops = [op for op in _mutate(the_pod).patch if "/env" in op["path"]]
    assert env_ops == [{"op": "add", "path": "/spec/containers/0/env/-",
                        "value": {"name": "SKILL_FOLDERS", "value": "/agent/skills/alpha,/agent/skills/beta"}}]


def test_skill_folders_by_value_from_is_left_with_a_warning():
    value_from = {"configMapKeyRef": {"name": "cfg", "key": "folders"}}
    the_pod = deployment_pod(container("agent", env=[{"name": "SKILL_FOLDERS", "valueFrom": value_from}]))
    decision = _mutate(the_pod)
    assert decision.allowed
    assert not [op for op in decision.patch if "/env" in op["path"]]
    assert any("SKILL_FOLDERS" in w and "valueFrom" in w and '"agent"' in w for w in decision.warnings)
    patched = apply_and_recheck(the_pod, decision, _index())
    assert _agent(patched)["env"] == [{"name": "SKILL_FOLDERS", "valueFrom": value_from}]
    assert [v["name"] for v in patched["spec"]["volumes"]] == ["skill-alpha", "skill-beta"]


@pytest.mark.parametrize("mount_path", ["/skills/a,b", "/skills/a, b", "/skills/a,,b"])
def test_mount_path_with_a_comma_is_not_appended_again(mount_path):
    # Kubernetes allows commas in a mountPath; SKILL_FOLDERS must still reach a fixed point.
    index = _index(skills=[skill("alpha", mount_path=mount_path)])
    the_pod = deployment_pod(container("agent", env=[{"name": "SKILL_FOLDERS", "value": "/opt/mine"}]))
    patched = apply_and_recheck(the_pod, _mutate(the_pod, index), index)
    assert _agent(patched)["env"][0]["value"] == f"/opt/mine,{mount_path}"


# -- annotations -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("existing", "merged", "warned"),
    [
        ('["other","alpha"]', ["other", "alpha", "beta"], False),
        ('["other","other"]', ["other", "alpha", "beta"], False),
        ('["alpha","beta"]', ["alpha", "beta"], False),
        ('[]', ["alpha", "beta"], False),
        ('not json', ["alpha", "beta"], True),
        ('{"alpha": 1}', ["alpha", "beta"], True),
        ('[1, 2]', ["alpha", "beta"], True),
    ],
    ids=["merged-order-kept", "duplicates-dropped", "already-there", "empty", "not-json", "not-an-array",
         "not-names"],
)
def test_skills_annotation_is_merged(existing, merged, warned):
    the_pod = deployment_pod(container("agent"), annotations={SKILLS_ANNOTATION: existing, "keep": "me"})
    decision = _mutate(the_pod)
    assert any(SKILLS_ANNOTATION in w for w in decision.warnings) is warned
    patched = apply_and_recheck(the_pod, decision, _index())
    annotations = patched["metadata"]["annotations"]
    assert json.loads(annotations[SKILLS_ANNOTATION]) == merged
    assert annotations["keep"] == "me"


def test_injected_record_says_exactly_what_was_injected():
    the_pod = deployment_pod(container("main"), container("envoy-proxy"))
    patched = apply_and_recheck(the_pod, _mutate(the_pod), _index())
    assert json.loads(patched["metadata"]["annotations"][INJECTED_ANNOTATION]) == {
        "agentRuntime": "rt",
        "container": "main",
        "skills": {"alpha": "ghcr.io/example/skills/alpha:v1", "beta": "ghcr.io/example/skills/beta:v1"},
        "fingerprint": _fingerprint([
            {"name": "alpha", "image": "ghcr.io/example/skills/alpha:v1", "mountPath": "/agent/skills/alpha"},
            {"name": "beta", "image": "ghcr.io/example/skills/beta:v1", "mountPath": "/agent/skills/beta",
             "pullPolicy": "Always"},
        ]),
    }


def _fingerprint(entries: list[dict]) -> str:
    """The record's fingerprint, computed here from its definition rather than by the code under test."""
    canonical = json.dumps(entries, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


@pytest.mark.parametrize(
    "change",
    [
        {"image": "ghcr.io/example/skills/alpha:v2"},
        {"mountPath": "/agent/skills/other"},
        {"pullPolicy": "IfNotPresent"},
    ],
    ids=["image", "mountPath", "pullPolicy"],
)
def test_every_change_of_a_skill_changes_the_fingerprint(change):
    def record(skills):
        the_pod = deployment_pod(container("agent"))
        patched = apply_and_recheck(the_pod, _mutate(the_pod, _index(skills)), _index(skills))
        return json.loads(patched["metadata"]["annotations"][INJECTED_ANNOTATION])

    before = record(SKILLS)
    after = record([{**SKILLS[0], **change}, *SKILLS[1:]])
    assert before["fingerprint"] != after["fingerprint"]
    if "image" not in change:  # the skills map alone could not see this change
        assert before["skills"] == after["skills"]


def test_volume_device_at_a_skill_mount_path_is_a_409():
    the_pod = deployment_pod(container("agent", volumeDevices=[{"name": "raw", "devicePath": "/agent/skills/alpha/"}]))
    decision = _mutate(the_pod)
    assert not decision.allowed and decision.code == 409 and decision.reason == "Conflict"
    for part in ('AgentRuntime "rt"', 'skill "alpha"', "/agent/skills/alpha", 'volumeDevice "raw"'):
        assert part in decision.message


def test_volume_device_elsewhere_or_in_a_sidecar_is_no_conflict():
    the_pod = deployment_pod(
        container("agent", volumeDevices=[{"name": "raw", "devicePath": "/dev/xvda"}]),
        container("envoy-proxy", volumeDevices=[{"name": "raw2", "devicePath": "/agent/skills/alpha"}]),
    )
    assert _mutate(the_pod).allowed


def test_stale_injected_record_is_replaced():
    the_pod = deployment_pod(container("agent"), annotations={INJECTED_ANNOTATION: '{"agentRuntime":"old"}'})
    decision = _mutate(the_pod)
    assert [op["op"] for op in decision.patch if op["path"] == "/metadata/annotations/kagenti.io~1skills-injected"] == [
        "add"  # "add" on an existing member replaces it (RFC 6902), and also works when it is absent
    ]
    patched = apply_and_recheck(the_pod, decision, _index())
    assert json.loads(patched["metadata"]["annotations"][INJECTED_ANNOTATION])["agentRuntime"] == "rt"


# -- when nothing is done --------------------------------------------------------------------------


def test_opt_out_label_leaves_the_pod_unchanged_even_before_sync():
    the_pod = deployment_pod(container("agent"), labels={"kagenti.io/skills-inject": "disabled"})
    for index in (_index(), index_of(runtime_object("rt", skills=SKILLS), synced=False)):
        decision = _mutate(the_pod, index)
        assert decision.allowed and decision.patch is None and decision.outcome == "opted-out"


def test_other_opt_out_label_values_still_inject():
    the_pod = deployment_pod(container("agent"), labels={"kagenti.io/skills-inject": "enabled"})
    assert _mutate(the_pod).patch


@pytest.mark.parametrize(
    "request_fields",
    [
        {"kind": ("apps", "v1", "Deployment")},
        {"kind": ("", "v1", "ConfigMap")},
        {"kind": ("example.com", "v1", "Pod")},
        {"operation": "UPDATE"},
        {"operation": "DELETE"},
        {"operation": "CONNECT"},
        {"sub_resource": "ephemeralcontainers"},
        {"sub_resource": "status"},
    ],
    ids=["deployment", "configmap", "pod-of-another-group", "update", "delete", "connect", "ephemeralcontainers",
         "status"],
)
def test_requests_that_are_not_pod_creation_are_ignored(request_fields):
    decision, response = review(deployment_pod(container("agent")), _index(), **request_fields)
    assert decision.allowed and decision.patch is None and decision.outcome == "ignored"
    assert response["response"] == {"uid": "3c1a6c2e-0000-4000-8000-000000000001", "allowed": True}


def test_dry_run_gets_the_same_patch():
    the_pod = deployment_pod(container("agent"))
    _, real = review(the_pod, _index())
    decision, dry = review(the_pod, _index(), dry_run=True)
    assert decode_patch(dry) == decode_patch(real) == decision.patch
    assert dry["response"]["patchType"] == "JSONPatch"


def test_not_synced_is_a_retryable_503():
    index = index_of(runtime_object("rt", skills=SKILLS), synced=False)
    decision, response = review(deployment_pod(container("agent")), index)
    assert not decision.allowed and decision.outcome == "not-synced"
    assert response["response"]["allowed"] is False
    assert response["response"]["status"]["code"] == 503
    assert "skill cache not synchronized yet" in response["response"]["status"]["message"]
    assert decision.message == NOT_SYNCED_MESSAGE
    index.synced.set()
    assert review(deployment_pod(container("agent")), index)[0].patch


def test_image_volumes_off_with_delivery_image_warns_and_leaves_the_pod():
    options = MutationOptions(image_volumes=False, image_volumes_reason="Kubernetes 1.33: gate off by default",
                              delivery="image")
    decision, response = review(deployment_pod(container("agent")), _index(), options)
    assert decision.allowed and decision.patch is None and decision.outcome == "image-volumes-off"
    assert "patch" not in response["response"]
    [warning] = response["response"]["warnings"]
    assert '"rt"' in warning and "image volumes are off" in warning and "gate off by default" in warning


@pytest.mark.parametrize("skills", [[], None], ids=["empty-list", "absent"])
def test_runtime_without_skills_leaves_the_pod(skills):
    obj = runtime_object("rt")
    if skills is None:
        del obj["spec"]["skills"]
    decision = _mutate(deployment_pod(container("agent")), index_of(obj))
    assert decision.allowed and decision.patch is None and decision.outcome == "no-skills"
    assert decision.runtime == "rt"


def test_pod_matching_no_runtime_is_left():
    decision = _mutate(deployment_pod(container("agent"), deployment="someone-else"))
    assert decision.allowed and decision.patch is None and decision.outcome == "no-match"


# -- malformed pods are a 400, never a broken patch ------------------------------------------------


@pytest.mark.parametrize(
    ("breakage", "field"),
    [
        (lambda p: p["spec"].update(volumes={"name": "x"}), "spec.volumes"),
        (lambda p: p["spec"].update(containers=[]), "spec.containers"),
        (lambda p: p["spec"].update(containers=["agent"]), "spec.containers"),
        (lambda p: p["spec"]["containers"][0].update(env="A=1"), "spec.containers[0].env"),
        (lambda p: p["spec"]["containers"][0].update(volumeMounts={}), "spec.containers[0].volumeMounts"),
        (lambda p: p["metadata"].update(annotations=["a"]), "metadata.annotations"),
        (lambda p: p.update(spec="nope"), "spec must be an object"),
    ],
    ids=["volumes-not-a-list", "no-containers", "container-not-a-map", "env-not-a-list", "mounts-not-a-list",
         "annotations-not-a-map", "spec-not-a-map"],
)
def test_malformed_pod_is_a_400(breakage, field):
    the_pod = deployment_pod(container("agent"))
    breakage(the_pod)
    decision = _mutate(the_pod)
    assert not decision.allowed and decision.code == 400 and decision.outcome == "malformed"
    assert field in decision.message


@pytest.mark.parametrize("obj", [None, [], "pod", 3])
def test_request_object_that_is_not_a_map_is_a_400(obj):
    decision, response = review(obj, _index())
    assert response["response"]["status"]["code"] == 400 and not decision.allowed


def test_runtime_model_is_what_mutation_reads():
    # Unknown fields in a skill and in the spec (identity, trace, ...) are accepted and change nothing.
    obj = runtime_object("rt", skills=[skill("alpha", extra="x")])
    obj["spec"]["identity"] = {"spiffe": "enabled"}
    plain = _mutate(deployment_pod(container("agent")), index_of(runtime_object("rt", skills=[skill("alpha")])))
    assert AgentRuntime.from_object(obj).spec.skills == AgentRuntime.from_object(runtime_object("rt", skills=[skill("alpha")])).spec.skills
    assert _mutate(deployment_pod(container("agent")), index_of(obj)).patch == plain.patch


def test_two_skills_of_one_name_are_reported_as_such_not_as_a_pod_volume() -> None:
    # Only reachable when an AgentRuntime bypassed validation (e.g. the file source).
    from app.core.model import AgentRuntime
    from app.core.mutation.patch import SkillConflict, build_skill_patch

    runtime = AgentRuntime.from_object({
        "metadata": {"name": "dup", "namespace": "team-a"},
        "spec": {"type": "agent", "skills": [
            {"name": "a", "image": "ghcr.io/x/a:1", "mountPath": "/s/a"},
            {"name": "a", "image": "ghcr.io/x/b:1", "mountPath": "/s/b"},
        ]},
    })
    pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "agent", "image": "x"}]}}
    with pytest.raises(SkillConflict, match='another skill of the same name already uses a volume "skill-a"'):
        build_skill_patch(pod, runtime, 0)
