"""Every manifest is a valid Kubernetes object (1.33 and the newest schemas kubernetes-validate has),
and the install holds the SPEC §7 / §10 facts: least privilege, webhook settings, wiring between
Deployment, Service, Secret, webhooks and cert-manager."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from app.core.model import DEFAULT_AGENTRUNTIME_API, api_group

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "manifests"
OLDEST_SUPPORTED = "1.33"
KUBERNETES_VERSIONS = sorted({OLDEST_SUPPORTED, kubernetes_validate.latest_version()})

NAMESPACE = "skill-webhook"
SERVICE = "skill-webhook"
TLS_SECRET = "skill-webhook-tls"
TLS_MOUNT = "/etc/skill-webhook/tls"
AGENTRUNTIME_GROUP, AGENTRUNTIME_VERSION = DEFAULT_AGENTRUNTIME_API.split("/")
# Kinds with no schema in kubernetes-validate: checked by the dedicated tests below (cert-manager,
# Kustomization) or elsewhere (AgentRuntime samples, by the validation tests).
NON_KUBERNETES_GROUPS = {"cert-manager.io", "kustomize.config.k8s.io", AGENTRUNTIME_GROUP}


def _load(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


MANIFEST_FILES = sorted(p for p in MANIFESTS.rglob("*") if p.suffix in {".yaml", ".yml"})
DOCUMENTS = [(path, index, doc) for path in MANIFEST_FILES for index, doc in enumerate(_load(path))]


def _name(doc: dict[str, Any]) -> str | None:
    """name, or generateName for a sample shaped like what a controller sends the webhook."""
    metadata = doc.get("metadata") or {}
    return metadata.get("name") or metadata.get("generateName")


def _doc_id(path: Path, index: int, doc: dict[str, Any]) -> str:
    return f"{path.relative_to(MANIFESTS)}#{index}:{doc.get('kind')}/{_name(doc)}"


def docs_of_kind(kind: str, group: str | None = None) -> list[dict[str, Any]]:
    return [
        doc
        for _, _, doc in DOCUMENTS
        if doc.get("kind") == kind and (group is None or api_group(str(doc.get("apiVersion", ""))) == group)
    ]


def one(kind: str, name: str = SERVICE, group: str | None = None) -> dict[str, Any]:
    found = [d for d in docs_of_kind(kind, group) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected exactly one {kind} {name}, found {len(found)}"
    return found[0]


def test_the_install_manifests_are_there():
    names = {p.name for p in MANIFEST_FILES if p.parent == MANIFESTS}
    assert {
        "namespace.yaml",
        "crd.yaml",
        "rbac.yaml",
        "deployment.yaml",
        "pdb.yaml",
        "service.yaml",
        "webhooks.yaml",
        "cert-manager.yaml",
        "kustomization.yaml",
    } <= names


SCHEMA_CHECKED = [
    pytest.param(doc, id=_doc_id(path, index, doc))
    for path, index, doc in DOCUMENTS
    if api_group(str(doc.get("apiVersion", ""))) not in NON_KUBERNETES_GROUPS
]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("doc", SCHEMA_CHECKED)
def test_kubernetes_validate_accepts(doc, version):
    kubernetes_validate.validate(doc, version, strict=True)


def test_every_document_is_an_object_with_a_name():
    for path, index, doc in DOCUMENTS:
        assert isinstance(doc, dict) and doc.get("apiVersion") and doc.get("kind"), _doc_id(path, index, doc)
        if doc["kind"] != "Kustomization":
            assert _name(doc), _doc_id(path, index, doc)


def test_crd_is_validated_as_a_custom_resource_definition():
    crd = one("CustomResourceDefinition", f"agentruntimes.{AGENTRUNTIME_GROUP}", "apiextensions.k8s.io")
    assert crd in [p.values[0] for p in SCHEMA_CHECKED]


# -- kustomization ----------------------------------------------------------------------------------


def test_kustomization_lists_every_install_manifest_and_nothing_missing():
    kustomization = _load(MANIFESTS / "kustomization.yaml")[0]
    resources = kustomization["resources"]
    for resource in resources:
        assert (MANIFESTS / resource).is_file(), f"kustomization lists {resource}, which does not exist"
    optional = {"kustomization.yaml", "cert-manager.yaml"}
    top_level = {p.name for p in MANIFEST_FILES if p.parent == MANIFESTS} - optional
    assert top_level == set(resources)


# -- Deployment: least privilege and wiring --------------------------------------------------------


@pytest.fixture(scope="module")
def deployment() -> dict[str, Any]:
    return one("Deployment", group="apps")


@pytest.fixture(scope="module")
def pod_spec(deployment) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]


@pytest.fixture(scope="module")
def container(pod_spec) -> dict[str, Any]:
    assert len(pod_spec["containers"]) == 1 and not pod_spec.get("initContainers")
    return pod_spec["containers"][0]


def test_deployment_runs_non_root_read_only_without_privileges(deployment, pod_spec, container):
    assert deployment["metadata"]["namespace"] == NAMESPACE
    pod_sc, sc = pod_spec["securityContext"], container["securityContext"]
    assert pod_sc["runAsNonRoot"] is True and sc["runAsNonRoot"] is True
    assert pod_sc["runAsUser"] == sc["runAsUser"] == 10001
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc.get("privileged") in (None, False)
    assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault"
    for forbidden in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod_spec.get(forbidden)
    assert all("hostPath" not in v for v in pod_spec["volumes"])


def test_deployment_availability(deployment, pod_spec, container):
    assert deployment["spec"]["replicas"] == 2
    anti = pod_spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"https": 8443, "metrics": 8080}
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] in ("metrics", 8080)
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"]) and "memory" in resources["limits"]
    assert container["image"] == "ghcr.io/kagenti/skill-webhook:0.1.0"

    pdb = one("PodDisruptionBudget", group="policy")
    assert pdb["spec"]["minAvailable"] == 1
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_deployment_reads_tls_from_the_secret_as_a_directory_and_writes_only_tmp(pod_spec, container):
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["SKILL_WEBHOOK_SOURCE"] == "kube"
    assert env["SKILL_WEBHOOK_TLS_CERT_FILE"] == f"{TLS_MOUNT}/tls.crt"
    assert env["SKILL_WEBHOOK_TLS_KEY_FILE"] == f"{TLS_MOUNT}/tls.key"
    volumes = {v["name"]: v for v in pod_spec["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    tls_mount = mounts[TLS_MOUNT]
    # A subPath mount would never see the kubelet's updates, and rotation would need a restart.
    assert "subPath" not in tls_mount and tls_mount["readOnly"] is True
    assert volumes[tls_mount["name"]]["secret"]["secretName"] == TLS_SECRET
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    assert set(mounts) == {TLS_MOUNT, "/tmp"}


def test_service_account_and_rbac_are_least_privilege(pod_spec):
    """get/list/watch on agentruntimes and nothing else; bound to the Deployment's ServiceAccount."""
    assert (MANIFESTS / "rbac.yaml").is_file()
    account = pod_spec["serviceAccountName"]
    assert account == SERVICE
    one("ServiceAccount", account, "")
    roles = docs_of_kind("ClusterRole", "rbac.authorization.k8s.io") + docs_of_kind("Role", "rbac.authorization.k8s.io")
    assert roles, "no Role or ClusterRole"
    for role in roles:
        assert "aggregationRule" not in role
        for rule in role["rules"]:
            assert rule["apiGroups"] == [AGENTRUNTIME_GROUP]
            assert rule["resources"] == ["agentruntimes"]
            assert sorted(rule["verbs"]) == ["get", "list", "watch"]
            assert not rule.get("resourceNames") and not rule.get("nonResourceURLs")
    bindings = docs_of_kind("ClusterRoleBinding", "rbac.authorization.k8s.io") + docs_of_kind(
        "RoleBinding", "rbac.authorization.k8s.io"
    )
    role_names = {(r["kind"], r["metadata"]["name"]) for r in roles}
    assert bindings
    for binding in bindings:
        assert (binding["roleRef"]["kind"], binding["roleRef"]["name"]) in role_names
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}]


def test_namespace_enforces_restricted_pod_security():
    namespace = one("Namespace", NAMESPACE, "")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_dockerfile_user_matches_the_deployment(container):
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^USER 10001(:10001)?$", dockerfile, re.M)
    assert '\nENTRYPOINT ["skill-webhook"]\n' in dockerfile and '\nCMD ["serve"]\n' in dockerfile
    assert re.search(r"^EXPOSE 8443 8080$", dockerfile, re.M)
    assert container["securityContext"]["runAsUser"] == 10001


# -- Service and webhook configurations ----------------------------------------------------------


def test_service_routes_443_to_the_https_port(deployment):
    service = one("Service", SERVICE, "")
    assert service["metadata"]["namespace"] == NAMESPACE
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert ports["https"]["port"] == 443 and ports["https"]["targetPort"] in ("https", 8443)
    assert ports["metrics"]["targetPort"] in ("metrics", 8080)
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def _single_webhook(kind: str) -> dict[str, Any]:
    config = one(kind, SERVICE, "admissionregistration.k8s.io")
    assert len(config["webhooks"]) == 1
    return config["webhooks"][0]


def _common_webhook_settings(webhook: dict[str, Any], path: str) -> None:
    assert webhook["clientConfig"]["service"] == {"name": SERVICE, "namespace": NAMESPACE, "path": path, "port": 443}
    assert "url" not in webhook["clientConfig"]
    assert webhook["failurePolicy"] == "Fail"
    assert webhook["sideEffects"] == "None"
    assert webhook["timeoutSeconds"] == 5
    assert webhook["admissionReviewVersions"] == ["v1"]
    # Left for `skill-webhook ca-bundle` or cert-manager's injector to fill.
    assert not webhook["clientConfig"].get("caBundle")


def test_mutating_webhook_is_exactly_as_specified():
    webhook = _single_webhook("MutatingWebhookConfiguration")
    _common_webhook_settings(webhook, "/mutate")
    assert webhook["rules"] == [
        {
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "resources": ["pods"],
            "operations": ["CREATE"],
            "scope": "Namespaced",
        }
    ]
    assert webhook["reinvocationPolicy"] == "IfNeeded"
    assert webhook["namespaceSelector"] == {
        "matchExpressions": [
            {
                "key": "kubernetes.io/metadata.name",
                "operator": "NotIn",
                "values": ["kube-system", "kube-public", "kube-node-lease", NAMESPACE],
            }
        ]
    }
    assert webhook["objectSelector"] == {
        "matchExpressions": [
            {"key": "kagenti.io/type", "operator": "In", "values": ["agent", "tool"]},
            {"key": "kagenti.io/skills-inject", "operator": "NotIn", "values": ["disabled"]},
        ]
    }


def test_validating_webhook_is_exactly_as_specified():
    webhook = _single_webhook("ValidatingWebhookConfiguration")
    _common_webhook_settings(webhook, "/validate")
    assert webhook["rules"] == [
        {
            "apiGroups": [AGENTRUNTIME_GROUP],
            "apiVersions": [AGENTRUNTIME_VERSION],
            "resources": ["agentruntimes"],
            "operations": ["CREATE", "UPDATE"],
            "scope": "Namespaced",
        }
    ]


# -- cert-manager ------------------------------------------------------------------------------------


def test_cert_manager_issues_the_secret_the_deployment_mounts_for_the_service_name():
    certificates = {c["metadata"]["name"]: c for c in docs_of_kind("Certificate", "cert-manager.io")}
    issuers = {i["metadata"]["name"]: i for i in docs_of_kind("Issuer", "cert-manager.io")}
    serving = next(c for c in certificates.values() if c["spec"]["secretName"] == TLS_SECRET)
    assert f"{SERVICE}.{NAMESPACE}.svc" in serving["spec"]["dnsNames"]
    assert "server auth" in serving["spec"]["usages"]
    # serving <- CA Issuer <- CA Certificate <- self-signed Issuer
    ca_issuer = issuers[serving["spec"]["issuerRef"]["name"]]
    ca_cert = next(c for c in certificates.values() if c["spec"]["secretName"] == ca_issuer["spec"]["ca"]["secretName"])
    assert ca_cert["spec"]["isCA"] is True
    assert "selfSigned" in issuers[ca_cert["spec"]["issuerRef"]["name"]]["spec"]
    for obj in [*certificates.values(), *issuers.values()]:
        assert obj["metadata"]["namespace"] == NAMESPACE
    # The documented injection annotation names this Certificate.
    assert f"cert-manager.io/inject-ca-from={NAMESPACE}/{serving['metadata']['name']}" in (
        MANIFESTS / "cert-manager.yaml"
    ).read_text()
