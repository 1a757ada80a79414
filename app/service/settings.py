"""One settings object for `serve`: every field is a `--flag` and a `SKILL_WEBHOOK_<FLAG>` variable."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import re
from typing import Annotated

from pydantic import BeforeValidator, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.core.mutation.puller import (
    DEFAULT_MAX_FILES, DEFAULT_PULLER_IMAGE, DEFAULT_PULLER_NAME, DEFAULT_SIZE_LIMIT, PullerConfig, check_configmap_name,
    check_container_name, check_image, check_quantity, quantity_bytes,
)

from app.core.model import DEFAULT_AGENTRUNTIME_API, DEFAULT_SIDECAR_NAMES
from app.core.names import DEFAULT_DOMAIN_PREFIX, Domain, check_domain
from app.core.validation.oci import InvalidImageReference, parse_registry_prefix

SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: object) -> float:
    """Seconds from a Go/Kubernetes duration ("500ms", "1m30s", "1h") or a plain number of seconds."""
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 30s, 5m or 1h, or a number of seconds")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        text = str(value).strip()
        try:
            seconds = float(text)
        except ValueError:
            parts = _DURATION_PART.findall(text)
            if not text or "".join(n + u for n, u in parts) != text:
                raise ValueError(f'"{text}" is not a duration such as 500ms, 30s, 5m or 1h') from None
            seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    if not seconds >= 0 or seconds == float("inf"):
        raise ValueError("must be a finite duration of zero or more")
    return seconds


# Seconds, written as a duration or a number.
Duration = Annotated[float, BeforeValidator(parse_duration)]


def split_list(value: str) -> tuple[str, ...]:
    """The entries of a comma-separated setting, trimmed, empty ones dropped."""
    return tuple(item.strip() for item in value.split(",") if item.strip())


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SKILL_WEBHOOK_", extra="ignore")

    source: Literal["auto", "kube", "file"] = Field(
        "auto", description="where AgentRuntimes come from: kube (informer), file, or auto"
    )
    runtimes: Path = Field(
        Path("manifests/samples"),
        description="file source: AgentRuntime YAML/JSON file or directory (reloaded on change)",
    )
    host: str = Field("0.0.0.0", description="address the HTTPS webhook listens on")
    port: int = Field(8443, ge=1, le=65535, description="HTTPS port of /mutate and /validate")
    metrics_host: str = Field("0.0.0.0", description="address of the plain-HTTP health/metrics listener")
    metrics_port: int = Field(8080, ge=0, le=65535, description="plain-HTTP port of /healthz /readyz /metrics (0: off)")
    tls_cert_file: Path | None = Field(None, description="serving certificate (PEM); reloaded when it changes")
    tls_key_file: Path | None = Field(None, description="serving key (PEM); reloaded when it changes")
    certs_dir: Path = Field(
        Path("certs"), description="file source without TLS files: where a CA and serving certificate are made"
    )
    image_volumes: Literal["auto", "on", "off"] = Field(
        "auto", description="inject image volumes: auto decides from the server version"
    )
    registry_allow: str = Field(
        "", description="comma-separated registry/prefix allow-list for skill images (empty: any)"
    )
    sidecar_names: str = Field(
        ",".join(DEFAULT_SIDECAR_NAMES), description="comma-separated container names never chosen as the agent"
    )
    kubeconfig: Path | None = Field(None, description="kubeconfig for the informer (implies --source kube under auto)")
    agentruntime_api: str = Field(DEFAULT_AGENTRUNTIME_API, description="group/version of AgentRuntime to read")
    domain: str = Field(
        DEFAULT_DOMAIN_PREFIX, description="prefix of every label and annotation read or written (rossoctl.io for rossoctl)"
    )
    # Skill changes reaching running pods (README "When skills change").
    reconcile: Literal["auto", "off", "report", "evict"] = Field(
        "auto", description="stale-pod reconciler: off, report, evict; auto is report with the kube source, off with files"
    )
    event_interval: Duration = Field(600.0, description="at most one SkillsChanged Event per AgentRuntime per this long")
    rollout_timeout: Duration = Field(300.0, description="evict: wait this long for a replacement pod to be Ready")
    leader_election_namespace: str = Field(
        "", description="namespace of the reconciler's Lease (default: the pod's own namespace, else skill-webhook)"
    )
    leader_election_lease_name: str = Field("skill-webhook-reconciler", description="name of the reconciler's Lease")
    leader_election_identity: str = Field("", description="this replica's identity in the Lease (default: hostname)")
    lease_duration: Duration = Field(15.0, description="leader election: how long a Lease is valid")
    renew_deadline: Duration = Field(10.0, description="leader election: the leader gives up if it cannot renew in this")
    retry_period: Duration = Field(2.0, description="leader election: time between attempts to acquire or renew")
    # The skill supply chain (README "Skill images and registries").
    resolve_interval: Duration = Field(300.0, description="re-resolve skill image tags this often (0: resolver off)")
    resolve_concurrency: int = Field(8, ge=1, le=64, description="registry requests in flight at once")
    resolve_timeout: Duration = Field(5.0, description="timeout of one registry request")
    registry_auth: Path | None = Field(None, description="docker config.json with registry credentials (reloaded on change)")
    registry_ca: Path | None = Field(None, description="PEM CA bundle trusted for registries, besides the system's")
    insecure_registries: str = Field("", description="comma-separated registries reached over plain HTTP")
    pin_digests: Literal["off", "on", "required"] = Field(
        "off", description="inject <repo>:<tag>@<digest>: on (when known), required (deny 503 while unknown), off"
    )
    verify_signatures: Literal["off", "warn", "enforce"] = Field(
        "off", description="cosign key-based signatures of skill images: off, warn, enforce"
    )
    cosign_key: str = Field("", description="comma-separated PEM public key files for --verify-signatures")
    # How skills reach pods (docs/delivery.md).
    delivery: Literal["auto", "image", "extract"] = Field(
        "auto", description="how skills reach pods: image (volumes), extract (an init container unpacks them), or "
        "auto (extract where image volumes cannot mount: API server, node runtimes, OCI artifacts)"
    )
    extract_size_limit: str = Field(
        DEFAULT_SIZE_LIMIT, description="extraction: sizeLimit of each skill's emptyDir, and the most the puller unpacks"
    )
    extract_max_files: int = Field(DEFAULT_MAX_FILES, ge=1, description="extraction: the most entries unpacked per skill")
    puller_name: str = Field(DEFAULT_PULLER_NAME, description="extraction: name of the puller init container")
    puller_image: str = Field(
        DEFAULT_PULLER_IMAGE, description="extraction: image of the puller init container (the webhook's own image)"
    )
    puller_ca_configmap: str = Field(
        "", description="extraction with --registry-ca: ConfigMap with ca.crt (in the pod's namespace, optional) "
        "mounted into the puller"
    )
    puller_cpu_request: str = Field("50m", description="extraction: CPU request of the puller")
    puller_memory_request: str = Field("64Mi", description="extraction: memory request of the puller")
    puller_cpu_limit: str = Field("500m", description="extraction: CPU limit of the puller")
    puller_memory_limit: str = Field("128Mi", description="extraction: memory limit of the puller")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="log level")
    log_format: Literal["json", "text"] = Field("json", description="log format")
    backlog: int = Field(2048, ge=1, description="listen backlog of the HTTPS socket")

    @field_validator("agentruntime_api")
    @classmethod
    def _group_version(cls, value: str) -> str:
        if value.count("/") != 1 or not all(value.split("/")):
            raise ValueError('must be "<group>/<version>", e.g. agent.kagenti.dev/v1alpha1')
        return value

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        return check_domain(value)

    @field_validator("registry_allow")
    @classmethod
    def _registry_prefixes(cls, value: str) -> str:
        # An entry that can match no image would silently deny every skill (or, mistyped, allow
        # none of the intended ones): refuse it at start, naming it.
        for entry in split_list(value):
            try:
                parse_registry_prefix(entry)
            except InvalidImageReference as err:
                raise ValueError(str(err)) from None
        return value

    @field_validator("extract_size_limit")
    @classmethod
    def _size_limit(cls, value: str) -> str:
        quantity_bytes(value)
        return value.strip()

    @field_validator("puller_name")
    @classmethod
    def _container_name(cls, value: str) -> str:
        return check_container_name(value)

    @field_validator("puller_image")
    @classmethod
    def _puller_image(cls, value: str) -> str:
        return check_image(value)

    @field_validator("puller_ca_configmap")
    @classmethod
    def _configmap(cls, value: str) -> str:
        return check_configmap_name(value) if value else value

    @field_validator("puller_cpu_request", "puller_memory_request", "puller_cpu_limit", "puller_memory_limit")
    @classmethod
    def _quantity(cls, value: str) -> str:
        return check_quantity(value)

    def puller(self) -> PullerConfig:
        """How the mutation makes the puller init container. It reaches registries as the webhook does: the
        insecure ones it names, and the CA only when the webhook has one and a ConfigMap carries it."""
        return PullerConfig(
            name=self.puller_name, image=self.puller_image, size_limit=self.extract_size_limit,
            max_files=self.extract_max_files, insecure_registries=self.insecure,
            registry_ca_configmap=(self.puller_ca_configmap or None) if self.registry_ca is not None else None,
            cpu_request=self.puller_cpu_request, memory_request=self.puller_memory_request,
            cpu_limit=self.puller_cpu_limit, memory_limit=self.puller_memory_limit,
        )

    @property
    def names(self) -> Domain:
        return Domain(self.domain)

    @property
    def sidecars(self) -> frozenset[str]:
        return frozenset(split_list(self.sidecar_names))

    @property
    def registries(self) -> tuple[str, ...]:
        return split_list(self.registry_allow)

    @property
    def insecure(self) -> tuple[str, ...]:
        return split_list(self.insecure_registries)

    @property
    def cosign_keys(self) -> tuple[Path, ...]:
        return tuple(Path(p) for p in split_list(self.cosign_key))

    def resolved_reconcile(self) -> Literal["off", "report", "evict"]:
        """--reconcile auto: report with the kube source (there are pods to watch), off with files."""
        if self.reconcile != "auto":
            return self.reconcile
        return "report" if self.resolved_source() == "kube" else "off"

    def in_cluster(self) -> bool:
        return SERVICE_ACCOUNT_TOKEN.exists()

    def resolved_source(self) -> Literal["kube", "file"]:
        """--source auto: the informer in a cluster or with a kubeconfig, else the file source."""
        if self.source != "auto":
            return self.source
        return "kube" if (self.kubeconfig is not None or self.in_cluster()) else "file"
