#!/usr/bin/env python3
"""The cluster of the benchmark's "everything on" figure, in a process of its own.

- The tests' stand-in API server (tests/apiserver_standin.py, the real wire protocol over plain
  HTTP) holding COUNT AgentRuntimes (scripts/gen_runtimes.py, their images in the stand-in registry
  below) and COUNT pods labelled `<domain>/type: agent`, one per AgentRuntime's workload, as the
  webhook would have made them (volumes, mounts, the skills-injected record); one in a hundred carries
  an older image, so the reconciler has stale pods to report.
- A churn thread that modifies pods at a steady rate (default 50 per second: a heartbeat
  annotation), each one a MODIFIED event on every pod watch.
- A stand-in OCI registry: plain HTTP, answers `/v2/` and the manifest endpoints (GET and HEAD) of
  any repository and tag with one fixed image manifest, and blobs by digest, each after a fixed delay
  (default 20 ms, a registry in the same region), so the resolver's pace is a registry's, not a
  loop's on loopback.
- A control endpoint: `GET /stats` answers counters as JSON (pod watches opened, registry requests,
  distinct repositories asked for, events written, pod changes made).

Once everything listens it prints one JSON line on stdout: {"api": URL, "registry": "127.0.0.1:PORT",
"control": URL, "images": N, ...}; it runs until stdin closes or it gets SIGTERM (scripts/bench stops it).

    python scripts/bench_cluster.py --count 10000 --events-per-second 50 < /dev/tty
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httptools
import uvloop

SCRIPTS = Path(__file__).resolve().parent
REPO = SCRIPTS.parent
sys.path[:0] = [str(SCRIPTS), str(REPO)]

import gen_runtimes  # noqa: E402
from app.core.mutation.injection import InjectedSkill, injected_record  # noqa: E402
from app.core.names import DEFAULT_DOMAIN_PREFIX, Domain  # noqa: E402
from tests.apiserver_standin import StandInApiServer, owner_reference  # noqa: E402

STALE_EVERY = 100  # one pod in this many carries an older image than its AgentRuntime declares

# -- the registry --------------------------------------------------------------------------------

CONFIG = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}},
                    separators=(",", ":")).encode()
CONFIG_DIGEST = "sha256:" + hashlib.sha256(CONFIG).hexdigest()
MANIFEST = json.dumps({
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": CONFIG_DIGEST, "size": len(CONFIG)},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": "sha256:" + "5" * 64, "size": 1024}],
    "annotations": {"org.opencontainers.image.title": "bench-skill", "org.opencontainers.image.version": "1.0.0",
                    "org.opencontainers.image.description": "a skill image of the benchmark"},
}, separators=(",", ":")).encode()
MANIFEST_DIGEST = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()


class RegistryStats:
    def __init__(self) -> None:
        self.requests = 0
        self.manifests = 0
        self.repositories: set[str] = set()


def _answer(status: str, headers: dict[str, str], body: bytes, head: bool) -> bytes:
    lines = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (b"" if head else body)


class RegistryProtocol(asyncio.Protocol):
    """One keep-alive connection of the stand-in registry; answers in order, each after `latency`."""

    latency = 0.02
    stats = RegistryStats()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.loop = asyncio.get_running_loop()
        self.ready_at = 0.0  # answers leave in order: never before the previous one

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_message_complete(self) -> None:
        url, self.url = self.url.decode(errors="replace").split("?", 1)[0], b""
        head = self.parser.get_method() == b"HEAD"
        answer = self.route(url, head)
        self.ready_at = max(self.ready_at, self.loop.time() + self.latency)
        self.loop.call_at(self.ready_at, self._send, answer)

    def _send(self, answer: bytes) -> None:
        if not self.transport.is_closing():
            self.transport.write(answer)  # type: ignore[attr-defined]

    def route(self, url: str, head: bool) -> bytes:
        stats = self.stats
        stats.requests += 1
        if url.rstrip("/") == "/v2":
            return _answer("200 OK", {"Content-Type": "application/json",
                                      "Docker-Distribution-API-Version": "registry/2.0"}, b"{}", head)
        if url.startswith("/v2/") and "/manifests/" in url:
            repository = url[4:].rsplit("/manifests/", 1)[0]
            stats.manifests += 1
            stats.repositories.add(repository)
            return _answer("200 OK", {"Content-Type": "application/vnd.oci.image.manifest.v1+json",
                                      "Docker-Content-Digest": MANIFEST_DIGEST}, MANIFEST, head)
        if url.startswith("/v2/") and url.endswith(f"/blobs/{CONFIG_DIGEST}"):
            return _answer("200 OK", {"Content-Type": "application/octet-stream",
                                      "Docker-Content-Digest": CONFIG_DIGEST}, CONFIG, head)
        body = b'{"errors":[{"code":"NOT_FOUND","message":"not found"}]}'
        return _answer("404 Not Found", {"Content-Type": "application/json"}, body, head)


# -- the cluster's objects -----------------------------------------------------------------------

def image_of(registry: str, index: int, skill: int, count: int) -> str:
    """COUNT distinct images over the COUNT x 3 skill entries: what the resolver has to re-resolve."""
    return f"{registry}/skillimage/s{(index * 3 + skill) % count:05d}:v1"


def runtime(index: int, registry: str, count: int) -> dict[str, Any]:
    obj = gen_runtimes.agentruntime(index)
    for n, skill in enumerate(obj["spec"]["skills"]):
        skill["image"] = image_of(registry, index, n, count)
    for key in ("uid", "resourceVersion"):
        obj["metadata"].pop(key, None)  # the server assigns these
    return obj


def running_pod(index: int, runtime_obj: dict[str, Any], domain: Domain) -> dict[str, Any]:
    """The pod the webhook made for AgentRuntime `index`'s Deployment: skills injected, recorded."""
    skills = runtime_obj["spec"]["skills"]
    injected = tuple(InjectedSkill(s["name"], s["image"], s["mountPath"], s.get("pullPolicy")) for s in skills)
    if index % STALE_EVERY == 0:  # made before the AgentRuntime's last image change
        first = injected[0]
        injected = (first._replace(image=first.image.rsplit(":", 1)[0] + ":v0"), *injected[1:])
    deployment = gen_runtimes.deployment_of(index)
    replicaset = f"{deployment}-{gen_runtimes.POD_TEMPLATE_HASH}"
    agent = {
        "name": deployment, "image": f"ghcr.io/example-org/agents/{deployment}:1.4.2",
        "env": [{"name": "SKILL_FOLDERS", "value": ",".join(s.mountPath for s in injected)}],
        "volumeMounts": [{"name": f"skill-{s.name}", "mountPath": s.mountPath, "readOnly": True} for s in injected],
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{replicaset}-{index % 100000:05d}",
            "namespace": gen_runtimes.namespace_of(index),
            "labels": {"app": deployment, domain.type_label: "agent",
                       "pod-template-hash": gen_runtimes.POD_TEMPLATE_HASH},
            "annotations": {
                domain.skills_injected: json.dumps(injected_record(runtime_obj["metadata"]["name"], deployment, injected),
                                                   separators=(",", ":")),
            },
            "ownerReferences": [owner_reference("ReplicaSet", replicaset)],
        },
        "spec": {
            "containers": [agent, {"name": "envoy-proxy", "image": "docker.io/envoyproxy/envoy:v1.33.0"}],
            "volumes": [{"name": f"skill-{s.name}", "image": {"reference": s.image}} for s in injected],
        },
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
    }


class Churn(threading.Thread):
    """Modifies pods round-robin at `rate` per second (a heartbeat annotation), on a fixed schedule."""

    def __init__(self, server: StandInApiServer, keys: list[tuple[str, str]], rate: float) -> None:
        super().__init__(name="pod-churn", daemon=True)
        self.server, self.keys, self.rate = server, keys, rate
        self.changes = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        if self.rate <= 0 or not self.keys:
            return
        period, started = 1.0 / self.rate, time.monotonic()
        while not self.stopping.is_set():
            namespace, name = self.keys[self.changes % len(self.keys)]
            pod = self.server.get(namespace, name, "pods")
            if pod is not None:
                pod["metadata"].setdefault("annotations", {})["bench.example/heartbeat"] = str(self.changes)
                self.server.update(pod, "pods")
            self.changes += 1
            self.stopping.wait(max(0.0, started + self.changes * period - time.monotonic()))


# -- control ------------------------------------------------------------------------------------

def control_server(stats: dict[str, Any]) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            body = json.dumps(stats["read"]()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            return None

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


async def run(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    RegistryProtocol.latency = args.registry_latency
    registry_server = await loop.create_server(RegistryProtocol, "127.0.0.1", 0, backlog=1024)
    registry = f"127.0.0.1:{registry_server.sockets[0].getsockname()[1]}"
    domain = Domain(args.domain)

    api = StandInApiServer(version={"major": "1", "minor": "35", "gitVersion": "v1.35.0"}).start()
    started = time.monotonic()
    keys = []
    for index in range(args.count):
        obj = runtime(index, registry, args.count)
        api.create(obj)
        pod = running_pod(index, obj, domain)
        api.create(pod, "pods")
        keys.append((pod["metadata"]["namespace"], pod["metadata"]["name"]))
    loaded = time.monotonic() - started
    churn = Churn(api, keys, args.events_per_second)
    stats = RegistryProtocol.stats

    def read() -> dict[str, Any]:
        watches = api.watch_requests("pods")
        return {
            "pod_watches": len(watches),
            "agentruntime_watches": len(api.watch_requests("agentruntimes")),
            "open_watches": api.open_watches,
            "pod_changes": churn.changes,
            "events_written": len(api.writes_to("events")),
            "lease_writes": len(api.writes_to("leases")),
            "registry_requests": stats.requests,
            "registry_manifests": stats.manifests,
            "registry_repositories": len(stats.repositories),
            "time": time.monotonic(),
        }

    control = control_server({"read": read})
    churn.start()
    print(json.dumps({
        "api": api.url, "registry": registry, "control": f"http://127.0.0.1:{control.server_address[1]}",
        "count": args.count, "images": args.count, "stale_pods": len(range(0, args.count, STALE_EVERY)),
        "load_seconds": round(loaded, 2), "events_per_second": args.events_per_second,
        "registry_latency": args.registry_latency,
    }), flush=True)

    done = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, done.set)
    loop.add_signal_handler(signal.SIGINT, done.set)
    loop.add_reader(sys.stdin.fileno(), lambda: done.set() if not sys.stdin.buffer.read1(4096) else None)
    try:
        await asyncio.wait_for(done.wait(), timeout=args.max_seconds)
    except asyncio.TimeoutError:
        pass
    churn.stopping.set()
    control.shutdown()
    registry_server.close()
    api.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=gen_runtimes.DEFAULT_COUNT, help="AgentRuntimes and pods")
    parser.add_argument("--events-per-second", type=float, default=50.0, help="pod modifications per second")
    parser.add_argument("--registry-latency", type=float, default=0.02, help="seconds before each registry answer")
    parser.add_argument("--domain", default=DEFAULT_DOMAIN_PREFIX)
    parser.add_argument("--max-seconds", type=float, default=3600.0, help="stop by itself after this long")
    args = parser.parse_args()
    if args.count < 1:
        parser.error("--count must be at least 1")
    uvloop.run(run(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
