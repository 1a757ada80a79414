"""Inputs for the fuzzing harness (tests/fuzzing.py), drawn from one seeded `random.Random`.

Generated AdmissionReviews and Pods aimed at FUZZ_RUNTIMES and the samples (so the deep paths run:
every owner rule, conflicts, shadowed runtimes, existing volumes, mounts and SKILL_FOLDERS),
generated AgentRuntimes (bare JSON/YAML, multi-document, wrapped in reviews), structural mutations
(type swaps, deletions, odd values) and byte mutations (flips, truncation, tokens) of those and of
the samples, raw bytes, hostile YAML (alias bombs, deep nesting, tags, directives) and JSON (deep
nesting, huge numbers, NaN, surrogates, UTF-16), broken envelopes, and bodies at the 3 MiB cap.
"""

from __future__ import annotations

import copy
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "manifests" / "samples"
MAX_BODY = 3 * 1024 * 1024  # over this, 413 (the API server's own limit)


@dataclass(frozen=True)
class FuzzInput:
    family: str
    endpoint: str
    body: bytes
    content_type: str | None = None
    chunk_size: int | None = None  # set: sent chunked (no Content-Length), in pieces of this size


def _skill(name: str, mount_path: str, image: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": image or f"ghcr.io/fuzz/skills/{name}:v1", "mountPath": mount_path, **extra}


def _runtime(name: str, target: tuple[str, str, str], skills: list[dict], created: str) -> dict[str, Any]:
    api_version, kind, workload = target
    return {
        "apiVersion": "agent.kagenti.dev/v1alpha1", "kind": "AgentRuntime",
        "metadata": {"name": name, "namespace": "fuzz", "creationTimestamp": created},
        "spec": {"type": "agent", "targetRef": {"apiVersion": api_version, "kind": kind, "name": workload},
                 "skills": skills},
    }


# Every owner rule of docs/mutation.md, an empty skill list, a shadowed pair, digests, pull policies, and a
# "~" in a mount path (it must survive JSON Pointer escaping where it becomes part of a value).
FUZZ_RUNTIMES = [
    _runtime("web-runtime", ("apps/v1", "Deployment", "web"), [
        _skill("alpha", "/agent/skills/alpha"), _skill("beta", "/skills/beta", pullPolicy="IfNotPresent"),
        _skill("gamma", "/opt/gamma~x", image="registry.example.com:5000/team/gamma@sha256:" + "a" * 64),
    ], "2026-01-01T00:00:00Z"),
    _runtime("solo-runtime", ("v1", "Pod", "solo"), [_skill("solo", "/agent/solo")], "2026-01-01T00:00:00Z"),
    _runtime("sandbox-runtime", ("agents.x-k8s.io/v1alpha1", "Sandbox", "sbx"), [_skill("sbx", "/agent/sbx")],
             "2026-01-01T00:00:00Z"),
    _runtime("empty-runtime", ("batch/v1", "Job", "batch-job"), [], "2026-01-01T00:00:00Z"),
    _runtime("dup-old", ("apps/v1", "DaemonSet", "dup"), [_skill("old", "/agent/old")], "2025-01-01T00:00:00Z"),
    _runtime("dup-new", ("apps/v1", "DaemonSet", "dup"), [_skill("new", "/agent/new")], "2026-01-01T00:00:00Z"),
    _runtime("rs-runtime", ("apps/v1", "ReplicaSet", "plain-rs"), [_skill("rs", "/agent/rs", pullPolicy="Never")],
             "2026-01-01T00:00:00Z"),
    _runtime("sts-runtime", ("apps/v1", "StatefulSet", "db"), [_skill("db", "/agent/db")], "2026-01-01T00:00:00Z"),
]
SAMPLE_REVIEW = json.loads((SAMPLES / "admission-review.json").read_text())
SAMPLE_RUNTIMES = list(yaml.safe_load_all((SAMPLES / "agentruntimes.yaml").read_text()))
# (apiVersion, kind, name, namespace) of the workloads pods are generated for; the last is untargeted.
TARGETS = [("apps/v1", "Deployment", "resume-agent", "team-a"), ("apps/v1", "StatefulSet", "research-tool", "team-a")]
TARGETS += [(*r["spec"]["targetRef"].values(), "fuzz") for r in FUZZ_RUNTIMES]
TARGETS += [("apps/v1", "Deployment", "x", "fuzz")]
SKILLS = [s for r in FUZZ_RUNTIMES + SAMPLE_RUNTIMES for s in r["spec"]["skills"]]
CONTAINER_NAMES = ["agent", "envoy-proxy", "resume-agent", "web", "istio-proxy", "main", "spiffe-helper", "sidecar", ""]
ODD_STRINGS = ["", " ", "~", "/", "~1", "a/b~c", "ü", "\u0000", "\ud800", "😀😀", "x" * 300, "-1", "null", "true",
               "1e400", "../..", "%s%n", "\n", "\\", '"']
ODD_VALUES: list[Any] = [None, True, False, 0, -1, 2**63, -(2**63) - 1, 10**30, 1.5, 1e308, -0.0, [], {}, [[]],
                         {"": {}}, *ODD_STRINGS]
SKILL_NAMES: list[Any] = ["alpha", "resume-reviewer", "a" * 57, "a" * 58, "", "Upper", "-x", "x-", "a.b", "dup", 7]
IMAGES: list[Any] = [
    "ghcr.io/redhat-et/skillimage/resume-reviewer:v1.0.0", "ghcr.io/x/y:latest", "ghcr.io/x/y",
    "x/y@sha256:" + "0" * 64,
    "x/y@sha256:abc", "X/Y:1", "", "localhost:5000/a/b:tag", "a:b:c", ":tag", "ghcr.io//x", "r.io/" + "p" * 300, None,
]
MOUNT_PATHS: list[Any] = [
    "/agent/skills/x", "/skills", "/skills/nested", "relative/path", "/proc/x", "/sys", "/dev", "/devices/x",
    "/var/run/secrets/x", "/", "/etc", "/a/../b", "/a//b/", "/a/./b", "", "/app/.claude/skills/x", 3,
]
JSON_TYPES = [None, "application/json", "application/json; charset=utf-8", "text/plain", "APPLICATION/JSON;;",
              "application/merge-patch+json", "application/x-www-form-urlencoded", "application/octet-stream"]
YAML_TYPES = [None, "application/yaml", "application/x-yaml", "text/yaml", "application/x-www-form-urlencoded"]
BYTE_TOKENS = [b"{", b"}", b"[", b"]", b'"', b",", b":", b"\\", b"\\u0000", b"\\ud800", b"\x00", b"\xff",
               b"\xed\xa0\x80", b"\xef\xbb\xbf", b"null", b"1e999", b"NaN", b"&a ", b"*a",
               b"!!python/object:os.system ",
               b"\n- ", b"---\n", b"\t", b"'", b"9" * 5000]
YAML_TAGS = [
    "!!python/object/apply:os.system ['echo pwned']", "!!python/object/new:type ['x', [], {}]",
    "!!python/name:os.system", "!!python/tuple [1, 2]", "!!binary aGVsbG8=", "!!set {a, b}",
    "!!timestamp 2001-12-14", "!!omap [a: 1]", "!!pairs [a: 1]", "!custom x",
    "!<tag:yaml.org,2002:python/object:object> {}",
    "!!float .nan", "!!int 0x1F", "!!str 1", "!!null ''", "!!bool yes", "!!merge {}", "!!value x",
]
YAML_ODDITIES = [
    "base: {a: 1}\nx:\n  <<: {b: 2}\n", "%YAML 1.2\n---\na: 1\n", "%TAG !e! tag:example.com,2000:\n---\n!e!foo bar\n",
    "? [a, b]\n: c\n", "? {a: 1}\n: x\n", "1: a\ntrue: b\nnull: c\n1.5: d\n0x10: e\n", "n: " + "9" * 5000 + "\n",
    "f: [.nan, .inf, -.inf]\n", "a: 1\na: 2\n", "\ufeffa: 1\n", "a:\t1\n", "a: \x07\n", "--- a\n...\n--- b\n",
    "t: 2001-12-14t21:59:43.10-05:00\n", "a: &x 1\nb: *x\n", "- - - - - x\n", "'unterminated\n", "{a: [}\n",
]


def generate_inputs(rng: random.Random, count: int) -> Iterator[FuzzInput]:
    families = [f for f, _ in _FAMILIES]
    weights = [w for _, w in _FAMILIES]
    for _ in range(count):
        inp = rng.choices(families, weights)[0](rng)
        if inp.chunk_size is None and len(inp.body) < 65536 and rng.random() < 0.15:
            inp = FuzzInput(inp.family, inp.endpoint, inp.body, inp.content_type, rng.choice([1, 7, 64, 4096]))
        yield inp


def random_pod(rng: random.Random) -> dict[str, Any]:
    api_version, kind, name, namespace = rng.choice(TARGETS)
    labels = {"kagenti.io/type": rng.choice(["agent", "tool"])}
    meta: dict[str, Any] = {"labels": labels}
    if rng.random() < 0.8:
        meta["namespace"] = namespace
    owners: list[dict[str, Any]] = []
    if kind == "Deployment":
        template_hash = rng.choice(["7d9f8b6c5d", "5d8f7c9b6"])
        labels["pod-template-hash"] = template_hash if rng.random() < 0.9 else "other"
        owners.append({"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": f"{name}-{template_hash}"})
        meta["generateName"] = f"{name}-{template_hash}-"
    elif kind == "Pod":
        meta["name"] = name
    else:
        owners.append({"apiVersion": api_version, "kind": kind, "name": name})
        meta["generateName"] = f"{name}-"
    for ref in owners:
        ref["uid"] = f"{rng.getrandbits(64):016x}"
        if rng.random() < 0.8:
            ref["controller"] = rng.random() < 0.9
    if rng.random() < 0.1:
        owners.insert(0, {"apiVersion": "v1", "kind": "ConfigMap", "name": "cm", "uid": "u", "controller": False})
    if owners:
        meta["ownerReferences"] = owners
    if rng.random() < 0.05:
        labels["kagenti.io/skills-inject"] = "disabled"
    names = rng.sample(CONTAINER_NAMES, rng.randint(1, 4))
    annotations = {}
    for key, p, values in (
        ("kagenti.io/agent-container", 0.2, names + ["missing"]),
        ("kubectl.kubernetes.io/default-container", 0.15, names + ["missing"]),
        ("kagenti.io/skills", 0.15, ['["alpha"]', '["other","beta"]', "not json", "{}", "[1,2]", ""]),
        ("kagenti.io/skills-injected", 0.1, ["{}", "x", '{"agentRuntime":"web-runtime"}']),
        ("a/b~c", 0.1, ["needs escaping"]),
    ):
        if rng.random() < p:
            annotations[key] = rng.choice(values)
    if annotations:
        meta["annotations"] = annotations
    spec: dict[str, Any] = {"containers": [_container(rng, n) for n in names]}
    if rng.random() < 0.3:
        spec["initContainers"] = [_container(rng, "init")]
    if rng.random() < 0.05:
        spec["ephemeralContainers"] = [_container(rng, "debug")]
    if rng.random() < 0.3:
        spec["volumes"] = [_volume(rng) for _ in range(rng.randint(0, 3))]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def _container(rng: random.Random, name: str) -> dict[str, Any]:
    container: dict[str, Any] = {"name": name, "image": f"registry.example.com/{name or 'x'}:1"}
    if rng.random() < 0.3:
        env: list[dict[str, Any]] = [{"name": "LOG_LEVEL", "value": "info"}]
        if rng.random() < 0.5:
            paths = [s["mountPath"] for s in rng.sample(SKILLS, rng.randint(0, 2))]
            env.append({"name": "SKILL_FOLDERS", "value": ",".join(paths + rng.sample(["/x", ""], 1))})
        elif rng.random() < 0.5:
            env.append({"name": "SKILL_FOLDERS", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}})
        container["env"] = env
    if rng.random() < 0.25:
        container["volumeMounts"] = []
        for s in rng.sample(SKILLS, rng.randint(0, 2)):
            path = rng.choice([s["mountPath"], s["mountPath"] + "/", "/data"])
            container["volumeMounts"].append({"name": rng.choice([f"skill-{s['name']}", "data"]), "mountPath": path})
    return container


def _volume(rng: random.Random) -> dict[str, Any]:
    s = rng.choice(SKILLS)
    image = {"reference": s["image"], **({"pullPolicy": s["pullPolicy"]} if "pullPolicy" in s else {})}
    return rng.choice([
        {"name": f"skill-{s['name']}", "image": image},
        {"name": f"skill-{s['name']}", "image": {"reference": "registry.example.com/other:2"}},
        {"name": f"skill-{s['name']}", "emptyDir": {}},
        {"name": "data", "emptyDir": {}},
    ])


def random_review(rng: random.Random, obj: Any, kind: tuple[str, str, str] = ("", "v1", "Pod")) -> dict[str, Any]:
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    namespace = meta.get("namespace") if isinstance(meta, dict) else None
    group, version, kind_name = kind
    request: dict[str, Any] = {
        "uid": rng.choice([f"{rng.getrandbits(128):032x}", *[s for s in ODD_STRINGS if s]]),
        "kind": {"group": group, "version": version, "kind": kind_name},
        "resource": {"group": group, "version": version, "resource": kind_name.lower() + "s"},
        "namespace": namespace if isinstance(namespace, str) else rng.choice(["team-a", "fuzz", ""]),
        "operation": rng.choices(["CREATE", "UPDATE", "DELETE", "CONNECT"], [90, 6, 2, 2])[0],
        "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
        "object": obj, "oldObject": copy.deepcopy(obj) if rng.random() < 0.1 else None, "dryRun": rng.random() < 0.1,
    }
    if rng.random() < 0.03:
        request["subResource"] = rng.choice(["status", "ephemeralcontainers"])
    if rng.random() < 0.03:
        request["kind"] = {"group": "apps", "version": "v1", "kind": "Deployment"}
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def random_agentruntime(rng: random.Random) -> dict[str, Any]:
    """An AgentRuntime; in about half of them every skill is well-formed, so the allow path runs too."""
    well_formed = rng.random() < 0.5
    skills = []
    for i in range(rng.choice([0, 1, 2, 3, 5, 20 if well_formed else 21])):
        if well_formed:
            entry = {"name": f"skill-{i}", "image": rng.choice(IMAGES[:4]), "mountPath": f"/agent/skills/{i}"}
        else:
            entry = {"name": rng.choice(SKILL_NAMES), "image": rng.choice(IMAGES), "mountPath": rng.choice(MOUNT_PATHS)}
        if rng.random() < 0.3:
            entry["pullPolicy"] = rng.choice(["Always", "IfNotPresent", "Never", "always", "", None])
        if rng.random() < 0.1:
            entry["description"] = "unknown field"
        if rng.random() < 0.1:
            del entry[rng.choice(list(entry))]
        skills.append(entry)
    odd_targets = [] if well_formed else [("apps/v1", "CronJob", "c", ""), ("", "", "", "")]
    api_version, kind, name, _ = rng.choice(TARGETS + odd_targets)
    if well_formed and rng.random() < 0.5:
        name = f"free-{rng.randrange(50)}"  # a workload no AgentRuntime targets yet: CREATE may pass
    spec: dict[str, Any] = {"type": rng.choice(["agent", "tool"] if well_formed else ["agent", "bad", None]),
                            "targetRef": {"apiVersion": api_version, "kind": kind, "name": name}, "skills": skills}
    if rng.random() < 0.2:
        spec.update(identity={"spiffe": "enabled"}, trace={"enabled": True}, authBridgeMode="x", mtlsMode="strict")
    if well_formed:
        return {"apiVersion": "agent.kagenti.dev/v1alpha1", "kind": "AgentRuntime",
                "metadata": {"name": f"rt-{rng.randrange(100)}", "namespace": rng.choice(["fuzz", "team-a"])},
                "spec": spec}
    meta = {"name": rng.choice(["rt", "web-runtime", "Bad_Name", ""]), "namespace": rng.choice(["fuzz", "team-a"])}
    return {"apiVersion": rng.choice(["agent.kagenti.dev/v1alpha1", "agent.kagenti.dev/v1", "other/v1"]),
            "kind": rng.choice(["AgentRuntime", "Pod"]), "metadata": meta, "spec": spec}


def runtime_review(rng: random.Random, obj: Any) -> dict[str, Any]:
    review = random_review(rng, obj, ("agent.kagenti.dev", "v1alpha1", "AgentRuntime"))
    review["request"]["operation"] = rng.choice(["CREATE", "UPDATE", "DELETE"])
    return review


def mutate_value(rng: random.Random, value: Any, rounds: int) -> Any:
    """`value` (a copy) after `rounds` random edits: type swaps, deletions, odd values, duplicates."""
    root = [copy.deepcopy(value)]  # a holder, so that the whole value can be replaced too
    for _ in range(rounds):
        places = list(slots(root))
        parent, key = rng.choice(places)
        action = rng.random()
        if action < 0.55:
            parent[key] = swap_type(rng, parent[key])
        elif action < 0.7 and parent is not root:
            del parent[key]
        elif action < 0.8:
            parent[key] = copy.deepcopy(rng.choice(ODD_VALUES))
        elif action < 0.9 and isinstance(parent[key], list) and parent[key]:
            parent[key].append(copy.deepcopy(rng.choice(parent[key])))
        elif isinstance(parent[key], dict):
            parent[key][rng.choice(ODD_STRINGS)] = copy.deepcopy(rng.choice(ODD_VALUES))
    return root[0]


def slots(container: Any) -> Iterator[tuple[Any, Any]]:
    for key, child in list(container.items() if isinstance(container, dict) else enumerate(container)):
        yield container, key
        if isinstance(child, (dict, list)):
            yield from slots(child)


def swap_type(rng: random.Random, value: Any) -> Any:
    """`value` as another JSON type: lists <-> dicts <-> strings <-> numbers <-> booleans <-> null."""
    if isinstance(value, dict):
        options = [list(value.values()), list(value), json.dumps(value)[:40], len(value), None]
    elif isinstance(value, list):
        as_dict = {str(i): v for i, v in enumerate(value)}
        options = [as_dict, value[0] if value else "", str(value)[:40], len(value), None]
    elif isinstance(value, str):
        options = [[value], {value: value}, len(value), None, True, -1]
    elif isinstance(value, bool):
        options = [str(value).lower(), int(value), [value], None, {}]
    elif isinstance(value, (int, float)):
        options = [str(value), [value], {"value": value}, None, bool(value), -value]
    else:
        options = [{}, [], "", 0, False, "null"]
    return rng.choice(options)


def mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    """Bit flips, truncation, insertion of tokens, deletion and duplication of slices."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if not buf:
            buf += rng.choice(BYTE_TOKENS)
            continue
        i, action = rng.randrange(len(buf)), rng.random()
        if action < 0.3:
            buf[i] ^= 1 << rng.randrange(8)
        elif action < 0.45:
            del buf[i:]
        elif action < 0.6:
            buf[i:i] = rng.choice(BYTE_TOKENS)
        elif action < 0.75:
            del buf[i:i + rng.randint(1, 16)]
        elif action < 0.85:
            buf[i:i] = buf[i:i + rng.randint(1, 64)]
        else:
            buf[i] = rng.randrange(256)
    return bytes(buf)


def _encode(rng: random.Random, value: Any, endpoint: str) -> tuple[bytes, str | None]:
    if endpoint == "/validate" and rng.random() < 0.35:
        try:
            return yaml.safe_dump(value, allow_unicode=rng.random() < 0.5).encode("utf-8", "surrogatepass"), \
                rng.choice(YAML_TYPES)
        except yaml.YAMLError:
            pass
    text = json.dumps(value, ensure_ascii=rng.random() < 0.5, indent=rng.choice([None, None, 1]))
    return text.encode("utf-8", "surrogatepass"), rng.choice(JSON_TYPES)


def _base_value(rng: random.Random) -> tuple[str, Any]:
    """A well-formed starting point for mutation, with the endpoint it is meant for."""
    choice = rng.randrange(5)
    if choice == 0:
        return "/mutate", SAMPLE_REVIEW
    if choice == 1:
        return "/mutate", random_review(rng, random_pod(rng))
    if choice == 2:
        return "/validate", rng.choice(SAMPLE_RUNTIMES)
    if choice == 3:
        return "/validate", runtime_review(rng, rng.choice(SAMPLE_RUNTIMES + FUZZ_RUNTIMES))
    return "/validate", random_agentruntime(rng)


def _generated_review(rng: random.Random) -> FuzzInput:
    body, content_type = _encode(rng, random_review(rng, random_pod(rng)), "/mutate")
    return FuzzInput("generated-review", "/mutate", body, content_type)


def _generated_agentruntime(rng: random.Random) -> FuzzInput:
    obj = random_agentruntime(rng)
    form = rng.random()
    if form < 0.3:
        value: Any = runtime_review(rng, obj)
    elif form < 0.4:
        text = yaml.safe_dump_all([obj, random_agentruntime(rng)])
        return FuzzInput("generated-agentruntime", "/validate", text.encode(), rng.choice(YAML_TYPES))
    else:
        value = obj
    body, content_type = _encode(rng, value, "/validate")
    return FuzzInput("generated-agentruntime", "/validate", body, content_type)


def _mutated_structure(rng: random.Random) -> FuzzInput:
    endpoint, value = _base_value(rng)
    endpoint = endpoint if rng.random() < 0.9 else rng.choice(["/mutate", "/validate"])
    body, content_type = _encode(rng, mutate_value(rng, value, rng.randint(1, 4)), endpoint)
    return FuzzInput("mutated-structure", endpoint, body, content_type)


def _mutated_bytes(rng: random.Random) -> FuzzInput:
    endpoint, value = _base_value(rng)
    body, content_type = _encode(rng, value, endpoint)
    return FuzzInput("mutated-bytes", endpoint, mutate_bytes(rng, body), content_type)


def _envelope(rng: random.Random) -> FuzzInput:
    review = copy.deepcopy(SAMPLE_REVIEW)
    where, key = rng.choice([(review, "kind"), (review, "apiVersion"), (review, "request"), (review["request"], "uid")])
    if rng.random() < 0.3:
        del where[key]
    else:
        where[key] = rng.choice(["Review", "admission.k8s.io/v1beta1", "AdmissionReview", "", None, [], {}, 7])
    endpoint = rng.choice(["/mutate", "/validate"])
    body, content_type = _encode(rng, review, endpoint)
    return FuzzInput("envelope", endpoint, body, content_type)


def _raw_bytes(rng: random.Random) -> FuzzInput:
    if rng.random() < 0.5:
        body = rng.randbytes(rng.choice([0, 1, 2, 16, 512]))
    else:
        alphabet = '{}[]":,-0123456789.eE tfnul\\\n\t!&*|>#%@`?'
        body = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 200))).encode()
    return FuzzInput("raw-bytes", rng.choice(["/mutate", "/validate"]), body, rng.choice(JSON_TYPES + YAML_TYPES))


def alias_bomb(levels: int, width: int) -> str:
    """The billion laughs: `levels` anchors, each a list of `width` aliases of the previous one."""
    lines = ['a0: &a0 ["lol"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


def deep_yaml(depth: int, style: str) -> str:
    if style == "flow":
        return "[" * depth + "]" * depth
    if style == "block-map":
        return "\n".join(" " * i + "k:" for i in range(depth)) + " 1\n"
    return "- " * depth + "x\n"


def deep_json(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth if depth % 2 else "[" * depth + "]" * depth


def _hostile_yaml(rng: random.Random) -> FuzzInput:
    choice = rng.randrange(4)
    if choice == 0:
        text = alias_bomb(rng.randint(1, 9), rng.randint(2, 9))
    elif choice == 1:
        text = deep_yaml(rng.choice([50, 100, 101, 1000, 5000]), rng.choice(["flow", "block-map", "block-seq"]))
    elif choice == 2:
        runtime = yaml.safe_dump(rng.choice(SAMPLE_RUNTIMES))
        text = runtime.replace("type: agent", "type: " + rng.choice(YAML_TAGS), 1) if rng.random() < 0.5 \
            else rng.choice(YAML_TAGS) + "\n"
    else:
        text = rng.choice(YAML_ODDITIES)
    endpoint = "/validate" if rng.random() < 0.85 else "/mutate"
    return FuzzInput("hostile-yaml", endpoint, text.encode("utf-8"), rng.choice(YAML_TYPES))


def _hostile_json(rng: random.Random) -> FuzzInput:
    review = json.dumps(SAMPLE_REVIEW)
    text = rng.choice([
        deep_json(rng.choice([99, 100, 101, 1000, 5000, 100_000])),
        "1" * rng.choice([4299, 4300, 4301, 10_000]), "1e999999", "-0", "1" + "0" * 400 + ".5",
        review.replace('"dryRun": false', '"dryRun": NaN'),
        review.replace('"oldObject": null', '"oldObject": Infinity'),
        review.replace('"oldObject": null', '"oldObject": ' + "9" * 5000), '"\\ud800"', '{"\\u0000": 1}',
        review[:-1] + ', "request": {"uid": "second"}}', "null", "true", "1", '"x"', "[]", "{}", "   ",
        "{}x", "{}{}", "// c\n{}", '{"a": "' + "x" * 100_000 + '"}',
    ])
    if rng.random() < 0.1:
        return FuzzInput("hostile-json", "/mutate", review.encode(rng.choice(["utf-16", "utf-32"])), None)
    return FuzzInput("hostile-json", rng.choice(["/mutate", "/validate"]), text.encode("utf-8", "surrogatepass"),
                     rng.choice(JSON_TYPES))


def _oversized(rng: random.Random) -> FuzzInput:
    """Bodies at the 3 MiB cap: padded with JSON whitespace, so only their size decides."""
    endpoint, value = rng.choice([("/mutate", SAMPLE_REVIEW), ("/validate", SAMPLE_RUNTIMES[0])])
    text = json.dumps(value).encode()
    size = MAX_BODY + rng.choice([-1, 0, 1, 4096])
    chunk = rng.choice([None, 65536])
    return FuzzInput("oversized", endpoint, text + b" " * (size - len(text)), "application/json", chunk)


_FAMILIES: list[tuple[Callable[[random.Random], FuzzInput], float]] = [
    (_generated_review, 22), (_generated_agentruntime, 16), (_mutated_structure, 24), (_mutated_bytes, 14),
    (_envelope, 5), (_raw_bytes, 5), (_hostile_yaml, 7), (_hostile_json, 6), (_oversized, 0.3),
]
