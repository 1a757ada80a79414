#!/usr/bin/env python3
"""Benchmark data: 10,000 AgentRuntimes across many namespaces, and the realistic Pod.

Writes into --out:
- runtimes-10000.json  a `kind: List` of COUNT AgentRuntimes (20 per namespace, three skills each);
- runtimes-10000.yaml  the same AgentRuntimes as YAML documents separated by `---` (what users write);
- runtimes-10.json     ten of the same, including the one the benchmark Pod matches, for the
                       "lookup cost: 10,000 cached vs 10" figure (same match, same patch);
- mutate-review.json   an AdmissionReview (pods CREATE) of a Pod made by a Deployment's ReplicaSet:
                       three containers (the agent and two known sidecars), an init container,
                       about 8 KB of JSON, whose AgentRuntime declares three skills;
- validate-review.json an AdmissionReview (agentruntimes CREATE) of an AgentRuntime with 20 skills
                       that passes validation (its target is one no other AgentRuntime claims).

Everything is deterministic, so two runs (and the three servers of one run) see the same bytes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

API_VERSION = "agent.kagenti.dev/v1alpha1"
RUNTIMES_PER_NAMESPACE = 20
DEFAULT_COUNT = 10_000
# The benchmark Pod belongs to this AgentRuntime: in the middle of the file, not the first one read.
TARGET_INDEX = 7_777
POD_TEMPLATE_HASH = "7d9f8b6c5d"


def target_index(count: int) -> int:
    """The AgentRuntime the benchmark Pod belongs to: TARGET_INDEX, or further up a smaller set."""
    return TARGET_INDEX if count > TARGET_INDEX else count * 7 // 10


def namespace_of(index: int) -> str:
    return f"team-{index // RUNTIMES_PER_NAMESPACE:04d}"


def deployment_of(index: int) -> str:
    return f"agent-{index:05d}"


def skills_for(index: int, count: int = 3) -> list[dict[str, Any]]:
    """`count` skills, images pinned the way a careful team does (a tag and, for some, a digest)."""
    names = ["resume-reviewer", "blog-writer", "web-search", "code-review", "sql-helper", "summarizer"]
    skills = []
    for n in range(count):
        name = names[n] if n < len(names) else f"skill-{n:02d}"
        image = f"ghcr.io/example-org/skillimage/{name}:v1.{index % 7}.{n}"
        if n % 3 == 2:
            image += "@sha256:" + f"{index:08x}{n:04x}".ljust(64, "a")
        skill: dict[str, Any] = {"name": name, "image": image, "mountPath": f"/agent/skills/{name}"}
        if n % 2:
            skill["pullPolicy"] = "IfNotPresent"
        skills.append(skill)
    return skills


def agentruntime(index: int) -> dict[str, Any]:
    """AgentRuntime number `index`: targets Deployment agent-NNNNN in its team namespace."""
    day, second = divmod(index, 86_400)
    return {
        "apiVersion": API_VERSION,
        "kind": "AgentRuntime",
        "metadata": {
            "name": f"{deployment_of(index)}-runtime",
            "namespace": namespace_of(index),
            "uid": f"00000000-0000-4000-8000-{index:012d}",
            "resourceVersion": str(100_000 + index),
            "creationTimestamp": f"2026-01-{day + 1:02d}T{second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}Z",
            "labels": {"app.kubernetes.io/part-of": "agents", "team": namespace_of(index)},
        },
        "spec": {
            "type": "agent" if index % 5 else "tool",
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment_of(index)},
            "skills": skills_for(index),
            # Fields of the wider ecosystem: preserved and ignored.
            "identity": {"spiffe": "enabled"},
            "trace": {"enabled": True, "sampling": 0.1},
        },
    }


def runtime_list(indices: list[int]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "List", "items": [agentruntime(i) for i in indices]}


def _env(prefix: str, count: int) -> list[dict[str, Any]]:
    return [{"name": f"{prefix}_{n:02d}", "value": f"value-{n:02d}-{'x' * 12}"} for n in range(count)]


def _resources(cpu: str, memory: str) -> dict[str, Any]:
    return {"requests": {"cpu": cpu, "memory": memory}, "limits": {"cpu": cpu, "memory": memory}}


def _probe(port: int, path: str) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": port, "scheme": "HTTP"}, "initialDelaySeconds": 5,
            "periodSeconds": 10, "timeoutSeconds": 2, "successThreshold": 1, "failureThreshold": 3}


def _security() -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}


def _container(name: str, image: str, port: int, env_count: int) -> dict[str, Any]:
    return {
        "name": name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        "env": _env(name.upper().replace("-", "_"), env_count),
        "resources": _resources("250m", "256Mi"),
        "readinessProbe": _probe(port, "/readyz"),
        "livenessProbe": _probe(port, "/healthz"),
        "securityContext": _security(),
        "volumeMounts": [
            {"name": "kube-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
    }


def realistic_pod(index: int = TARGET_INDEX) -> dict[str, Any]:
    """The Pod a Deployment's ReplicaSet creates for AgentRuntime `index`'s workload."""
    deployment = deployment_of(index)
    replicaset = f"{deployment}-{POD_TEMPLATE_HASH}"
    agent = _container(deployment, f"ghcr.io/example-org/agents/{deployment}:1.4.2", 8000, 16)
    agent["args"] = ["--config", "/etc/agent/config.yaml", "--log-format", "json"]
    envoy = _container("envoy-proxy", "docker.io/envoyproxy/envoy:v1.33.0", 15001, 6)
    spiffe = _container("spiffe-helper", "ghcr.io/spiffe/spiffe-helper:0.9.1", 9090, 4)
    init = _container("proxy-init", "ghcr.io/example-org/proxy-init:1.0.0", 15000, 3)
    for key in ("ports", "readinessProbe", "livenessProbe"):  # an init container has none of these
        del init[key]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": f"{replicaset}-",
            "namespace": namespace_of(index),
            "labels": {
                "app": deployment,
                "app.kubernetes.io/name": deployment,
                "app.kubernetes.io/part-of": "agents",
                "kagenti.io/type": "agent",
                "pod-template-hash": POD_TEMPLATE_HASH,
            },
            "annotations": {
                "kubectl.kubernetes.io/restartedAt": "2026-01-15T10:00:00Z",
                "prometheus.io/scrape": "true",
                "prometheus.io/port": "8000",
            },
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": replicaset,
                "uid": "0f6a3c2e-8a51-4a43-9d0e-3f1c2b6d7e8f", "controller": True, "blockOwnerDeletion": True,
            }],
        },
        "spec": {
            "serviceAccountName": deployment,
            "initContainers": [init],
            "containers": [envoy, agent, spiffe],
            "volumes": [
                {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
                {"name": "kube-api-access", "projected": {"defaultMode": 420, "sources": [
                    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                    {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                    {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {
                        "apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
                ]}},
            ],
            "securityContext": {"runAsNonRoot": True, "fsGroup": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
            "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
                "weight": 100, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                                                   "labelSelector": {"matchLabels": {"app": deployment}}}}]}},
            "tolerations": [
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute",
                 "tolerationSeconds": 300},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute",
                 "tolerationSeconds": 300},
            ],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "enableServiceLinks": False,
            "priority": 0,
            "schedulerName": "default-scheduler",
        },
    }


def admission_review(obj: dict[str, Any], *, group: str, version: str, kind: str, resource: str,
                     namespace: str, uid: str) -> dict[str, Any]:
    """What the API server sends for a CREATE of `obj`."""
    gvk = {"group": group, "version": version, "kind": kind}
    gvr = {"group": group, "version": version, "resource": resource}
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid, "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr,
            "namespace": namespace, "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller",
                         "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system",
                                    "system:authenticated"]},
            "object": obj, "oldObject": None, "dryRun": False,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }


def mutate_review(index: int = TARGET_INDEX) -> dict[str, Any]:
    return admission_review(realistic_pod(index), group="", version="v1", kind="Pod", resource="pods",
                            namespace=namespace_of(index), uid="705ab4f5-6393-11e8-b7cc-42010a800002")


def validate_review(skill_count: int = 20, index: int = TARGET_INDEX) -> dict[str, Any]:
    """An AgentRuntime with the maximum number of skills, valid, targeting an unclaimed workload."""
    runtime = agentruntime(index)
    runtime["metadata"] = {"name": "wide-agent-runtime", "namespace": namespace_of(index)}
    runtime["spec"]["targetRef"]["name"] = "wide-agent"
    runtime["spec"]["skills"] = skills_for(index, skill_count)
    return admission_review(runtime, group="agent.kagenti.dev", version="v1alpha1", kind="AgentRuntime",
                            resource="agentruntimes", namespace=namespace_of(index),
                            uid="8b1c0e52-2f7d-4f6e-9a43-5d2f0c1b7a90")


def small_set(count: int = 10, target: int = TARGET_INDEX) -> list[int]:
    """The indices of the small cache: the benchmark's AgentRuntime plus the first few others."""
    return [target, *(i for i in range(count) if i != target)][:count]


def write_yaml(path: Path, documents: list[dict[str, Any]]) -> None:
    import yaml

    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    with path.open("w", encoding="utf-8") as out:
        yaml.dump_all(documents, out, Dumper=dumper, sort_keys=False, default_flow_style=False)


def write_all(out: Path, count: int = DEFAULT_COUNT) -> dict[str, Path]:
    """Every file; the keys are the file names without suffix (the YAML file's with "-yaml")."""
    if count < 10:
        raise ValueError("--count must be at least 10")
    target = target_index(count)
    out.mkdir(parents=True, exist_ok=True)
    big = runtime_list(list(range(count)))
    documents = {
        f"runtimes-{count}.json": big,
        "runtimes-10.json": runtime_list(small_set(10, target)),
        "mutate-review.json": mutate_review(target),
        "validate-review.json": validate_review(20, target),
    }
    paths = {}
    for name, document in documents.items():
        path = out / name
        path.write_text(json.dumps(document, separators=(",", ":")), encoding="utf-8")
        paths[name.removesuffix(".json")] = path
    paths[f"runtimes-{count}-yaml"] = out / f"runtimes-{count}.yaml"
    write_yaml(paths[f"runtimes-{count}-yaml"], big["items"])
    return paths


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="directory to write into")
    parser.add_argument("--count", type=int, default=DEFAULT_COUNT, help="AgentRuntimes in the big file")
    args = parser.parse_args()
    for name, path in write_all(args.out, args.count).items():
        print(f"{name}: {path} ({path.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
