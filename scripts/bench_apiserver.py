"""A real kube-apiserver holding COUNT AgentRuntimes, for the "start to ready from a real API server"
figure of scripts/bench.

It uses the test suite's control-plane harness (tests/kube_cluster.py: etcd and kube-apiserver from
$KUBEBUILDER_ASSETS on loopback ports) and creates the AgentRuntimes of scripts/gen_runtimes.py with
a few concurrent clients, so that `serve --source kube` then starts against a paginated LIST of all
of them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import gen_runtimes

REPO = Path(__file__).resolve().parent.parent
CREATE_CLIENTS = 8  # the API server does the work; a few connections keep it busy


def available() -> str | None:
    """None when the bench can start a control plane, else why not."""
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if not assets:
        return "KUBEBUILDER_ASSETS is not set"
    missing = [b for b in ("etcd", "kube-apiserver") if not (Path(assets) / b).is_file()]
    return f"KUBEBUILDER_ASSETS lacks {', '.join(missing)}" if missing else None


@contextlib.contextmanager
def populated_cluster(count: int) -> Iterator[Path]:
    """A control plane with the AgentRuntime CRD and `count` AgentRuntimes; yields the admin kubeconfig."""
    sys.path.insert(0, str(REPO))
    from tests.kube_cluster import KubeCluster, assets_dir  # the harness the tests use

    directory = Path(tempfile.mkdtemp(prefix="skill-webhook-bench-kube-"))
    cluster = KubeCluster(assets_dir(), directory)
    try:
        cluster.start()
        cluster.kubectl("apply", "-f", str(REPO / "manifests" / "crd.yaml"))
        cluster.kubectl("wait", "--for=condition=Established", "crd/agentruntimes.agent.kagenti.dev",
                        "--timeout=60s")
        runtimes = [gen_runtimes.agentruntime(i) for i in range(count)]
        namespaces = sorted({r["metadata"]["namespace"] for r in runtimes})
        group, version = gen_runtimes.API_VERSION.split("/")

        def create_many(items: list[tuple[str, dict]]) -> None:
            with cluster.api.http(timeout=60) as client:
                for path, body in items:
                    answer = client.post(path, json=body)
                    if answer.status_code not in (201, 409):
                        raise RuntimeError(f"POST {path}: {answer.status_code} {answer.text[:200]}")

        def in_slices(items: list[tuple[str, dict]]) -> list[list[tuple[str, dict]]]:
            return [items[i::CREATE_CLIENTS] for i in range(CREATE_CLIENTS)]

        with ThreadPoolExecutor(CREATE_CLIENTS) as pool:
            list(pool.map(create_many, in_slices(
                [("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}})
                 for n in namespaces])))
            items = []
            for runtime in runtimes:
                meta = {k: v for k, v in runtime["metadata"].items()
                        if k not in ("uid", "resourceVersion", "creationTimestamp")}
                items.append((f"/apis/{group}/{version}/namespaces/{meta['namespace']}/agentruntimes",
                              {**runtime, "metadata": meta}))
            list(pool.map(create_many, in_slices(items)))
        yield cluster.kubeconfig
    finally:
        cluster.stop()
        shutil.rmtree(directory, ignore_errors=True)
