"""Patch properties over generated Pods and AgentRuntimes (docs/testing.md).

Whenever the pod is allowed: the patch applies with jsonpatch to the very object it was made for, the
result is a v1 Pod the Kubernetes 1.33 schema accepts, the mutation on the result returns an empty
patch, only the agent container gains mounts, and nothing changes but the documented fields (skill
volumes appended, skill mounts appended, SKILL_FOLDERS, the two annotations, and with delivery by
extraction the puller first among the init containers with its volumes). Whenever it is denied:
409 exactly when the pod really collides with a skill, with a message naming the AgentRuntime.
A second property feeds broken shapes and asks only for no crash, a 400/409, or a patch that applies."""

from __future__ import annotations

import copy
import hashlib
import json
import string
from typing import Any

import jsonpatch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from app.core.matching.container import AgentContainerNotFound, choose_agent_container
from app.core.model import DEFAULT_SIDECAR_NAMES, ENV_SKILL_FOLDERS, AgentRuntime, volume_name
from app.core.names import ANNOTATION_DEFAULT_CONTAINER, DEFAULT_DOMAIN, LABEL_POD_TEMPLATE_HASH

ANNOTATION_AGENT_CONTAINER = DEFAULT_DOMAIN.agent_container
ANNOTATION_SKILLS = DEFAULT_DOMAIN.skills
ANNOTATION_SKILLS_INJECTED = DEFAULT_DOMAIN.skills_injected
from app.core.mutation.review import MutationOptions, mutate_pod
from app.core.mutation.patch import normalize_mount_path
from tests.builders import NAMESPACE, apply_and_recheck, assert_valid_pod, index_of

PROPERTY_SETTINGS = settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# Plain text strategies rather than from_regex: generation, not the webhook, is what costs here.
LOWER = string.ascii_lowercase
ALNUM = LOWER + string.digits
DNS_LABEL = st.builds(
    lambda head, tail, dash: head + (dash + tail if tail else ""),
    st.text(LOWER, min_size=1, max_size=6),
    st.text(ALNUM, max_size=5),
    st.sampled_from(["", "-"]),
)
LONG_SKILL_NAME = st.text(ALNUM, min_size=56, max_size=56).map(lambda s: "s" + s)  # 57: the longest allowed
SKILL_NAME = st.one_of(DNS_LABEL, DNS_LABEL, DNS_LABEL, LONG_SKILL_NAME)
PATH_COMPONENT = st.text(ALNUM + "._-", min_size=1, max_size=8).filter(lambda c: c not in {".", ".."})
# A comma is legal in a Kubernetes mountPath and must not break SKILL_FOLDERS' fixed point.
ODD_COMPONENT = st.sampled_from(["a,b", "with space", "x,,y", "tilde~0", "ümlaut"])
MOUNT_PATH = st.lists(st.one_of(PATH_COMPONENT, PATH_COMPONENT, PATH_COMPONENT, ODD_COMPONENT), min_size=1,
                      max_size=4).map(lambda parts: "/" + "/".join(parts))
IMAGE = st.builds(
    lambda registry, path, ref: f"{registry}/{path}{ref}",
    st.sampled_from(["ghcr.io", "quay.io", "registry.example.com:5000", "localhost"]),
    st.lists(DNS_LABEL, min_size=1, max_size=3).map("/".join),
    st.one_of(
        st.text(ALNUM + "_.-", min_size=1, max_size=12).map(lambda t: ":v" + t),
        st.just("@sha256:" + "ab" * 32),
        st.just(""),
    ),
)
PULL_POLICY = st.sampled_from([None, None, "Always", "IfNotPresent", "Never"])
# A directory inside the image (the mount's subPath), mostly absent.
SKILL_PATH = st.one_of(st.none(), st.none(), st.none(),
                       st.lists(PATH_COMPONENT, min_size=1, max_size=3).map("/".join))
PULLER = "skill-pull"
ANNOTATION_KEY = st.one_of(
    st.sampled_from(["example.com/owner", "a~b", "x/y~1z", "~0", "team.io/a~b/c", "plain"]),
    st.builds(lambda a, b: f"{a}.io/{b}", st.text(LOWER, min_size=1, max_size=6), st.text(LOWER + "~", min_size=1,
                                                                                         max_size=8)),
)
TEXT = st.text(alphabet=string.ascii_letters + string.digits + " ,/~-_.", max_size=20)

OWNER_KINDS = [
    ("apps/v1", "ReplicaSet"), ("apps/v1", "StatefulSet"), ("apps/v1", "DaemonSet"),
    ("batch/v1", "Job"), ("agents.x-k8s.io/v1alpha1", "Sandbox"),
]


@st.composite
def runtimes(draw) -> dict[str, Any]:
    names = draw(st.lists(SKILL_NAME, max_size=20, unique=True))
    paths = draw(st.lists(MOUNT_PATH, min_size=len(names), max_size=len(names),
                          unique_by=normalize_mount_path))
    skills = []
    for name, path in zip(names, paths):
        entry = {"name": name, "image": draw(IMAGE), "mountPath": path}
        policy = draw(PULL_POLICY)
        if policy:
            entry["pullPolicy"] = policy
        inside = draw(SKILL_PATH)
        if inside is not None:
            entry["path"] = inside
        skills.append(entry)
    return {
        "apiVersion": "agent.kagenti.dev/v1alpha1",
        "kind": "AgentRuntime",
        "metadata": {"name": draw(DNS_LABEL), "namespace": NAMESPACE, "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"type": draw(st.sampled_from(["agent", "tool"])), "skills": skills},
    }


@st.composite
def owner_and_target(draw) -> tuple[dict[str, Any], dict[str, Any]]:
    """Pod metadata (name/generateName, labels, ownerReferences) and the targetRef that matches it."""
    name = draw(DNS_LABEL)
    choice = draw(st.integers(0, len(OWNER_KINDS)))
    labels = draw(st.dictionaries(DNS_LABEL, DNS_LABEL, max_size=3))
    if choice == len(OWNER_KINDS):
        return {"name": name, "labels": labels}, {"apiVersion": "v1", "kind": "Pod", "name": name}
    api_version, kind = OWNER_KINDS[choice]
    metadata: dict[str, Any] = {"generateName": f"{name}-", "labels": labels}
    target = {"apiVersion": api_version, "kind": kind, "name": name}
    owner_name = name
    if kind == "ReplicaSet":
        template_hash = draw(st.text(ALNUM, min_size=5, max_size=10))
        owner_name = f"{name}-{template_hash}"
        labels[LABEL_POD_TEMPLATE_HASH] = template_hash
        if draw(st.booleans()):  # by the Deployment, else by the ReplicaSet itself
            target = {"apiVersion": draw(st.sampled_from(["apps/v1", "apps/v2"])), "kind": "Deployment", "name": name}
        else:
            target["name"] = owner_name
    owners = [{"apiVersion": api_version, "kind": kind, "name": owner_name, "uid": "u-1", "controller": True,
               "blockOwnerDeletion": True}]
    if draw(st.booleans()):
        owners.insert(draw(st.integers(0, 1)), {"apiVersion": "v1", "kind": "ConfigMap", "name": "other", "uid": "u-2"})
    metadata["ownerReferences"] = owners
    return metadata, target


def _env(draw, skill_paths: list[str]) -> list[dict[str, Any]] | None:
    if draw(st.booleans()):
        return None
    env = [{"name": f"VAR_{i}", "value": draw(TEXT)} for i in range(draw(st.integers(0, 3)))]
    kind = draw(st.sampled_from(["none", "value", "value", "valueFrom"]))
    if kind == "value":
        listed = draw(st.lists(st.one_of(st.sampled_from(skill_paths or ["/x"]), MOUNT_PATH), max_size=4))
        separator = draw(st.sampled_from([",", ", "]))
        env.insert(draw(st.integers(0, len(env))), {"name": ENV_SKILL_FOLDERS, "value": separator.join(listed)})
    elif kind == "valueFrom":
        env.append({"name": ENV_SKILL_FOLDERS, "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "folders"}}})
    return env


@st.composite
def scenarios(draw) -> tuple[dict[str, Any], dict[str, Any], MutationOptions]:
    runtime = draw(runtimes())
    skills = runtime["spec"]["skills"]
    metadata, target = draw(owner_and_target())
    # Mostly a match; hypothesis favours small integers, so 0 must mean "matches".
    matches = draw(st.integers(0, 9)) < 9
    runtime["spec"]["targetRef"] = target if matches else {**target, "name": target["name"] + "-x"}

    custom_sidecars = draw(st.booleans())
    sidecars = ["log-shipper", "metrics"] if custom_sidecars else list(DEFAULT_SIDECAR_NAMES)
    names = draw(st.lists(st.one_of(st.sampled_from(sidecars + ["agent"]), DNS_LABEL), min_size=1, max_size=5,
                          unique=True))
    init_names = draw(st.lists(DNS_LABEL.map(lambda n: "init-" + n), max_size=4, unique=True))

    # Volumes: some skill volumes already there (mostly with the same image), emptyDir, configMap.
    volumes: list[dict[str, Any]] = []
    for s in skills:
        if draw(st.integers(0, 3)) == 0:
            same = draw(st.integers(0, 7)) < 7
            volume = ({"name": f"skill-{s['name']}", "image": {"reference": s["image"]}} if same
                      else draw(st.sampled_from([{"name": f"skill-{s['name']}", "emptyDir": {}},
                                                 {"name": f"skill-{s['name']}", "image": {"reference": "other:1"}}])))
            volumes.append(volume)
    for i in range(draw(st.integers(0, 3))):
        volumes.append(draw(st.sampled_from([{"name": f"data-{i}", "emptyDir": {}},
                                             {"name": f"data-{i}", "configMap": {"name": f"cm-{i}"}}])))
    draw(st.randoms()).shuffle(volumes)
    volume_names = [v["name"] for v in volumes]
    skill_paths = [s["mountPath"] for s in skills]

    def mounts():
        if not volume_names or draw(st.booleans()):
            return None
        chosen = draw(st.lists(st.sampled_from(volume_names), max_size=3, unique=True))
        paths = draw(st.lists(st.one_of(st.sampled_from(skill_paths or ["/y"]), MOUNT_PATH),
                              min_size=len(chosen), max_size=len(chosen), unique_by=normalize_mount_path))
        return [{"name": n, "mountPath": p + draw(st.sampled_from(["", "", "/"]))} for n, p in zip(chosen, paths)]

    def build(name: str) -> dict[str, Any]:
        c: dict[str, Any] = {"name": name, "image": f"registry.example.com/{name}:1"}
        for key, value in (("env", _env(draw, skill_paths)), ("volumeMounts", mounts())):
            if value is not None:
                c[key] = value
        return c

    annotations = draw(st.one_of(st.none(), st.dictionaries(ANNOTATION_KEY, TEXT, max_size=3)))
    if annotations is not None:
        extra = draw(st.sampled_from(["none", "skills", "garbage", "agent", "default", "missing"]))
        if extra == "skills":
            listed = draw(st.lists(st.one_of(st.sampled_from([s["name"] for s in skills] or ["x"]), DNS_LABEL),
                                   max_size=4))
            annotations[ANNOTATION_SKILLS] = json.dumps(listed)
        elif extra == "garbage":
            annotations[ANNOTATION_SKILLS] = draw(TEXT)
        elif extra in ("agent", "default"):
            key = ANNOTATION_AGENT_CONTAINER if extra == "agent" else ANNOTATION_DEFAULT_CONTAINER
            annotations[key] = draw(st.sampled_from(names))
        elif extra == "missing":
            annotations[ANNOTATION_AGENT_CONTAINER] = "not-a-container"
        metadata["annotations"] = annotations
    metadata["namespace"] = NAMESPACE

    spec: dict[str, Any] = {"containers": [build(n) for n in names]}
    if init_names:
        spec["initContainers"] = [build(n) for n in init_names]
    if volumes or draw(st.booleans()):
        spec["volumes"] = volumes
    if draw(st.integers(0, 9)) == 0:
        spec["ephemeralContainers"] = [{"name": "debugger", "image": "busybox:1"}]
    if draw(st.integers(0, 3)) == 0:
        spec["imagePullSecrets"] = [{"name": n} for n in draw(st.lists(DNS_LABEL, min_size=1, max_size=2, unique=True))]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}
    options = MutationOptions(sidecar_names=frozenset(sidecars), delivery=draw(st.sampled_from(["image", "extract"])))
    return pod, runtime, options


def _agent_index(pod: dict[str, Any], options: MutationOptions) -> int | None:
    """None when the pod names a missing agent container (a conflict)."""
    names = [c["name"] for c in pod["spec"]["containers"]]
    try:
        return choose_agent_container(names, pod["metadata"].get("annotations") or {}, options.sidecar_names).position
    except AgentContainerNotFound:
        return None


def _deliveries(pod: dict[str, Any], runtime: AgentRuntime, options: MutationOptions) -> dict[str, str]:
    """Skill name -> how the pod gets it: an image volume already there with the skill's image is kept
    whatever the delivery; any other skill is delivered as the options say."""
    volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
    return {s.name: "image" if options.delivery == "image" or
            (volumes.get(volume_name(s.name)) or {}).get("image", {}).get("reference") == s.image else "extract"
            for s in runtime.spec.skills}


def _collides(pod: dict[str, Any], runtime: AgentRuntime, agent: int | None, options: MutationOptions) -> bool:
    """The oracle for 409, written from the README's rules independently of build_skill_patch."""
    if agent is None:
        return True
    names = {c["name"] for kind in ("containers", "initContainers") for c in pod["spec"].get(kind) or []}
    if "extract" in _deliveries(pod, runtime, options).values() and PULLER in names:
        return True  # not ours: the generator never makes the puller itself
    volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
    mounts = {normalize_mount_path(m["mountPath"]): m["name"]
              for m in pod["spec"]["containers"][agent].get("volumeMounts") or []}
    for s in runtime.spec.skills:
        volume = volumes.get(volume_name(s.name))
        if volume is not None and volume.get("image", {}).get("reference") != s.image:
            return True
        holder = mounts.get(normalize_mount_path(s.mountPath))
        if holder is not None and holder != volume_name(s.name):
            return True
    return False


def _documented_fields_removed(pod: dict[str, Any], agent: int) -> dict[str, Any]:
    stripped = copy.deepcopy(pod)
    init = [c for c in stripped["spec"].pop("initContainers", None) or [] if c["name"] != PULLER]
    if init:
        stripped["spec"]["initContainers"] = init
    stripped["spec"].pop("volumes", None)
    stripped["spec"]["containers"][agent].pop("volumeMounts", None)
    stripped["spec"]["containers"][agent].pop("env", None)
    stripped["metadata"].pop("annotations", None)
    return stripped


def _expected_volume(skill: Any, delivery: str) -> dict[str, Any]:
    """Written from the contract, not from the code: volume `skill-<name>` with the image reference,
    and pullPolicy only when the skill sets one; extracted, an emptyDir of the size limit and a 4 KiB
    block for each of the 10,000 entries allowed."""
    if delivery == "extract":
        return {"name": "skill-" + skill.name, "emptyDir": {"sizeLimit": "105536Ki"}}
    image = {"reference": skill.image, "pullPolicy": skill.pullPolicy} if skill.pullPolicy else {"reference": skill.image}
    return {"name": "skill-" + skill.name, "image": image}


def _expected_mount(skill: Any) -> dict[str, Any]:
    mount = {"name": "skill-" + skill.name, "mountPath": skill.mountPath, "readOnly": True}
    return {**mount, "subPath": skill.path} if skill.path is not None else mount


def _check_puller(before: dict[str, Any], after: dict[str, Any], runtime: AgentRuntime, delivered: dict[str, str]) -> list[str]:
    """The puller is first, fetches exactly the extracted skills (with their paths), mounts only their
    volumes and the pull secrets; returns the names of the volumes added for it."""
    old_init = before["spec"].get("initContainers") or []
    new_init = after["spec"].get("initContainers") or []
    extracted = [s for s in runtime.spec.skills if delivered[s.name] == "extract"]
    if not extracted:
        assert new_init == old_init
        return []
    puller, rest = new_init[0], new_init[1:]
    assert puller["name"] == PULLER and puller["command"] == ["skill-webhook", "pull"] and rest == old_init
    wanted: list[str] = []
    for s in extracted:
        wanted += ["--skill", f"{s.name}={s.image}"] + (["--skill-path", f"{s.name}={s.path}"] if s.path is not None else [])
    assert puller["args"][: len(wanted)] == wanted
    secrets = [f"skill-pull-secret-{i}" for i, _ in enumerate(before["spec"].get("imagePullSecrets") or [])]
    assert [m["name"] for m in puller["volumeMounts"]] == ["skill-" + s.name for s in extracted] + secrets
    assert all(m.get("readOnly") for m in puller["volumeMounts"][len(extracted):])
    return secrets


def _check_documented_fields(before: dict[str, Any], after: dict[str, Any], runtime: AgentRuntime, agent: int,
                             delivered: dict[str, str]) -> None:
    skills = runtime.spec.skills
    old_volumes = before["spec"].get("volumes") or []
    new_volumes = after["spec"].get("volumes") or []
    present = {v["name"] for v in old_volumes}
    secrets = _check_puller(before, after, runtime, delivered)
    assert new_volumes[: len(old_volumes)] == old_volumes
    added = [_expected_volume(s, delivered[s.name]) for s in skills if "skill-" + s.name not in present]
    assert new_volumes[len(old_volumes):len(old_volumes) + len(added)] == added
    assert [v["name"] for v in new_volumes[len(old_volumes) + len(added):]] == secrets

    old_agent, new_agent = before["spec"]["containers"][agent], after["spec"]["containers"][agent]
    old_mounts = old_agent.get("volumeMounts") or []
    taken = {normalize_mount_path(m["mountPath"]) for m in old_mounts}
    assert new_agent["volumeMounts"][: len(old_mounts)] == old_mounts
    assert new_agent["volumeMounts"][len(old_mounts):] == [
        _expected_mount(s) for s in skills if normalize_mount_path(s.mountPath) not in taken
    ]

    old_env, new_env = old_agent.get("env") or [], new_agent["env"]
    assert len(new_env) - len(old_env) in (0, 1)
    folders = [i for i, e in enumerate(new_env) if e["name"] == ENV_SKILL_FOLDERS]
    last = folders[-1]
    for i, entry in enumerate(old_env):
        if i != last:
            assert new_env[i] == entry
    if "valueFrom" in new_env[last]:
        assert new_env[last] == old_env[last]
    else:
        listed = ",".join(p.strip() for p in new_env[last]["value"].split(",") if p.strip())
        for s in skills:
            assert ",".join(p.strip() for p in s.mountPath.split(",") if p.strip()) in listed

    old_annotations = before["metadata"].get("annotations") or {}
    new_annotations = after["metadata"]["annotations"]
    ours = {ANNOTATION_SKILLS, ANNOTATION_SKILLS_INJECTED}
    assert {k: v for k, v in new_annotations.items() if k not in ours} == {
        k: v for k, v in old_annotations.items() if k not in ours
    }
    listed_names = json.loads(new_annotations[ANNOTATION_SKILLS])
    assert len(listed_names) == len(set(listed_names)) and {s.name for s in skills} <= set(listed_names)
    entries = [
        {"name": s.name, "image": s.image, "mountPath": s.mountPath, **({"pullPolicy": s.pullPolicy} if s.pullPolicy else {}),
         **({"path": s.path} if s.path is not None else {}),
         **({"delivery": "extract"} if delivered[s.name] == "extract" else {})}
        for s in skills
    ]
    canonical = json.dumps(entries, sort_keys=True, separators=(",", ":"))
    assert json.loads(new_annotations[ANNOTATION_SKILLS_INJECTED]) == {
        "agentRuntime": runtime.metadata.name,
        "container": new_agent["name"],
        "skills": {s.name: s.image for s in skills},
        "fingerprint": "sha256:" + hashlib.sha256(canonical.encode()).hexdigest(),
    }


@PROPERTY_SETTINGS
@given(scenarios())
def test_patch_properties(scenario):
    pod, runtime_obj, options = scenario
    index = index_of(runtime_obj)
    runtime = AgentRuntime.from_object(runtime_obj)
    before = copy.deepcopy(pod)
    assert_valid_pod(before)  # the generator makes real pods

    decision = mutate_pod(pod, NAMESPACE, index, options)
    event(decision.outcome)  # shown by --hypothesis-show-statistics: the mix of cases reached
    assert pod == before, "the mutation must not modify its input"

    agent = _agent_index(pod, options)
    matched = decision.runtime is not None
    if not matched or not runtime.spec.skills:
        assert decision.allowed and not decision.patch
        return
    if _collides(pod, runtime, agent, options):
        assert not decision.allowed and decision.code == 409 and decision.patch is None
        assert decision.message and f'AgentRuntime "{runtime.metadata.name}"' in decision.message
        return
    assert decision.allowed, f"{decision.code}: {decision.message}"
    assert decision.patch

    after = apply_and_recheck(pod, decision, index, options)  # applies, and a second run is a no-op
    assert_valid_pod(after)
    assert _documented_fields_removed(after, agent) == _documented_fields_removed(before, agent)
    for i, (old, new) in enumerate(zip(before["spec"]["containers"], after["spec"]["containers"])):
        if i != agent:
            assert new == old, f"container {old['name']} changed"
    _check_documented_fields(before, after, runtime, agent, _deliveries(pod, runtime, options))


# -- broken shapes: never a crash, never a patch that does not apply ---------------------------------

JSON_JUNK = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=6,
)


# Keys the webhook reads: breaking these (or list items) is what can reach a bad patch.
READ_KEYS = frozenset({
    "metadata", "spec", "name", "labels", "annotations", "ownerReferences", "kind", "apiVersion", "controller",
    "containers", "volumes", "image", "reference", "env", "value", "valueFrom", "volumeMounts", "mountPath",
})


def _breakable_spots(node: Any) -> list[tuple[Any, Any]]:
    """Every (parent, key) in the pod tree that the webhook reads, whatever the tree has become."""
    spots: list[tuple[Any, Any]] = []
    keys = list(node) if isinstance(node, dict) else range(len(node)) if isinstance(node, list) else ()
    for key in keys:
        if isinstance(key, int) or key in READ_KEYS:
            spots.append((node, key))
            spots += _breakable_spots(node[key])
    return spots


@given(scenarios(), st.data())
def test_broken_shapes_are_denied_or_patched_cleanly(scenario, data):
    pod, runtime_obj, options = scenario
    index = index_of(runtime_obj)
    for _ in range(data.draw(st.integers(1, 3))):
        spots = _breakable_spots(pod)
        if not spots:
            break
        parent, key = spots[data.draw(st.integers(0, len(spots) - 1))]
        parent[key] = data.draw(JSON_JUNK)
    decision = mutate_pod(pod, NAMESPACE, index, options)
    event(decision.outcome)
    if not decision.allowed:
        assert decision.code in (400, 409) and decision.message
        return
    if decision.patch:
        patched = jsonpatch.apply_patch(pod, decision.patch)
        again = mutate_pod(patched, NAMESPACE, index, options)
        assert again.allowed and not again.patch, again.patch or again.message
