"""The puller init container and its volumes: what the mutation adds to a pod with skills delivered
by extraction (docs/delivery.md). `skill-webhook pull` (app.service.cli.pull) is what it runs.

One puller per pod fetches every extracted skill, each into its `skill-<name>` emptyDir mounted at
`/skills/<name>`. It sees nothing else of the pod: the skill volumes, the pod's own pull secrets and,
when configured, a registry CA ConfigMap. It runs first, before an init container that redirects
traffic (Istio's istio-init, rossoctl's proxy-init) would send its registry requests to a proxy that
is not running yet.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, NamedTuple, Sequence

from app.core.model import volume_name
from app.core.validation.oci import InvalidImageReference, parse_reference

DEFAULT_PULLER_NAME = "skill-pull"
# The webhook's own image: the puller is `skill-webhook pull`. The shipped Deployment passes its image.
DEFAULT_PULLER_IMAGE = "ghcr.io/kagenti/skill-webhook:0.1.0"
PULLER_COMMAND = ("skill-webhook", "pull")
SKILLS_ROOT = "/skills"
PULL_SECRETS_DIR = "/var/run/skill-webhook/pull-secrets"
REGISTRY_CA_DIR = "/var/run/skill-webhook/registry-ca"
REGISTRY_CA_FILE = f"{REGISTRY_CA_DIR}/ca.crt"
REGISTRY_CA_VOLUME = "skill-pull-registry-ca"
PULLER_UID = 65532
DEFAULT_SIZE_LIMIT = "64Mi"
DEFAULT_MAX_FILES = 10_000
# The puller counts file content (`--max-bytes`), the kubelet the space the volume takes, and every
# file and directory takes whole blocks (4 KiB on ext4, XFS and tmpfs). A skill just under the byte
# limit made of many small files would go over an emptyDir sizeLimit equal to it, and the kubelet would
# evict the pod; so the sizeLimit allows one more block for every entry the puller may write.
ENTRY_BLOCK_BYTES = 4096

_QUANTITY = re.compile(r"(\d+)(Ki|Mi|Gi|Ti|k|M|G|T)?")
_UNITS = {None: 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
          "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def quantity_bytes(text: str) -> int:
    """Bytes of a Kubernetes memory quantity as an emptyDir sizeLimit is written ("64Mi", "100M",
    "1048576"); ValueError for anything else (fractions and exponents are not needed here)."""
    match = _QUANTITY.fullmatch(text.strip())
    if match is None or int(match.group(1)) == 0:
        raise ValueError(f'"{text}" is not a size such as 64Mi, 100M or 1Gi')
    return int(match.group(1)) * _UNITS[match.group(2)]


_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
# What a container's resources accept, as far as a setting needs it: a number with a suffix.
_RESOURCE = re.compile(r"\d+(\.\d+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?")


def check_container_name(value: str) -> str:
    if not _DNS_LABEL.fullmatch(value):
        raise ValueError(f'"{value}" is not a container name (a DNS-1123 label, e.g. {DEFAULT_PULLER_NAME})')
    return value


def check_image(value: str) -> str:
    if not value or any(c.isspace() for c in value):
        raise ValueError(f'"{value}" is not an image reference')
    return value


def check_configmap_name(value: str) -> str:
    if len(value) > 253 or not _DNS_SUBDOMAIN.fullmatch(value):
        raise ValueError(f'"{value}" is not a ConfigMap name')
    return value


def check_quantity(value: str) -> str:
    if not _RESOURCE.fullmatch(value):
        raise ValueError(f'"{value}" is not a Kubernetes quantity (e.g. 50m, 0.5, 64Mi, 1Gi)')
    return value


def pull_secret_volume(index: int) -> str:
    return f"skill-pull-secret-{index}"


@dataclass(frozen=True)
class PullerConfig:
    """How the puller is made: the settings `--puller-*`, `--extract-*`, and the registry settings it
    inherits from the webhook (`insecure_registries`; `registry_ca_configmap` only when the webhook
    itself has `--registry-ca`)."""

    name: str = DEFAULT_PULLER_NAME
    image: str = DEFAULT_PULLER_IMAGE
    size_limit: str = DEFAULT_SIZE_LIMIT
    max_files: int = DEFAULT_MAX_FILES
    insecure_registries: tuple[str, ...] = ()
    registry_ca_configmap: str | None = None
    cpu_request: str = "50m"
    memory_request: str = "64Mi"
    cpu_limit: str = "500m"
    memory_limit: str = "128Mi"

    @property
    def max_bytes(self) -> int:
        return quantity_bytes(self.size_limit)

    @property
    def volume_size_limit(self) -> str:
        """The sizeLimit of each skill's emptyDir: the byte limit and a block per entry."""
        total = self.max_bytes + self.max_files * ENTRY_BLOCK_BYTES
        return f"{total // 1024}Ki" if total % 1024 == 0 else str(total)


DEFAULT_PULLER = PullerConfig()


class PulledSkill(NamedTuple):
    """One skill as the puller is told to fetch it."""

    name: str
    reference: str
    path: str | None = None


def skill_volume(config: PullerConfig, skill_name: str) -> dict[str, Any]:
    """The emptyDir an extracted skill is unpacked into."""
    return {"name": volume_name(skill_name), "emptyDir": {"sizeLimit": config.volume_size_limit}}


def puller_volumes(config: PullerConfig, pull_secrets: Sequence[str | None]) -> list[dict[str, Any]]:
    """The volumes only the puller mounts: one per pull secret of the pod (by its index there; None
    for an entry without a name) and the registry CA ConfigMap. All optional: a missing Secret or
    ConfigMap must not keep the pod from starting when the registry does not need it."""
    volumes: list[dict[str, Any]] = []
    for index, secret in enumerate(pull_secrets):
        if secret is None:
            continue
        # 0444, not 0440: the files belong to root and the puller runs as 65532 without the pod's
        # fsGroup, so group-read would not let it read them; no other container mounts this volume.
        volumes.append({
            "name": pull_secret_volume(index),
            "secret": {"secretName": secret, "optional": True, "defaultMode": 0o444},
        })
    if config.registry_ca_configmap:
        volumes.append(
            {"name": REGISTRY_CA_VOLUME, "configMap": {"name": config.registry_ca_configmap, "optional": True}}
        )
    return volumes


def puller_container(
    config: PullerConfig, skills: Sequence[PulledSkill], pull_secrets: Sequence[str | None]
) -> dict[str, Any]:
    """The init container that fetches `skills` (in spec order)."""
    args: list[str] = []
    hosts: list[str] = []
    for skill in skills:
        args += ["--skill", f"{skill.name}={skill.reference}"]
        if skill.path is not None:
            args += ["--skill-path", f"{skill.name}={skill.path}"]
        host = _registry(skill.reference)
        if host is not None and host in config.insecure_registries and host not in hosts:
            hosts.append(host)
    args += ["--skills-root", SKILLS_ROOT, "--max-bytes", str(config.max_bytes), "--max-files", str(config.max_files)]
    for host in hosts:
        args += ["--insecure-registry", host]
    if config.registry_ca_configmap:
        args += ["--registry-ca", REGISTRY_CA_FILE]
    if any(secret is not None for secret in pull_secrets):
        args += ["--registry-auth", PULL_SECRETS_DIR]
    mounts = [{"name": volume_name(s.name), "mountPath": f"{SKILLS_ROOT}/{s.name}"} for s in skills]
    mounts += [
        {"name": pull_secret_volume(i), "mountPath": f"{PULL_SECRETS_DIR}/{i}", "readOnly": True}
        for i, secret in enumerate(pull_secrets) if secret is not None
    ]
    if config.registry_ca_configmap:
        mounts.append({"name": REGISTRY_CA_VOLUME, "mountPath": REGISTRY_CA_DIR, "readOnly": True})
    return {
        "name": config.name,
        "image": config.image,
        "imagePullPolicy": "IfNotPresent",
        "command": list(PULLER_COMMAND),
        "args": args,
        "resources": {
            "requests": {"cpu": config.cpu_request, "memory": config.memory_request},
            "limits": {"cpu": config.cpu_limit, "memory": config.memory_limit},
        },
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": PULLER_UID,
            "runAsGroup": PULLER_UID,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": mounts,
    }


def is_puller(container: Mapping[str, Any], config: PullerConfig) -> bool:
    """Whether an init container is a puller this webhook added (its name and command)."""
    return container.get("name") == config.name and container.get("command") == list(PULLER_COMMAND)


def pulled_skills(container: Mapping[str, Any]) -> dict[str, str]:
    """Skill name -> reference, from a puller's `--skill NAME=REF` arguments."""
    args = container.get("args")
    if not isinstance(args, list):
        return {}
    found: dict[str, str] = {}
    for flag, value in zip(args, args[1:]):
        if flag == "--skill" and isinstance(value, str) and "=" in value:
            name, _, reference = value.partition("=")
            found[name] = reference
    return found


def _registry(reference: str) -> str | None:
    try:
        return parse_reference(reference).registry
    except InvalidImageReference:
        return None
