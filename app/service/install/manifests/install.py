"""The install set: namespace, service account and read-only RBAC, Deployment,
PodDisruptionBudget, Service, and the two webhook configurations."""

from __future__ import annotations

from typing import Any

from app.service.install.manifests.common import (
    HTTPS_PORT, LABELS, METRICS_PORT, NAME, NODES_ROLE, RUN_AS, TLS_MOUNT, TLS_SECRET, WEBHOOKS_FILE,
    Document, InstallOptions, Octal, binding, meta,
)


def namespace(o: InstallOptions) -> list[Document]:
    return [
        Document(
            "namespace.yaml",
            "The webhook's own namespace. The mutating webhook excludes it (kubernetes.io/metadata.name), so the\n"
            'webhook never waits on itself. Pod Security "restricted" holds the Deployment to least privilege.',
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": meta(
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
            "The identity of the webhook's pods. The token is mounted because the informers list and\n"
            "watch AgentRuntimes (and nodes, for --delivery auto); nothing else talks to the API server.",
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": meta(NAME, o.namespace),
                "automountServiceAccountToken": True,
            },
        ),
        Document(
            "rbac.yaml",
            f"Least privilege: the informer reads AgentRuntimes of {o.group} (LIST + WATCH, and GET for\n"
            "`kubectl auth can-i` and debugging) in every namespace, and nodes (below). Pods arrive in the\n"
            "AdmissionReview itself, so no access to pods, deployments or replicasets is needed. The\n"
            "reconciler's rights (pods, events, one Lease) are a separate set: reconciler/.",
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": meta(NAME),
                "rules": [{"apiGroups": [o.group], "resources": ["agentruntimes"], "verbs": ["get", "list", "watch"]}],
            },
        ),
        Document("rbac.yaml", "", binding("ClusterRoleBinding", NAME, "ClusterRole", o)),
        Document(
            "rbac.yaml",
            "Optional: --delivery auto reads each node's container runtime (LIST + WATCH nodes), because a node\n"
            "with containerd < 2.1 or CRI-O < 1.31 cannot mount image volumes and its pods would start without\n"
            "their skills; with such a node, skills are delivered by extraction. Delete this role and its\n"
            "binding to keep the webhook away from nodes: auto then decides from the API server's version\n"
            "alone (and says so at start).",
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRole",
                "metadata": meta(NODES_ROLE),
                "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["list", "watch"]}],
            },
        ),
        Document("rbac.yaml", "", binding("ClusterRoleBinding", NODES_ROLE, "ClusterRole", o)),
    ]


def deployment_args(o: InstallOptions) -> list[str]:
    """The `serve` flags of the Deployment; each is a field of the settings (docs/configuration.md)."""
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
        # Skills delivered by extraction are pulled by `skill-webhook pull`, in this very image.
        f"--puller-image={o.image}",
    ]


def deployment(o: InstallOptions) -> list[Document]:
    selector = {"matchLabels": dict(LABELS)}
    pod_labels = {**LABELS, "app.kubernetes.io/component": "admission-webhook"}
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
        "metadata": meta(NAME, o.namespace, **{"app.kubernetes.io/component": "admission-webhook"}),
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
                        {"name": "tls", "secret": {"secretName": TLS_SECRET, "defaultMode": Octal(0o440)}},
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
                "metadata": meta(NAME, o.namespace),
                "spec": {"minAvailable": 1, "selector": {"matchLabels": dict(LABELS)}},
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
                "metadata": meta(NAME, o.namespace),
                "spec": {
                    "type": "ClusterIP",
                    "selector": dict(LABELS),
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
        "metadata": meta(NAME),
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
        "metadata": meta(NAME),
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
            "Ignore (docs/installing.md).\n"
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


