#!/usr/bin/env python3
"""The same skill mutation as `skill-webhook`, written the kopf way, for the comparison in docs/performance.md.

kopf's idiom for an admission webhook: a `@kopf.on.mutate('pods', operations=['CREATE'])` handler
that changes the object through kopf's `patch` (merge-patch keys for the annotations, a `patch.fns`
transformation for the list edits, which kopf turns into a JSON patch by diffing), served by kopf's
own `kopf.WebhookServer` (aiohttp) over TLS with the given certificate files. The AgentRuntimes come
from the same generated file as the real service's, held in an in-memory dict keyed by target
workload (kopf's own `kopf.index` would need a live watch; a dict is the cheaper choice, so the
comparison favours kopf).

kopf serves webhooks only as part of a running operator, and an operator needs an API server: at
start it reads /version and the discovery documents (/api, /api/v1, /apis) to resolve 'pods'. So
this script starts a tiny discovery-only stand-in on 127.0.0.1 in a thread (tests/apiserver_standin.py
serves AgentRuntime list/watch but not discovery, and kopf stops without /api) and runs the
operator with `kopf.run(standalone=True, clusterwide=True)`, with resource scanning, event posting
and webhook-configuration management off, so that after start-up nothing talks to the stand-in and
every CPU cycle goes to admission requests.

    python scripts/kopf_webhook.py --port 9445 --cert tls.crt --key tls.key --runtimes runtimes.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import kopf

SIDECARS = frozenset({
    "envoy-proxy", "authbridge-proxy", "spiffe-helper", "kagenti-client-registration", "istio-proxy",
    "linkerd-proxy", "vault-agent", "cloud-sql-proxy",
})
AGENT_API_GROUP = "agent.kagenti.dev"

# (namespace, kind, name) of a workload -> the AgentRuntime object that targets it (the oldest wins).
RUNTIMES: dict[tuple[str, str, str], dict[str, Any]] = {}
OPTIONS: dict[str, Any] = {}


# -- the discovery stand-in ---------------------------------------------------------------------------

def _resource(name: str, kind: str, namespaced: bool) -> dict[str, Any]:
    return {"name": name, "singularName": kind.lower(), "kind": kind, "namespaced": namespaced,
            "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}


DISCOVERY: dict[str, Any] = {
    "/version": {"major": "1", "minor": "35", "gitVersion": "v1.35.0"},
    "/api": {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []},
    "/api/v1": {"kind": "APIResourceList", "groupVersion": "v1", "resources": [
        _resource("pods", "Pod", True), _resource("namespaces", "Namespace", False),
        _resource("events", "Event", True),
    ]},
    "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": []},
}


class _DiscoveryHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = DISCOVERY.get(self.path.split("?", 1)[0].rstrip("/") or "/")
        code = 200 if body is not None else 404
        data = json.dumps(body if body is not None else {"kind": "Status", "code": 404}).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        return None


def start_discovery_standin() -> str:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _DiscoveryHandler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{httpd.server_address[1]}"


# -- the operator -----------------------------------------------------------------------------------

@kopf.on.login()
def login(**_: Any) -> kopf.ConnectionInfo:
    return kopf.ConnectionInfo(server=OPTIONS["api_url"], insecure=True)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.admission.server = kopf.WebhookServer(
        addr="127.0.0.1", port=OPTIONS["port"], certfile=OPTIONS["cert"], pkeyfile=OPTIONS["key"],
    )
    settings.admission.managed = None  # nobody to register a webhook configuration with
    settings.scanning.disabled = True
    settings.posting.enabled = False


def load_runtimes(path: Path) -> None:
    document = json.loads(path.read_text(encoding="utf-8"))
    items = document.get("items", []) if document.get("kind") == "List" else [document]
    for runtime in sorted(items, key=lambda r: (r["metadata"].get("creationTimestamp", ""), r["metadata"]["name"])):
        target = runtime.get("spec", {}).get("targetRef") or {}
        key = (runtime["metadata"].get("namespace", "default"), target.get("kind", ""), target.get("name", ""))
        RUNTIMES.setdefault(key, runtime)


def owner_workloads(meta: kopf.Meta, labels: kopf.Labels) -> list[tuple[str, str]]:
    owners = meta.get("ownerReferences") or []
    owner = next((o for o in owners if o.get("controller")), owners[0] if owners else None)
    if owner is None:
        return [("Pod", meta.get("name", ""))]
    kind, name = owner.get("kind", ""), owner.get("name", "")
    pod_hash = labels.get("pod-template-hash")
    if kind == "ReplicaSet" and pod_hash and name.endswith(f"-{pod_hash}"):
        return [("Deployment", name[: -len(pod_hash) - 1]), ("ReplicaSet", name)]
    return [(kind, name)]


def agent_container(containers: list[dict[str, Any]], annotations: kopf.Annotations) -> int:
    names = [c.get("name") for c in containers]
    for wanted in (annotations.get("kagenti.io/agent-container"),
                   annotations.get("kubectl.kubernetes.io/default-container"), "agent"):
        if wanted in names:
            return names.index(wanted)
    if annotations.get("kagenti.io/agent-container"):
        raise kopf.AdmissionError("kagenti.io/agent-container names no container of the pod", code=409)
    return next((i for i, name in enumerate(names) if name not in SIDECARS), 0)


@kopf.on.mutate("pods", operations=["CREATE"], id="mutate")
async def inject_skills(
    body: kopf.Body, meta: kopf.Meta, spec: kopf.Spec, labels: kopf.Labels, annotations: kopf.Annotations,
    namespace: str | None, patch: kopf.Patch, warnings: list[str], **_: Any,
) -> None:
    if labels.get("kagenti.io/skills-inject") == "disabled":
        return
    runtime = next((r for w in owner_workloads(meta, labels) if (r := RUNTIMES.get((namespace or "", *w)))), None)
    skills = (runtime or {}).get("spec", {}).get("skills") or []
    if runtime is None or not skills:
        return
    runtime_name = runtime["metadata"]["name"]
    position = agent_container(list(spec.get("containers", [])), annotations)

    def add_volumes_and_mounts(pod: dict[str, Any]) -> None:
        pod_spec = pod.setdefault("spec", {})
        volumes = pod_spec.setdefault("volumes", [])
        container = pod_spec["containers"][position]
        mounts = container.setdefault("volumeMounts", [])
        for skill in skills:
            volume_name = f"skill-{skill['name']}"
            image = {"reference": skill["image"]}
            if skill.get("pullPolicy"):
                image["pullPolicy"] = skill["pullPolicy"]
            existing = next((v for v in volumes if v.get("name") == volume_name), None)
            if existing is None:
                volumes.append({"name": volume_name, "image": image})
            elif existing.get("image", {}).get("reference") != skill["image"]:
                raise kopf.AdmissionError(
                    f'AgentRuntime "{runtime_name}": skill "{skill["name"]}": volume {volume_name} exists', code=409)
            mounted = next((m for m in mounts if m.get("mountPath") == skill["mountPath"]), None)
            if mounted is None:
                mounts.append({"name": volume_name, "mountPath": skill["mountPath"], "readOnly": True})
            elif mounted.get("name") != volume_name:
                raise kopf.AdmissionError(
                    f'AgentRuntime "{runtime_name}": skill "{skill["name"]}": {skill["mountPath"]} is mounted',
                    code=409)
        env = container.setdefault("env", [])
        paths = [s["mountPath"] for s in skills]
        current = next((e for e in env if e.get("name") == "SKILL_FOLDERS"), None)
        if current is None:
            env.append({"name": "SKILL_FOLDERS", "value": ",".join(paths)})
        elif "valueFrom" in current:
            warnings.append("SKILL_FOLDERS is set by valueFrom; left as it is")
        else:
            have = [p for p in current.get("value", "").split(",") if p]
            current["value"] = ",".join(have + [p for p in paths if p not in have])

    patch.fns.append(add_volumes_and_mounts)
    names = json.loads(annotations.get("kagenti.io/skills", "[]"))
    patch.metadata.annotations["kagenti.io/skills"] = json.dumps(
        names + [s["name"] for s in skills if s["name"] not in names])
    injected = [{k: s[k] for k in ("name", "image", "mountPath", "pullPolicy") if s.get(k)} for s in skills]
    canonical = json.dumps(injected, sort_keys=True, separators=(",", ":"))
    patch.metadata.annotations["kagenti.io/skills-injected"] = json.dumps({
        "agentRuntime": runtime_name, "container": spec["containers"][position].get("name"),
        "skills": {s["name"]: s["image"] for s in skills},
        "fingerprint": "sha256:" + hashlib.sha256(canonical.encode()).hexdigest(),
    })


def main() -> int:
    parser = argparse.ArgumentParser(description="kopf-based skill webhook (benchmark comparison)")
    parser.add_argument("--port", type=int, default=9445)
    parser.add_argument("--cert", required=True, help="serving certificate (PEM)")
    parser.add_argument("--key", required=True, help="serving key (PEM)")
    parser.add_argument("--runtimes", type=Path, required=True, help="AgentRuntime JSON (a List or one object)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args()
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    load_runtimes(args.runtimes)
    OPTIONS.update(port=args.port, cert=str(args.cert), key=str(args.key), api_url=start_discovery_standin())
    kopf.run(standalone=True, clusterwide=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
