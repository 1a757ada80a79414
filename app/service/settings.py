"""One settings object for `serve`: every field is a `--flag` and a `SKILL_WEBHOOK_<FLAG>` variable."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.core.mutation.puller import (
    DEFAULT_MAX_FILES, DEFAULT_PULLER_IMAGE, DEFAULT_PULLER_NAME, DEFAULT_SIZE_LIMIT, PullerConfig, check_configmap_name,
    check_container_name, check_image, check_quantity, quantity_bytes,
)

from app.core.names import Domain
# The options other commands share with `serve` are declared (default, description, rule) in one place.
from app.service.cli.options import SHARED, parse_duration, split_list

__all__ = ["Duration", "SERVICE_ACCOUNT_TOKEN", "Settings", "parse_duration", "split_list"]

SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")

# Seconds, written as a duration or a number.
Duration = Annotated[float, BeforeValidator(parse_duration)]


def _shared(name: str) -> Any:
    """The field of a shared option: its default and description as `SHARED` declares them."""
    return Field(SHARED[name].default, description=SHARED[name].help)


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
    registry_allow: str = _shared("registry_allow")
    sidecar_names: str = _shared("sidecar_names")
    kubeconfig: Path | None = _shared("kubeconfig")
    agentruntime_api: str = _shared("agentruntime_api")
    domain: str = _shared("domain")
    # Skill changes reaching running pods (docs/skill-changes.md).
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
    # The skill supply chain (docs/registries.md).
    resolve_interval: Duration = Field(300.0, description="re-resolve skill image tags this often (0: resolver off)")
    resolve_concurrency: int = Field(8, ge=1, le=64, description="registry requests in flight at once")
    resolve_timeout: Duration = _shared("resolve_timeout")
    registry_auth: Path | None = _shared("registry_auth")
    registry_ca: Path | None = _shared("registry_ca")
    insecure_registries: str = _shared("insecure_registries")
    pin_digests: Literal["off", "on", "required"] = _shared("pin_digests")
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
        DEFAULT_SIZE_LIMIT, description="extraction: the most file content the puller unpacks per skill (each skill's "
        "emptyDir sizeLimit adds 4 KiB per --extract-max-files entry, for blocks on disk)"
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
    log_format: Literal["json", "text"] = Field(
        "json", description="log format: json (one JSON object per line) or text (for a terminal)"
    )
    backlog: int = Field(2048, ge=1, description="listen backlog of the HTTPS socket")

    @field_validator("agentruntime_api", "domain", "registry_allow", "insecure_registries")
    @classmethod
    def _shared_rule(cls, value: str, info: ValidationInfo) -> str:
        # The rule every command applies to this option (app.service.cli.options).
        return SHARED[str(info.field_name)].check(value)  # type: ignore[misc]

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
