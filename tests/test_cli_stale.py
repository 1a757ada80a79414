"""`skill-webhook stale` against the stand-in API server: what it lists before a rollout, nothing after,
the JSON form, the namespace filter, the domain, a moved tag seen through a real registry (as the
server's reconciler sees it), and one clear line when the cluster cannot be read."""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

import pytest

from app.core.mutation.review import MutationOptions, mutate_pod
from app.core.mutation.image_policy import ImagePolicy
from app.core.names import Domain
from app.core.registry_facts import ImageFacts
from app.core.staleness.pods import StalenessOptions, pod_staleness
from app.service.cli.main import main
from app.sources.registry.client import RegistryClient
from app.sources.registry.lookup import resolve_many
from tests.apiserver_standin import pod
from tests.builders import apply_patch
from tests.informer_harness import KUBECONFIG
from tests.reconciler_harness import EVICT, NS, V1, V2, Harness, standin_cluster
from tests.polling import wait_until
from tests.registry_harness import Layout, skillimage


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


@pytest.mark.slow
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
    # Each pass evicts what it may; the next waits for the replacement to turn Ready.
    wait_until(lambda: not cluster.run(reconciler) and len(cluster.server.evictions) >= 2, 20, "the rollout to finish",
               interval=0.05, explain=lambda: f"evictions {cluster.server.evictions}")
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


def test_an_unreachable_cluster_is_one_clear_line(tmp_path: Path, capsys) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG.format(url="http://127.0.0.1:9"))
    code, out, err = stale(capsys, kubeconfig)
    assert (code, out) == (1, "")
    assert err == "skill-webhook stale: cannot read the cluster at http://127.0.0.1:9: connection refused\n"


def test_a_missing_kubeconfig_is_named(tmp_path: Path, capsys, monkeypatch) -> None:
    code, out, err = stale(capsys, Path("/nonexistent"))
    assert (code, out, err) == (1, "", "skill-webhook stale: --kubeconfig /nonexistent: no such file\n")
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    assert main(["stale"]) == 1
    assert capsys.readouterr().err == f"skill-webhook stale: KUBECONFIG {tmp_path / 'absent'}: no such file\n"
    monkeypatch.delenv("KUBECONFIG")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert main(["stale"]) == 1
    assert capsys.readouterr().err == (f"skill-webhook stale: no kubeconfig: {tmp_path}/.kube/config: no such file "
                                       "(pass --kubeconfig or set KUBECONFIG)\n")


def test_bad_arguments_are_refused(tmp_path: Path, capsys) -> None:
    code, _, err = stale(capsys, tmp_path / "none", "--agentruntime-api", "nogroup")
    assert code == 2 and "--agentruntime-api" in err
    code, _, err = stale(capsys, tmp_path / "none", "--domain", "Not A Domain")
    assert code == 2 and "DNS subdomain" in err
    code, _, err = stale(capsys, tmp_path / "none", "--registry-allow", "https://ghcr.io")
    assert code == 2 and err.startswith("skill-webhook stale: --registry-allow: ")
    code, _, err = stale(capsys, tmp_path / "none", "--pin-digests", "on", "--registry-auth", "/nonexistent")
    assert (code, err) == (1, "skill-webhook stale: --registry-auth /nonexistent: no such file\n")


# -- a moved tag (--pin-digests on) ---------------------------------------------------------------------


def look_up(reference: str, flags: dict[str, Any]) -> ImageFacts:
    async def one() -> ImageFacts:
        client = RegistryClient(**flags)
        try:
            return (await resolve_many(client, [reference]))[0]
        finally:
            await client.aclose()

    return asyncio.run(one())


@pytest.fixture
def moving_tag(cluster: Harness, docker_registries, tmp_path: Path):
    """Two pods of a Deployment created pinned to the digest of `stable` (as `serve --pin-digests on`
    injects them); then `stable` is moved to new content."""
    registry = docker_registries.secure
    layout = Layout(tmp_path / "oci")
    old = layout.tag(skillimage(layout, "blog-writer", "1.0.0"), "one")
    new = layout.tag(skillimage(layout, "blog-writer", "2.0.0"), "two")
    repository = f"stale-{tmp_path.name}/blog-writer".lower()
    registry.push(layout, "one", repository, dest_tag="stable")
    reference = f"{registry.host}/{repository}:stable"
    auth = registry.docker_config(tmp_path / "config.json")
    client = {"auth_file": auth, "ca_file": registry.ca_file}
    facts = look_up(reference, client)
    assert facts.digest == old

    def pinned(obj: dict[str, Any]) -> dict[str, Any]:
        options = MutationOptions(image_policy=ImagePolicy({reference: facts}.get, "on"))
        decision = mutate_pod(copy.deepcopy(obj), NS, cluster.index, options)
        assert decision.allowed, decision.message
        return apply_patch(obj, decision)

    cluster.server.on_pod_create = pinned
    cluster.runtime("writer", "web", [{"name": "blog-writer", "image": reference, "mountPath": "/skills/blog"}])
    cluster.pods_of("web-7d9f", 2, "7d9f")
    flags = ["--registry-auth", str(auth), "--registry-ca", str(registry.ca_file)]
    return reference, old, new, flags, client, lambda: registry.push(layout, "two", repository, dest_tag="stable")


def test_a_moved_tag_is_seen_with_pin_digests_as_the_reconciler_sees_it(cluster: Harness, moving_tag, capsys) -> None:
    reference, old, new, flags, client, move = moving_tag
    code, out, _ = stale(capsys, cluster.kubeconfig, "--pin-digests", "on", *flags)
    assert (code, out.strip()) == (0, "no stale pods (2 agent pod(s) checked)")

    move()
    # Without pinning nothing says the tag moved: the digest each pod recorded is taken as current.
    assert stale(capsys, cluster.kubeconfig, *flags)[1].strip() == "no stale pods (2 agent pod(s) checked)"
    code, out, err = stale(capsys, cluster.kubeconfig, "--pin-digests", "on", *flags, "-o", "json")
    assert (code, err) == (0, "")
    report = json.loads(out)
    assert [(r["pod"], r["reason"], r["differences"]) for r in report["stale"]] == [
        (f"web-7d9f-p{i}", "changed", [f"blog-writer: {reference}@{old} -> {reference}@{new}"]) for i in range(2)
    ]
    # The same pods the server's reconciler judges stale: its options, with its resolver's facts now.
    server_view = StalenessOptions.from_mutation(
        MutationOptions(image_policy=ImagePolicy({reference: look_up(reference, client)}.get, "on")))
    judged = {p["metadata"]["name"] for p in cluster.listed_pods() if pod_staleness(p, cluster.index, server_view).stale}
    assert judged == {r["pod"] for r in report["stale"]}


def test_pin_digests_from_the_environment_and_a_registry_that_cannot_be_asked(
    cluster: Harness, moving_tag, capsys, monkeypatch
) -> None:
    reference, old, new, flags, _, move = moving_tag
    move()
    monkeypatch.setenv("SKILL_WEBHOOK_PIN_DIGESTS", "on")
    assert json.loads(stale(capsys, cluster.kubeconfig, *flags, "-o", "json")[1])["stale"] != []
    # Without the registry's CA the lookup fails: the pods are judged by the digest they recorded, and
    # the reason is said once, not taken for a moved tag.
    code, out, err = stale(capsys, cluster.kubeconfig, "--registry-auth", flags[1])
    assert (code, out.strip()) == (0, "no stale pods (2 agent pod(s) checked)")
    (line,) = err.splitlines()
    assert line.startswith(f"{reference}: not looked up (TLS: ") and line.endswith(
        "its pods are judged by the digest they recorded")
