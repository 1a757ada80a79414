"""The install manifests, generated from one source (`skill-webhook manifests`, README "Installing").

Every committed file under manifests/ (except samples/) is this module's output: the kagenti set in
manifests/, the rossoctl set in manifests/rossoctl/, the CRD and the cert-manager objects as their own
steps. `scripts/gen-manifests` regenerates them; tests/test_manifests.py fails when they differ.

Three sets, each its own explicit step:
- the install set: namespace, service account, read-only RBAC, Deployment, PodDisruptionBudget,
  Service and the two webhook configurations (plus the reconciler's RBAC when it is enabled);
- the CRD, only for clusters that have no AgentRuntime CRD (installing must never overwrite the
  operator's);
- the cert-manager Issuers and Certificates, for clusters that issue the serving certificate that way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal

import yaml

from app.core.model import AGENTRUNTIME_KIND, DEFAULT_AGENTRUNTIME_API, PULL_POLICIES, TARGET_KINDS
from app.core.names import DEFAULT_DOMAIN_PREFIX, Domain, check_domain
from app.service.certs import DEFAULT_NAMESPACE, DEFAULT_SERVICE
from app.service.settings import Settings

DEFAULT_IMAGE = "ghcr.io/kagenti/skill-webhook:0.1.0"
RECONCILE_MODES = ("off", "report", "evict")
Reconcile = Literal["off", "report", "evict"]

NAME = DEFAULT_SERVICE
TLS_SECRET = "skill-webhook-tls"
TLS_MOUNT = "/etc/skill-webhook/tls"
HTTPS_PORT = 8443
METRICS_PORT = 8080
RUN_AS = 10001
LEASE_NAME = str(Settings.model_fields["leader_election_lease_name"].default)
RECONCILER_ROLE = "skill-webhook-reconciler"
EVICTOR_ROLE = "skill-webhook-evictor"
LEADER_ELECTION_ROLE = "skill-webhook-leader-election"

# File layout of `-o DIR`.
KUSTOMIZATION = "kustomization.yaml"
RECONCILER_DIR = "reconciler"
EVICT_DIR = "reconciler/evict"
CRD_FILE = "crd.yaml"
CERT_MANAGER_FILE = "cert-manager.yaml"
WEBHOOKS_FILE = "webhooks.yaml"

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_API_VERSION = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)+/v[0-9]+((alpha|beta)[0-9]+)?")

_LABELS = {"app.kubernetes.io/name": NAME}


class ManifestOptionError(ValueError):
    """An option the manifests cannot be made with; `option` names the flag."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"{option}: {message}")
        self.option = option


@dataclass(frozen=True)
class InstallOptions:
    domain: str = DEFAULT_DOMAIN_PREFIX
    agentruntime_api: str = DEFAULT_AGENTRUNTIME_API
    namespace: str = DEFAULT_NAMESPACE
    image: str = DEFAULT_IMAGE
    reconcile: Reconcile = "off"
    names: Domain = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "names", Domain(check_domain(self.domain)))
        except ValueError as exc:
            raise ManifestOptionError("--domain", str(exc)) from None
        if not _API_VERSION.fullmatch(self.agentruntime_api):
            raise ManifestOptionError(
                "--agentruntime-api",
                f'"{self.agentruntime_api}" is not "<group>/<version>" with a dotted group '
                "(e.g. agent.kagenti.dev/v1alpha1)",
            )
        if not _DNS_LABEL.fullmatch(self.namespace):
            raise ManifestOptionError("--namespace", f'"{self.namespace}" is not a DNS-1123 label')
        if not self.image or any(c.isspace() for c in self.image):
            raise ManifestOptionError("--image", f'"{self.image}" is not an image reference')
        if self.reconcile not in RECONCILE_MODES:
            raise ManifestOptionError("--reconcile", f'"{self.reconcile}" is not one of {", ".join(RECONCILE_MODES)}')

    @property
    def group(self) -> str:
        return self.agentruntime_api.split("/")[0]

    @property
    def version(self) -> str:
        return self.agentruntime_api.split("/")[1]


@dataclass(frozen=True)
class Document:
    """One YAML document: the file it belongs to in the `-o` layout, why it is as it is, the object."""

    file: str
    comment: str
    body: dict[str, Any]


# -- rendering --------------------------------------------------------------------------------------


class _Octal(int):
    """A file mode, written the way people read it (0440); YAML 1.1 (PyYAML, kubectl) reads it back."""


class _Dumper(yaml.SafeDumper):
    def increase_indent(self, flow: bool = False, indentless: bool = False) -> Any:
        # Sequences indented under their key, as Kubernetes documentation writes them.
        return super().increase_indent(flow, False)

    def ignore_aliases(self, data: Any) -> bool:
        # One shared selector object must not come out as a YAML anchor and alias.
        return True


def _represent_list(dumper: yaml.SafeDumper, value: list[Any]) -> Any:
    # Short lists of scalars on one line (verbs: [get, list, watch]); the rest as blocks.
    scalars = all(isinstance(v, (str, int, float, bool)) for v in value)
    flow = bool(value) and scalars and sum(len(str(v)) + 2 for v in value) <= 72
    return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=flow)


_Dumper.add_representer(list, _represent_list)


_Dumper.add_representer(_Octal, lambda dumper, value: dumper.represent_scalar("tag:yaml.org,2002:int", f"0{value:o}"))


def _comment(text: str) -> str:
    return "".join(f"# {line}".rstrip() + "\n" for line in text.strip("\n").splitlines()) if text else ""


def render(documents: Iterable[Document]) -> str:
    """The documents as one YAML stream, each preceded by its comment."""
    parts = [
        _comment(doc.comment)
        + yaml.dump(doc.body, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=4096, allow_unicode=True)
        for doc in documents
    ]
    return "---\n".join(parts)


def files(documents: Iterable[Document]) -> dict[str, str]:
    """file -> its text, in the order the documents came."""
    grouped: dict[str, list[Document]] = {}
    for doc in documents:
        grouped.setdefault(doc.file, []).append(doc)
    return {name: render(docs) for name, docs in grouped.items()}


# -- the install set --------------------------------------------------------------------------------


def _meta(name: str, namespace: str | None = None, **labels: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    meta["labels"] = {**_LABELS, **labels}
    return meta


def _service_account_subject(o: InstallOptions) -> list[dict[str, str]]:
    return [{"kind": "ServiceAccount", "name": NAME, "namespace": o.namespace}]


def _binding(kind: str, name: str, role_kind: str, o: InstallOptions, namespace: str | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": kind,
        "metadata": _meta(name, namespace),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": name},
        "subjects": _service_account_subject(o),
    }


def namespace(o: InstallOptions) -> list[Document]:
    return [
        Document(
            "namespace.yaml",
            "The webhook's own namespace. The mutating webhook excludes it (kubernetes.io/metadata.name), so the\n"
            'webhook never waits on itself. Pod Security "restricted" holds the Deployment to least privilege.',
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": _meta(
                    o.namespace,
                    **{
                        "pod-security.kubernetes.io/enforce": "restricted",
                        "pod-security.kubernetes.io/enforce-version": "latest",
                    },
                ),
            },
        )
    ]


def rbac(o: InstallOptions) -> list[Document]:
    return [
        Document(
            "rbac.yaml",
            "The identity of the webhook's pods. The token is mounted because the informer lists and\n"
            "watches AgentRuntimes; nothing else in the pod talks to the API server.",
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": _meta(NAME, o.namespace),
                "automountServiceAccountToken": True,
            },
        ),
        Document(
            "rbac.yaml",
            f"Least privilege: the informer reads AgentRuntimes of {o.group} (LIST + WATCH, and GET for\n"
            "`kubectl auth can-i` and debugging) in every namespace, and nothing else. Pods arrive in the\n"
            "AdmissionReview itself, so no access to pods, deployments or replicasets is needed. The\n"
            "reconciler's rights (pods, events, one Lease) are a separate set: reconciler/.",
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": _meta(NAME),
                "rules": [{"apiGroups": [o.group], "resources": ["agentruntimes"], "verbs": ["get", "list", "watch"]}],
            },
        ),
        Document("rbac.yaml", "", _binding("ClusterRoleBinding", NAME, "ClusterRole", o)),
    ]


def deployment_args(o: InstallOptions) -> list[str]:
    """The `serve` flags of the Deployment; each is a field of the settings (README "Configuration")."""
    return [
        "serve",
        "--source=kube",
        f"--domain={o.domain}",
        f"--agentruntime-api={o.agentruntime_api}",
        f"--reconcile={o.reconcile}",
        "--leader-election-namespace=$(POD_NAMESPACE)",
        f"--tls-cert-file={TLS_MOUNT}/tls.crt",
        f"--tls-key-file={TLS_MOUNT}/tls.key",
        f"--port={HTTPS_PORT}",
        f"--metrics-port={METRICS_PORT}",
        "--log-format=json",
    ]


def deployment(o: InstallOptions) -> list[Document]:
    selector = {"matchLabels": dict(_LABELS)}
    pod_labels = {**_LABELS, "app.kubernetes.io/component": "admission-webhook"}
    container = {
        "name": "webhook",
        "image": o.image,
        "imagePullPolicy": "IfNotPresent",
        "args": deployment_args(o),
        "env": [
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {
                "name": "SKILL_WEBHOOK_LEADER_ELECTION_IDENTITY",
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
            },
        ],
        "ports": [
            {"name": "https", "containerPort": HTTPS_PORT, "protocol": "TCP"},
            {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"},
        ],
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "metrics"},
            "periodSeconds": 10,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "metrics"},
            "periodSeconds": 5,
            "timeoutSeconds": 2,
            "failureThreshold": 2,
        },
        "lifecycle": {"preStop": {"sleep": {"seconds": 5}}},
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "256Mi"}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [
            {"name": "tls", "mountPath": TLS_MOUNT, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(NAME, o.namespace, **{"app.kubernetes.io/component": "admission-webhook"}),
        "spec": {
            "replicas": 2,
            "revisionHistoryLimit": 3,
            "selector": selector,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {
                    "serviceAccountName": NAME,
                    "automountServiceAccountToken": True,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": RUN_AS,
                        "runAsGroup": RUN_AS,
                        "fsGroup": RUN_AS,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "terminationGracePeriodSeconds": 30,
                    "affinity": {
                        "podAntiAffinity": {
                            "preferredDuringSchedulingIgnoredDuringExecution": [
                                {
                                    "weight": 100,
                                    "podAffinityTerm": {
                                        "topologyKey": "kubernetes.io/hostname",
                                        "labelSelector": selector,
                                    },
                                }
                            ]
                        }
                    },
                    "topologySpreadConstraints": [
                        {
                            "maxSkew": 1,
                            "topologyKey": "topology.kubernetes.io/zone",
                            "whenUnsatisfiable": "ScheduleAnyway",
                            "labelSelector": selector,
                        }
                    ],
                    "containers": [container],
                    "volumes": [
                        {"name": "tls", "secret": {"secretName": TLS_SECRET, "defaultMode": _Octal(0o440)}},
                        {"name": "tmp", "emptyDir": {"sizeLimit": "16Mi"}},
                    ],
                },
            },
        },
    }
    return [
        Document(
            "deployment.yaml",
            "Two replicas spread over nodes (preferred, so a one-node cluster still runs both): the mutating\n"
            "webhook has failurePolicy Fail, so while no replica answers, agent pods cannot be created.\n"
            "The TLS Secret is mounted as a whole directory (no subPath) so the kubelet's updates reach the\n"
            "container and the server reloads them without a restart. Writes go to /tmp only.\n"
            "--reconcile is always explicit: its default (report in a cluster) needs the reconciler RBAC,\n"
            "which this set binds only when the mode asks for it (reconciler/). The Lease namespace and\n"
            "the leader identity come from the downward API: the pod's namespace and its own name.\n"
            "preStop keeps serving while the endpoint removal reaches every API server, so admissions in\n"
            "flight during a rollout or drain are not sent to a process that has gone.",
            body,
        )
    ]


def pdb(o: InstallOptions) -> list[Document]:
    return [
        Document(
            "pdb.yaml",
            "With failurePolicy Fail, a drain that took both replicas would block every agent pod creation.",
            {
                "apiVersion": "policy/v1",
                "kind": "PodDisruptionBudget",
                "metadata": _meta(NAME, o.namespace),
                "spec": {"minAvailable": 1, "selector": {"matchLabels": dict(_LABELS)}},
            },
        )
    ]


def service(o: InstallOptions) -> list[Document]:
    return [
        Document(
            "service.yaml",
            f"The API server dials https://{NAME}.{o.namespace}.svc:443 (the name in the serving certificate).",
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": _meta(NAME, o.namespace),
                "spec": {
                    "type": "ClusterIP",
                    "selector": dict(_LABELS),
                    "ports": [
                        {"name": "https", "port": 443, "targetPort": "https", "protocol": "TCP"},
                        {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"},
                    ],
                },
            },
        )
    ]


def _client_config(o: InstallOptions, path: str) -> dict[str, Any]:
    return {"service": {"name": NAME, "namespace": o.namespace, "path": path, "port": 443}}


def webhooks(o: InstallOptions) -> list[Document]:
    names = o.names
    mutating = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": _meta(NAME),
        "webhooks": [
            {
                "name": f"inject-skills.{o.group}",
                "admissionReviewVersions": ["v1"],
                "clientConfig": _client_config(o, "/mutate"),
                "rules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "resources": ["pods"],
                        "operations": ["CREATE"],
                        "scope": "Namespaced",
                    }
                ],
                "failurePolicy": "Fail",
                "matchPolicy": "Equivalent",
                "sideEffects": "None",
                "reinvocationPolicy": "IfNeeded",
                "timeoutSeconds": 5,
                "namespaceSelector": {
                    "matchExpressions": [
                        {
                            "key": "kubernetes.io/metadata.name",
                            "operator": "NotIn",
                            "values": ["kube-system", "kube-public", "kube-node-lease", o.namespace],
                        }
                    ]
                },
                "objectSelector": {
                    "matchExpressions": [
                        {"key": names.type_label, "operator": "In", "values": ["agent", "tool"]},
                        {"key": names.skills_inject_label, "operator": "NotIn", "values": ["disabled"]},
                    ]
                },
            }
        ],
    }
    validating = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": _meta(NAME),
        "webhooks": [
            {
                "name": f"validate-agentruntimes.{o.group}",
                "admissionReviewVersions": ["v1"],
                "clientConfig": _client_config(o, "/validate"),
                "rules": [
                    {
                        "apiGroups": [o.group],
                        "apiVersions": [o.version],
                        "resources": ["agentruntimes"],
                        "operations": ["CREATE", "UPDATE"],
                        "scope": "Namespaced",
                    }
                ],
                "failurePolicy": "Fail",
                "matchPolicy": "Equivalent",
                "sideEffects": "None",
                "timeoutSeconds": 5,
            }
        ],
    }
    return [
        Document(
            WEBHOOKS_FILE,
            "Register these LAST, after the serving Secret exists and the Deployment is ready, with caBundle\n"
            "filled in (this file):\n"
            f"  skill-webhook ca-bundle --ca certs/ca.crt {WEBHOOKS_FILE} | kubectl apply -f -\n"
            "or let cert-manager's CA injector set it (cert-manager.yaml). caBundle is deliberately absent:\n"
            "leaving the key out, rather than writing caBundle: \"\", means re-applying this file never\n"
            "wipes a bundle someone injected.\n"
            "failurePolicy Fail, not Ignore: a pod started without its skills looks healthy while its agent\n"
            "is not. The price: while this webhook cannot be called, matching pods cannot be created. To\n"
            f"recover, `kubectl delete mutatingwebhookconfiguration {NAME}` or set its failurePolicy to\n"
            "Ignore (README \"Installing\").\n"
            "reinvocationPolicy IfNeeded: run again if a later webhook (a sidecar injector) changes the pod;\n"
            "the patch is idempotent. Sent only: pods labelled "
            f"{names.type_label} in (agent, tool),\n"
            f"not labelled {names.skills_inject_label}=disabled, outside the system namespaces and the\n"
            "webhook's own.",
            mutating,
        ),
        Document(
            WEBHOOKS_FILE,
            f"Rejects bad AgentRuntimes ({o.agentruntime_api}) before they are stored.",
            validating,
        ),
    ]


def reconciler_rbac(o: InstallOptions) -> list[Document]:
    """What `--reconcile report` needs: watch pods, write Events, hold one Lease."""
    return [
        Document(
            f"{RECONCILER_DIR}/rbac.yaml",
            "The stale-pod reconciler (--reconcile report, and evict with reconciler/evict/; README \"When\n"
            "skills change\"): a pod informer over all namespaces (list + watch; the AgentRuntime's pods\n"
            "are matched in memory, never fetched one by one) and Events on AgentRuntimes (SkillsChanged,\n"
            "RolloutBlocked), through either Events API. Nothing here writes a workload or a pod.",
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": _meta(RECONCILER_ROLE),
                "rules": [
                    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]},
                    {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create"]},
                ],
            },
        ),
        Document(f"{RECONCILER_DIR}/rbac.yaml", "", _binding("ClusterRoleBinding", RECONCILER_ROLE, "ClusterRole", o)),
        Document(
            f"{RECONCILER_DIR}/rbac.yaml",
            f'Leader election: one Lease, "{LEASE_NAME}", in the webhook\'s own namespace. get and update\n'
            "are limited to that name. create cannot be: the authorizer decides a create before the object\n"
            "exists, from the URL, which names no object, so a rule with resourceNames never allows create.\n"
            "create is therefore granted on leases of this namespace only, where nothing else runs.",
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": _meta(LEADER_ELECTION_ROLE, o.namespace),
                "rules": [
                    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
                    {
                        "apiGroups": ["coordination.k8s.io"],
                        "resources": ["leases"],
                        "resourceNames": [LEASE_NAME],
                        "verbs": ["get", "update"],
                    },
                ],
            },
        ),
        Document(
            f"{RECONCILER_DIR}/rbac.yaml",
            "",
            _binding("RoleBinding", LEADER_ELECTION_ROLE, "Role", o, namespace=o.namespace),
        ),
    ]


def evictor_rbac(o: InstallOptions) -> list[Document]:
    """What `--reconcile evict` adds: the Eviction API, so PodDisruptionBudgets hold."""
    return [
        Document(
            f"{EVICT_DIR}/rbac.yaml",
            "--reconcile evict only: evict stale pods of opted-in AgentRuntimes through the Eviction API\n"
            "(create pods/eviction), so PodDisruptionBudgets hold. No delete on pods: an eviction is the\n"
            "only way this webhook removes a pod. A separate role, so report mode never holds it.",
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": _meta(EVICTOR_ROLE),
                "rules": [{"apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"]}],
            },
        ),
        Document(f"{EVICT_DIR}/rbac.yaml", "", _binding("ClusterRoleBinding", EVICTOR_ROLE, "ClusterRole", o)),
    ]


def reconciler_documents(o: InstallOptions) -> list[Document]:
    """The reconciler RBAC the mode needs: none for off, report's for report, both for evict."""
    if o.reconcile == "off":
        return []
    return reconciler_rbac(o) + (evictor_rbac(o) if o.reconcile == "evict" else [])


def install_documents(o: InstallOptions) -> list[Document]:
    """The install set, in the order to apply it; the webhook configurations come last."""
    return [
        *namespace(o),
        *rbac(o),
        *reconciler_documents(o),
        *deployment(o),
        *pdb(o),
        *service(o),
        *webhooks(o),
    ]


# -- kustomizations ---------------------------------------------------------------------------------


def _kustomization(resources: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": resources,
    }


def install_layout(o: InstallOptions) -> dict[str, str]:
    """`-o DIR` of the install set: its files, kustomizations, and the reconciler's RBAC in
    reconciler/ (listed by the top kustomization only when --reconcile asks for it)."""
    base = [d for d in install_documents(o) if "/" not in d.file]
    out = files(base)
    resources = [name for name in out if name != WEBHOOKS_FILE]
    if o.reconcile == "report":
        resources.append(RECONCILER_DIR)
    elif o.reconcile == "evict":
        resources.append(EVICT_DIR)
    kustomizations = [
        Document(
            KUSTOMIZATION,
            "`kubectl apply -k` of this directory installs everything that is safe before the serving\n"
            "Secret exists: namespace, RBAC, Deployment, PodDisruptionBudget, Service. It lists neither\n"
            f"{WEBHOOKS_FILE} (a Fail webhook registered before its Secret and caBundle blocks every\n"
            f"matching pod: register it last, with `skill-webhook ca-bundle`), nor {CRD_FILE} (its own step,\n"
            f"only where no AgentRuntime CRD exists), nor {CERT_MANAGER_FILE} (only with cert-manager).\n"
            f"The reconciler's RBAC is listed only with --reconcile report ({RECONCILER_DIR}) or evict\n"
            f"({EVICT_DIR}). Generated by `skill-webhook manifests` (README \"Installing\"); do not edit.",
            _kustomization(resources),
        ),
        Document(
            f"{RECONCILER_DIR}/{KUSTOMIZATION}",
            "RBAC for --reconcile report (pods list/watch, events create, one Lease). For evict apply\n"
            "evict/ instead, which includes this.",
            _kustomization(["rbac.yaml"]),
        ),
        Document(
            f"{EVICT_DIR}/{KUSTOMIZATION}",
            "RBAC for --reconcile evict: report's (..) plus create pods/eviction.",
            _kustomization(["..", "rbac.yaml"]),
        ),
    ]
    out.update(files([kustomizations[0]]))
    reconciler_files = files(reconciler_rbac(o) + [kustomizations[1]] + evictor_rbac(o) + [kustomizations[2]])
    out.update(reconciler_files)
    return out


# -- the CRD, its own step ----------------------------------------------------------------------------


def _one_of(values: Iterable[str]) -> str:
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


def crd(o: InstallOptions) -> list[Document]:
    """The AgentRuntime CRD for clusters that have none. Its schema checks what the API server can
    check alone; /validate checks the rest. Where both check a rule they agree (tests/test_crd.py
    evaluates these CEL rules on the webhook's own test cases)."""
    kinds = ", ".join(TARGET_KINDS)
    policies = ", ".join(PULL_POLICIES)
    skill = {
        "type": "object",
        "required": ["name", "image", "mountPath"],
        "properties": {
            "name": {
                "description": 'DNS-1123 label of at most 57 characters: the volume is named "skill-<name>" and a '
                "volume name has at most 63.",
                "type": "string",
                "maxLength": 63,
                "x-kubernetes-validations": [
                    {
                        "rule": "size(self) >= 1 && size(self) <= 57",
                        "message": "must be 1 to 57 characters (the volume name skill-<name> must fit 63)",
                    },
                    # Three plain regexes rather than one anchored one: "$" differs between RE2 and
                    # other engines on a trailing newline; these do not.
                    {
                        "rule": "!self.matches('[^-a-z0-9]') && self.matches('^[a-z0-9]') && self.matches('[a-z0-9]$')",
                        "message": "must be a lowercase RFC 1123 label: lower case alphanumeric characters or '-', "
                        "starting and ending with an alphanumeric character",
                    },
                ],
            },
            "image": {
                "description": "OCI image reference, [registry[:port]/]path[:tag][@sha256:hex or @sha512:hex].",
                "type": "string",
                "minLength": 1,
                # The longest valid reference: 255 (name) + 1 + 128 (tag) + 1 + 135 (a sha512 digest).
                "maxLength": 520,
            },
            "mountPath": {
                "description": "Absolute directory in the agent container where the skill appears.",
                "type": "string",
                "maxLength": 4096,
                "x-kubernetes-validations": [
                    {"rule": "self.startsWith('/')", "message": "must be an absolute path"},
                    {
                        "rule": "!(self == '..' || self.startsWith('../') || self.endsWith('/..') || self.contains('/../'))",
                        "message": "must not contain '..'",
                    },
                ],
            },
            "pullPolicy": {
                "description": f"{policies.replace(', Never', ' or Never')}; when absent, the Kubernetes default.",
                "type": "string",
                "maxLength": 16,
                "x-kubernetes-validations": [
                    {"rule": f"self in {_one_of(PULL_POLICIES)}", "message": f"must be one of {policies}"}
                ],
            },
        },
    }
    schema = {
        "description": "Declares which skill images (OCI) the agent of one workload gets mounted.",
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": {
                "type": "object",
                "required": ["type", "targetRef"],
                "x-kubernetes-preserve-unknown-fields": True,
                "properties": {
                    "type": {"description": "What the workload is.", "type": "string", "enum": ["agent", "tool"]},
                    "targetRef": {
                        "description": "The workload in the same namespace whose pods get the skills.",
                        "type": "object",
                        "required": ["apiVersion", "kind", "name"],
                        "x-kubernetes-preserve-unknown-fields": True,
                        "properties": {
                            "apiVersion": {"type": "string", "minLength": 1},
                            "kind": {
                                "type": "string",
                                "maxLength": 63,
                                "x-kubernetes-validations": [
                                    {"rule": f"self in {_one_of(TARGET_KINDS)}", "message": f"must be one of {kinds}"}
                                ],
                            },
                            "name": {"type": "string", "minLength": 1},
                        },
                    },
                    "skills": {
                        "description": "Skill images to mount read-only into the agent container, at most 20.",
                        "type": "array",
                        "maxItems": 20,
                        "x-kubernetes-list-type": "atomic",
                        "x-kubernetes-validations": [
                            {"rule": "size(self) <= 20", "message": "must have at most 20 items"},
                            {
                                "rule": "self.all(s, self.exists_one(t, t.name == s.name))",
                                "message": "skill names must be unique",
                            },
                        ],
                        "items": skill,
                    },
                },
            },
            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        },
    }
    body = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": _meta(f"agentruntimes.{o.group}", **{"app.kubernetes.io/component": "crd"}),
        "spec": {
            "group": o.group,
            "scope": "Namespaced",
            "names": {
                "kind": AGENTRUNTIME_KIND,
                "listKind": f"{AGENTRUNTIME_KIND}List",
                "plural": "agentruntimes",
                "singular": "agentruntime",
                "shortNames": ["art", "agentrt"],
            },
            "versions": [
                {
                    "name": o.version,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Type", "type": "string", "jsonPath": ".spec.type"},
                        {"name": "Target-Kind", "type": "string", "jsonPath": ".spec.targetRef.kind", "priority": 1},
                        {"name": "Target", "type": "string", "jsonPath": ".spec.targetRef.name"},
                        # A printer column's JSONPath cannot count; the names show how many there are.
                        {"name": "Skills", "type": "string", "jsonPath": ".spec.skills[*].name"},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }
    return [
        Document(
            CRD_FILE,
            f"AgentRuntime ({o.agentruntime_api}), ONLY for clusters that do not have an AgentRuntime CRD:\n"
            "applying it where the operator installed its own would overwrite the operator's (README\n"
            '"Installing", the optional CRD step). Not part of kustomization.yaml.\n'
            "\n"
            "The schema checks what the API server can check on its own; the validating webhook\n"
            "(/validate) checks the rest (OCI references, registry allow-list, mount-path overlaps and\n"
            "reserved trees, one AgentRuntime per workload). Where both check a rule they agree.\n"
            "Unknown fields are preserved everywhere except inside a skill entry: other projects add spec\n"
            "fields (identity, trace, authBridgeMode, mtlsMode) that must survive, while a misspelt skill\n"
            "field (mountpath) is pruned, and the API server and the webhook both warn about it.",
            body,
        )
    ]


# -- cert-manager, its own step -----------------------------------------------------------------------


def cert_manager(o: InstallOptions) -> list[Document]:
    ns = o.namespace
    serving = f"{NAME}-serving"
    issuer_ref = {"kind": "Issuer", "group": "cert-manager.io"}
    return [
        Document(
            CERT_MANAGER_FILE,
            "Serving certificates from cert-manager (https://cert-manager.io), instead of `skill-webhook certs`.\n"
            "Apply after the namespace and before the Deployment has to start; then register the webhooks\n"
            "with the CA cert-manager made, and let its CA injector keep caBundle current:\n"
            "\n"
            f"  kubectl -n {ns} wait certificate/{serving} --for=condition=Ready\n"
            f"  kubectl -n {ns} get secret {TLS_SECRET} -o jsonpath='{{.data.ca\\.crt}}' | base64 -d > ca.crt\n"
            f"  skill-webhook ca-bundle --ca ca.crt {WEBHOOKS_FILE} | kubectl apply -f -\n"
            f"  kubectl annotate --overwrite mutatingwebhookconfiguration/{NAME} \\\n"
            f"      validatingwebhookconfiguration/{NAME} cert-manager.io/inject-ca-from={ns}/{serving}\n"
            "\n"
            "cert-manager renews the serving certificate into the Secret before it expires; the kubelet\n"
            "updates the mounted files and the webhook reloads them without a restart. The chain is\n"
            "self-signed Issuer -> CA Certificate -> CA Issuer -> serving Certificate, so the CA (and so\n"
            "the caBundle) stays the same across serving renewals.",
            {
                "apiVersion": "cert-manager.io/v1",
                "kind": "Issuer",
                "metadata": _meta(f"{NAME}-selfsigned", ns),
                "spec": {"selfSigned": {}},
            },
        ),
        Document(
            CERT_MANAGER_FILE,
            "The CA: 10 years, renewed 30 days before it ends.",
            {
                "apiVersion": "cert-manager.io/v1",
                "kind": "Certificate",
                "metadata": _meta(f"{NAME}-ca", ns),
                "spec": {
                    "isCA": True,
                    "commonName": f"{NAME}-ca",
                    "secretName": f"{NAME}-ca",
                    "duration": "87600h",
                    "renewBefore": "720h",
                    "privateKey": {"algorithm": "ECDSA", "size": 256},
                    "issuerRef": {**issuer_ref, "name": f"{NAME}-selfsigned"},
                },
            },
        ),
        Document(
            CERT_MANAGER_FILE,
            "",
            {
                "apiVersion": "cert-manager.io/v1",
                "kind": "Issuer",
                "metadata": _meta(f"{NAME}-ca", ns),
                "spec": {"ca": {"secretName": f"{NAME}-ca"}},
            },
        ),
        Document(
            CERT_MANAGER_FILE,
            f"The serving certificate for the Service name: 90 days, renewed 15 days before, into {TLS_SECRET}.",
            {
                "apiVersion": "cert-manager.io/v1",
                "kind": "Certificate",
                "metadata": _meta(serving, ns),
                "spec": {
                    "secretName": TLS_SECRET,
                    "commonName": f"{NAME}.{ns}.svc",
                    "dnsNames": [f"{NAME}.{ns}.svc", f"{NAME}.{ns}.svc.cluster.local"],
                    "duration": "2160h",
                    "renewBefore": "360h",
                    "usages": ["server auth", "digital signature"],
                    "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
                    "issuerRef": {**issuer_ref, "name": f"{NAME}-ca"},
                },
            },
        ),
    ]


# -- what the command prints and writes ---------------------------------------------------------------

Selection = Literal["install", "crd", "cert-manager"]


def printed(o: InstallOptions, selection: Selection = "install") -> str:
    """What `skill-webhook manifests` prints: one YAML stream of the selected set."""
    if selection == "crd":
        return render(crd(o))
    if selection == "cert-manager":
        return render(cert_manager(o))
    return render(install_documents(o))


def layout(o: InstallOptions, selection: Selection = "install") -> dict[str, str]:
    """What `skill-webhook manifests -o DIR` writes: relative path -> text."""
    if selection == "crd":
        return files(crd(o))
    if selection == "cert-manager":
        return files(cert_manager(o))
    return install_layout(o)
