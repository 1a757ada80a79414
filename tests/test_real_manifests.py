"""Every install manifest against a real API server: each kustomization (committed under manifests/ and
written by `skill-webhook manifests -o` for every reconcile mode, rossoctl and another namespace) is
rendered by the real kustomize (`/usr/bin/kubectl kustomize`, kubectl 1.32) and applied with a server-side
dry run, which runs the API server's own validation and admission (Pod Security `restricted` included)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from tests.kube_cluster import (
    ROOT,
    KubeCluster,
    kube,
    process_env,
    skill_webhook,
)

pytestmark = kube

MANIFESTS = ROOT / "manifests"
KUSTOMIZE = "/usr/bin/kubectl"  # kubectl 1.32 of the machine image, with kustomize v5.5
ROSSOCTL = ("--domain", "rossoctl.io", "--agentruntime-api", "agent.rossoctl.dev/v1alpha1")
# `skill-webhook manifests -o DIR` sets: name -> flags.
GENERATED = {
    "off": ("--reconcile", "off"),
    "report": ("--reconcile", "report"),
    "evict": ("--reconcile", "evict"),
    "rossoctl-evict": (*ROSSOCTL, "--reconcile", "evict"),
    "ops-report": ("--namespace", "ops", "--reconcile", "report"),
}
EVICT_KINDS = {("ClusterRole", "skill-webhook-reconciler"), ("Role", "skill-webhook-leader-election"),
               ("ClusterRole", "skill-webhook-evictor"), ("ClusterRoleBinding", "skill-webhook-evictor")}


def committed_kustomizations() -> list[Path]:
    return sorted(p.parent for p in MANIFESTS.rglob("kustomization.yaml"))


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("generated")
    out = {}
    for name, flags in GENERATED.items():
        skill_webhook("manifests", *flags, "-o", str(root / name))
        out[name] = root / name
    return out


def kustomize(directory: Path) -> str:
    if not Path(KUSTOMIZE).exists():
        pytest.skip(f"{KUSTOMIZE} (kubectl with kustomize) is not installed")
    result = subprocess.run([KUSTOMIZE, "kustomize", str(directory)], capture_output=True, text=True,
                            env=process_env(), timeout=120)
    assert result.returncode == 0, f"kubectl kustomize {directory} failed:\n{result.stderr}"
    return result.stdout


def kinds_and_names(text: str) -> set[tuple[str, str]]:
    return {(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(text) if d}


@pytest.fixture(scope="module")
def namespaces(kube_cluster: KubeCluster) -> None:
    """The webhook's namespaces exist for real (a dry run of a namespaced object needs its namespace)."""
    kube_cluster.kubectl("apply", "--server-side", "-f", str(MANIFESTS / "namespace.yaml"))
    kube_cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ops"}})


def dry_run(cluster: KubeCluster, text: str) -> str:
    """`kubectl apply --server-side --dry-run=server`; fails on any refusal and on any warning (Pod
    Security's "would violate" comes as one). Returns stdout."""
    result = cluster.kubectl("apply", "--server-side", "--dry-run=server", "--field-manager=skill-webhook-test",
                             "-f", "-", input=text, check=False)
    assert result.returncode == 0, f"server-side dry run refused:\n{result.stderr}"
    assert "Warning" not in result.stderr, result.stderr
    return result.stdout


def test_every_committed_kustomization_is_found() -> None:
    """The parametrized test below covers these; a kustomization added elsewhere must show up here."""
    found = {p.relative_to(MANIFESTS).as_posix() for p in committed_kustomizations()}
    assert found == {".", "reconciler", "reconciler-evict", "rossoctl", "rossoctl/reconciler",
                     "rossoctl/reconciler-evict"}


@pytest.mark.parametrize("directory", committed_kustomizations(), ids=lambda p: p.relative_to(MANIFESTS).as_posix())
def test_committed_kustomizations_render_and_pass_a_server_side_dry_run(
    kube_cluster: KubeCluster, namespaces: None, directory: Path
) -> None:
    text = kustomize(directory)
    objects = kinds_and_names(text)
    assert objects, f"{directory} renders nothing"
    if directory.name == "reconciler-evict":
        assert EVICT_KINDS <= objects  # evict includes report's RBAC
    applied = dry_run(kube_cluster, text)
    assert applied.count("serverside-applied (server dry run)") == len(objects), applied


@pytest.mark.parametrize("name", GENERATED)
def test_generated_sets_render_and_pass_a_server_side_dry_run(
    kube_cluster: KubeCluster, namespaces: None, generated: dict[str, Path], name: str
) -> None:
    text = kustomize(generated[name])
    objects = kinds_and_names(text)
    assert ("Deployment", "skill-webhook") in objects
    if "evict" in name:
        assert EVICT_KINDS <= objects
    applied = dry_run(kube_cluster, text)
    assert applied.count("serverside-applied (server dry run)") == len(objects), applied
    deployment = next(d for d in yaml.safe_load_all(text) if d and d["kind"] == "Deployment")
    assert deployment["metadata"]["namespace"] == ("ops" if name.startswith("ops") else "skill-webhook")


@pytest.mark.parametrize("variant", ["kagenti", "rossoctl"])
def test_webhook_configurations_with_their_ca_bundle_pass_a_server_side_dry_run(
    kube_cluster: KubeCluster, tmp_path: Path, variant: str
) -> None:
    webhooks = MANIFESTS / ("rossoctl/webhooks.yaml" if variant == "rossoctl" else "webhooks.yaml")
    certs = tmp_path / "certs"
    skill_webhook("certs", "--out", str(certs))
    filled = skill_webhook("ca-bundle", "--ca", str(certs / "ca.crt"), str(webhooks)).stdout
    documents = [d for d in yaml.safe_load_all(filled) if d]
    assert all(w["clientConfig"]["caBundle"] for d in documents for w in d["webhooks"])
    applied = dry_run(kube_cluster, filled)
    assert applied.count("serverside-applied (server dry run)") == 2, applied


def test_the_crd_applies_for_real_and_its_schema_is_served(kube_cluster: KubeCluster, agentruntime_crd: str) -> None:
    """(The fixture applied manifests/crd.yaml for real and waited for Established.) A server-side dry run
    of an AgentRuntime then goes through its schema and CEL rules: a good one passes, a bad one is refused."""
    good = {"apiVersion": "agent.kagenti.dev/v1alpha1", "kind": "AgentRuntime",
            "metadata": {"name": "dry", "namespace": "default"},
            "spec": {"type": "agent", "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                     "skills": [{"name": "a", "image": "ghcr.io/example/a:v1", "mountPath": "/skills/a"}]}}
    dry_run(kube_cluster, json.dumps(good))
    bad = json.loads(json.dumps(good))
    bad["spec"]["skills"][0]["mountPath"] = "skills/../a"
    refused = kube_cluster.kubectl("apply", "--server-side", "--dry-run=server", "-f", "-", input=json.dumps(bad),
                                   check=False)
    assert refused.returncode != 0 and "spec.skills[0].mountPath" in refused.stderr, refused.stderr


def cert_manager_stub_crds() -> list[dict]:
    """cert-manager is not installed here: stand-in CRDs for its two kinds (any spec), so that the dry run
    checks what our file decides (API group, version, kinds, scope, namespaces, names), not cert-manager's
    schema."""
    def crd(kind: str, plural: str) -> dict:
        return {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                "metadata": {"name": f"{plural}.cert-manager.io"},
                "spec": {"group": "cert-manager.io", "scope": "Namespaced",
                         "names": {"plural": plural, "singular": kind.lower(), "kind": kind},
                         "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                             "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]}}
    return [crd("Issuer", "issuers"), crd("Certificate", "certificates")]


@pytest.fixture(scope="module")
def cert_manager_kinds(kube_cluster: KubeCluster) -> Iterator[None]:
    kube_cluster.apply(cert_manager_stub_crds())
    for plural in ("issuers", "certificates"):
        kube_cluster.kubectl("wait", "--for=condition=Established", f"crd/{plural}.cert-manager.io", "--timeout=60s")
    yield


def test_cert_manager_objects_pass_a_server_side_dry_run(kube_cluster: KubeCluster, namespaces: None,
                                                         cert_manager_kinds: None) -> None:
    text = (MANIFESTS / "cert-manager.yaml").read_text()
    objects = kinds_and_names(text)
    assert {kind for kind, _ in objects} == {"Issuer", "Certificate"}
    applied = dry_run(kube_cluster, text)
    assert applied.count("serverside-applied (server dry run)") == len(objects), applied


def test_the_printed_crd_passes_a_server_side_dry_run(kube_cluster: KubeCluster) -> None:
    """`skill-webhook manifests --crd` for another group (the CRD step of a generated set): the API server
    takes its schema and CEL rules. (That manifests/crd.yaml is the generator's output is test_manifests'.)"""
    printed = skill_webhook("manifests", "--crd", "--agentruntime-api", "agent.example.dev/v1beta1").stdout
    (crd,) = [d for d in yaml.safe_load_all(printed) if d]
    assert crd["metadata"]["name"] == "agentruntimes.agent.example.dev"
    applied = dry_run(kube_cluster, printed)
    assert "serverside-applied (server dry run)" in applied
