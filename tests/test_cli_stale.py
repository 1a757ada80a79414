"""`skill-webhook stale` against the stand-in API server: what it lists before a rollout, nothing after,
the JSON form, the namespace filter, the domain, and a clear failure when the cluster cannot be read."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from app.core.names import Domain
from app.service.cli.main import main
from tests.apiserver_standin import pod
from tests.informer_harness import KUBECONFIG
from tests.reconciler_harness import EVICT, NS, V1, V2, Harness, standin_cluster


def stale(capsys, kubeconfig: Path, *args: str) -> tuple[int, str, str]:
    code = main(["stale", "--kubeconfig", str(kubeconfig), *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def cluster(tmp_path: Path):
    with standin_cluster() as harness:
        harness.kubeconfig = tmp_path / "kubeconfig"
        harness.kubeconfig.write_text(KUBECONFIG.format(url=harness.server.url))
        yield harness


def test_lists_stale_pods_before_a_rollout_and_none_after(cluster: Harness, capsys) -> None:
    cluster.runtime("writer", "web", [V1], annotations=EVICT)
    cluster.pods_of("web-7d9f", 2, "7d9f")
    code, out, _ = stale(capsys, cluster.kubeconfig)
    assert (code, out.strip()) == (0, "no stale pods (2 agent pod(s) checked)")

    cluster.runtime("writer", "web", [V2, {**V1, "name": "extra", "mountPath": "/skills/extra"}], annotations=EVICT)
    code, out, _ = stale(capsys, cluster.kubeconfig, "-n", NS)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["NAMESPACE", "POD", "AGENTRUNTIME", "WHAT", "DIFFERS"]
    assert lines[1].split() == ["team-a", "web-7d9f-p0", "writer", "+", "extra"]
    assert lines[2].split() == ["blog-writer:", "ghcr.io/a/blog-writer:v1", "->", "ghcr.io/a/blog-writer:v2"]
    assert lines[3].split()[:3] == ["team-a", "web-7d9f-p1", "writer"]
    assert "kubectl rollout restart deployment/web -n team-a" in out
    assert "2 stale pod(s) of 2 checked" in out

    code, out, _ = stale(capsys, cluster.kubeconfig, "-o", "json")
    report = json.loads(out)
    assert report["checked"] == 2
    assert report["stale"][0] == {
        "namespace": NS, "pod": "web-7d9f-p0", "agentRuntime": "writer", "reason": "changed",
        "differences": ["+ extra", "blog-writer: ghcr.io/a/blog-writer:v1 -> ghcr.io/a/blog-writer:v2"],
        "roll": "kubectl rollout restart deployment/web -n team-a",
    }

    reconciler = cluster.reconciler("evict")
    deadline = time.monotonic() + 20
    while cluster.run(reconciler) or len(cluster.server.evictions) < 2:
        assert time.monotonic() < deadline, f"rollout did not finish: {cluster.server.evictions}"
        time.sleep(0.05)
    code, out, _ = stale(capsys, cluster.kubeconfig)
    assert (code, out.strip()) == (0, "no stale pods (2 agent pod(s) checked)")
    # The command only reads.
    assert [w.path for w in cluster.server.writes if "eviction" not in w.path and "/events" not in w.path] == []


def test_namespace_filter_and_deleted_agentruntimes(cluster: Harness, capsys) -> None:
    cluster.runtime("writer", "web", [V1])
    cluster.pods_of("web-7d9f", 1, "7d9f")
    cluster.server.create_pod(pod("elsewhere", "team-b", labels={"kagenti.io/type": "agent",
                                                                  "pod-template-hash": "x"}))
    cluster.server.delete(NS, "writer")
    code, out, _ = stale(capsys, cluster.kubeconfig, "-n", "team-b")
    assert (code, out.strip()) == (0, "no stale pods (1 agent pod(s) checked)")
    report = json.loads(stale(capsys, cluster.kubeconfig, "-o", "json")[1])
    assert report["stale"] == [{
        "namespace": NS, "pod": "web-7d9f-p0", "agentRuntime": "writer", "reason": "runtime-gone",
        "differences": ['AgentRuntime "writer" deleted', "- blog-writer"], "roll": None,
    }]


def test_reads_labels_and_annotations_under_the_given_domain(cluster: Harness, capsys) -> None:
    rossoctl = Domain("rossoctl.io")
    cluster.runtime("writer", "web", [V1])
    cluster.server.on_pod_create = None
    cluster.server.create_pod(pod("web-7d9f-r", NS, owner=("ReplicaSet", "web-7d9f"),
                                  labels={"pod-template-hash": "7d9f", rossoctl.type_label: "agent"}))
    # Under the default domain the pod is no agent pod at all.
    assert stale(capsys, cluster.kubeconfig)[1].strip() == "no stale pods (0 agent pod(s) checked)"
    report = json.loads(stale(capsys, cluster.kubeconfig, "--domain", "rossoctl.io", "-o", "json")[1])
    assert [(r["pod"], r["reason"]) for r in report["stale"]] == [("web-7d9f-r", "no-record")]


def test_an_unreachable_cluster_is_a_clear_error(tmp_path: Path, capsys) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG.format(url="http://127.0.0.1:9"))
    code, out, err = stale(capsys, kubeconfig)
    assert code == 1 and out == ""
    assert err.startswith("skill-webhook stale: cannot read the cluster: ")


def test_bad_arguments_are_refused(tmp_path: Path, capsys) -> None:
    code, _, err = stale(capsys, tmp_path / "none", "--agentruntime-api", "nogroup")
    assert code == 2 and "--agentruntime-api" in err
    code, _, err = stale(capsys, tmp_path / "none", "--domain", "Not A Domain")
    assert code == 2 and "DNS subdomain" in err
