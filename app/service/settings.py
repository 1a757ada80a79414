"""One settings object for `serve`: every field is a `--flag` and a `SKILL_WEBHOOK_<FLAG>` variable."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.core.model import DEFAULT_AGENTRUNTIME_API, DEFAULT_SIDECAR_NAMES

SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


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
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="log level")
    log_format: Literal["json", "text"] = Field("json", description="log format")
    backlog: int = Field(2048, ge=1, description="listen backlog of the HTTPS socket")

    @field_validator("agentruntime_api")
    @classmethod
    def _group_version(cls, value: str) -> str:
        if value.count("/") != 1 or not all(value.split("/")):
            raise ValueError('must be "<group>/<version>", e.g. agent.kagenti.dev/v1alpha1')
        return value

    @property
    def sidecars(self) -> frozenset[str]:
        return frozenset(n.strip() for n in self.sidecar_names.split(",") if n.strip())

    @property
    def registries(self) -> tuple[str, ...]:
        return tuple(r.strip() for r in self.registry_allow.split(",") if r.strip())

    def in_cluster(self) -> bool:
        return SERVICE_ACCOUNT_TOKEN.exists()

    def resolved_source(self) -> Literal["kube", "file"]:
        """--source auto: the informer in a cluster or with a kubeconfig, else the file source."""
        if self.source != "auto":
            return self.source
        return "kube" if (self.kubeconfig is not None or self.in_cluster()) else "file"
