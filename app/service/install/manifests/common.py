"""What every part of the install manifests shares: the options, the names, the document type and
the YAML rendering (docs/installing.md)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal

import yaml

from app.core.model import DEFAULT_AGENTRUNTIME_API
from app.core.names import DEFAULT_DOMAIN_PREFIX, Domain, check_domain
from app.service.install.certs import DEFAULT_NAMESPACE, DEFAULT_SERVICE
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
NODES_ROLE = "skill-webhook-nodes"

# File layout of `-o DIR`.
KUSTOMIZATION = "kustomization.yaml"
RECONCILER_DIR = "reconciler"
# A sibling of reconciler/, not a child: a kustomization may not include its own parent directory
# (kustomize refuses the cycle: "candidate root ... contains visited root").
EVICT_DIR = "reconciler-evict"
CRD_FILE = "crd.yaml"
CERT_MANAGER_FILE = "cert-manager.yaml"
WEBHOOKS_FILE = "webhooks.yaml"

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_API_VERSION = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)+/v[0-9]+((alpha|beta)[0-9]+)?")

LABELS = {"app.kubernetes.io/name": NAME}


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


class Octal(int):
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


_Dumper.add_representer(Octal, lambda dumper, value: dumper.represent_scalar("tag:yaml.org,2002:int", f"0{value:o}"))


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


# -- object parts ------------------------------------------------------------------------------------


def meta(name: str, namespace: str | None = None, **labels: str) -> dict[str, Any]:
    """metadata: name, namespace (for namespaced objects), our labels plus `labels`."""
    result: dict[str, Any] = {"name": name}
    if namespace is not None:
        result["namespace"] = namespace
    result["labels"] = {**LABELS, **labels}
    return result


def service_account_subject(o: InstallOptions) -> list[dict[str, str]]:
    return [{"kind": "ServiceAccount", "name": NAME, "namespace": o.namespace}]


def binding(kind: str, name: str, role_kind: str, o: InstallOptions, namespace: str | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": kind,
        "metadata": meta(name, namespace),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": name},
        "subjects": service_account_subject(o),
    }

