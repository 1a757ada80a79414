"""The one definition of an AgentRuntime and its skills, shared by mutation, validation and tests.

Pydantic dataclasses with slots, frozen: the cache holds every AgentRuntime of the cluster, and a
BaseModel instance carries a `__dict__`, a set of the fields given and a dict of extra keys (about
550 bytes each, seven per AgentRuntime): loading 10,000 AgentRuntimes from one JSON file grew the
process by 69 MB with BaseModels, by 41 MB with these.
Keys the model does not name are ignored, never rejected (validation warns about unknown skill fields
from the object itself); `validated` is `model_validate`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple, TypeVar

from pydantic import ConfigDict, Field, TypeAdapter, field_validator
from pydantic.dataclasses import dataclass

from app.core.names import DEFAULT_DOMAIN, Domain

DEFAULT_AGENTRUNTIME_API = "agent.kagenti.dev/v1alpha1"
AGENTRUNTIME_KIND = "AgentRuntime"

ENV_SKILL_FOLDERS = "SKILL_FOLDERS"
VOLUME_PREFIX = "skill-"

MAX_SKILLS = 20
# A volume name is a DNS-1123 label of at most 63 characters and ours is "skill-" + the skill name,
# so a skill name may have 57. (The seed operator allowed 58, which overflows.)
MAX_SKILL_NAME_LENGTH = 63 - len(VOLUME_PREFIX)

RUNTIME_TYPES = ("agent", "tool")
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
TARGET_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "Pod", "Sandbox")

DEFAULT_SIDECAR_NAMES = (
    "envoy-proxy",
    "authbridge-proxy",
    "spiffe-helper",
    "kagenti-client-registration",
    "istio-proxy",
    "linkerd-proxy",
    "vault-agent",
    "cloud-sql-proxy",
)


def api_group(api_version: str) -> str:
    """The group of an apiVersion: the part before "/", empty for the core group ("v1")."""
    group, sep, _ = api_version.rpartition("/")
    return group if sep else ""


def volume_name(skill_name: str) -> str:
    return VOLUME_PREFIX + skill_name


T = TypeVar("T")
_MODEL = ConfigDict(extra="ignore")


def validated(model: type[T], raw: Any) -> T:
    """`raw` (a dict) as an instance of one of the models below; raises pydantic's ValidationError."""
    return _adapter(model).validate_python(raw)


@functools.cache
def _adapter(model: type[Any]) -> TypeAdapter[Any]:
    return TypeAdapter(model)


class WorkloadRef(NamedTuple):
    """A workload as AgentRuntimes name it; the version is left out because it never decides a match."""

    group: str
    kind: str
    name: str


@dataclass(frozen=True, slots=True, config=_MODEL)
class Skill:
    """One entry of spec.skills. Unknown keys are ignored (and warned about by validation)."""

    name: str
    image: str
    mountPath: str
    pullPolicy: str | None = None
    # A directory inside the image to mount instead of its root (the mount's subPath).
    path: str | None = None


@dataclass(frozen=True, slots=True, config=_MODEL)
class TargetRef:
    apiVersion: str = ""
    kind: str = ""
    name: str = ""

    @property
    def workload(self) -> WorkloadRef:
        return WorkloadRef(api_group(self.apiVersion), self.kind, self.name)


@dataclass(frozen=True, slots=True, config=_MODEL)
class AgentRuntimeSpec:
    """spec of an AgentRuntime. Fields of the wider ecosystem (identity, trace, authBridgeMode,
    mtlsMode, ...) are ignored, never rejected."""

    type: str | None = None
    targetRef: TargetRef | None = None
    skills: list[Skill] = Field(default_factory=list)

    @field_validator("skills", mode="before")
    @classmethod
    def _null_is_no_skills(cls, value: Any) -> Any:
        # `skills:` with nothing after it is null in YAML; Kubernetes reads a null list as absent.
        return [] if value is None else value


@dataclass(frozen=True, slots=True, config=_MODEL)
class ObjectMeta:
    name: str = ""
    namespace: str = ""
    uid: str = ""
    resourceVersion: str = ""
    # RFC 3339 in UTC ("2026-01-02T03:04:05Z") sorts correctly as a string, which is all we need.
    creationTimestamp: str = ""
    # As written (read through AgentRuntime.annotation); the cache keeps only the ones it reads.
    annotations: Any = None


@dataclass(frozen=True, slots=True, config=_MODEL)
class AgentRuntime:
    apiVersion: str = DEFAULT_AGENTRUNTIME_API
    kind: str = AGENTRUNTIME_KIND
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: AgentRuntimeSpec = Field(default_factory=AgentRuntimeSpec)
    # Not part of the resource: the problems the validating webhook would have refused this object for
    # (it may have been stored before the webhook existed, or read from a file), set by
    # `app.core.decode.cached_runtime` through `with_problems`. `for_cache` builds the cached model
    # from the fields it keeps, so no key of a stored object can set it.
    problems: tuple[str, ...] = ()

    def with_problems(self, problems: tuple[str, ...]) -> "AgentRuntime":
        return dataclasses.replace(self, problems=tuple(problems))

    @property
    def key(self) -> tuple[str, str]:
        return (self.metadata.namespace, self.metadata.name)

    @property
    def age_key(self) -> tuple[str, str]:
        """Sort key for "the oldest wins": creationTimestamp, then name."""
        return (self.metadata.creationTimestamp, self.metadata.name)

    @property
    def workload(self) -> WorkloadRef | None:
        ref = self.spec.targetRef
        return ref.workload if ref is not None else None

    @property
    def targets_a_workload(self) -> bool:
        """Whether the targetRef names a kind and a name, so that some pod could match it."""
        workload = self.workload
        return workload is not None and bool(workload.kind) and bool(workload.name)

    @classmethod
    def from_object(cls, obj: dict[str, Any]) -> "AgentRuntime":
        return validated(cls, obj)

    def annotation(self, key: str) -> str | None:
        annotations = self.metadata.annotations
        value = annotations.get(key) if isinstance(annotations, dict) else None
        return value if isinstance(value, str) else None

    @classmethod
    def for_cache(cls, obj: dict[str, Any], domain: Domain = DEFAULT_DOMAIN, skills: Any = None) -> "AgentRuntime":
        """The AgentRuntime with only what admission and the reconciler read: managedFields, labels,
        other annotations (kubectl's last-applied copy doubles every object) and unknown spec fields
        stay out of the cache, which holds every AgentRuntime of the cluster. `skills`, when given,
        replaces spec.skills (the list decoded from the `<domain>/skill-images` annotation)."""
        metadata = obj.get("metadata")
        spec = obj.get("spec")
        kept_meta = {k: metadata[k] for k in _CACHED_METADATA if k in metadata} if isinstance(metadata, dict) else metadata
        if isinstance(metadata, dict) and isinstance(metadata.get("annotations"), dict):
            read = {key: metadata["annotations"].get(key) for key in (domain.skills_rollout, domain.skill_delivery)}
            if any(value is not None for value in read.values()):
                kept_meta["annotations"] = {key: value for key, value in read.items() if value is not None}
        kept_spec = {k: spec[k] for k in _CACHED_SPEC if k in spec} if isinstance(spec, dict) else spec
        if skills is not None:
            kept_spec = {**(kept_spec if isinstance(kept_spec, dict) else {}), "skills": skills}
        trimmed: dict[str, Any] = {"apiVersion": obj.get("apiVersion", DEFAULT_AGENTRUNTIME_API),
                                   "kind": obj.get("kind", AGENTRUNTIME_KIND)}
        if kept_meta is not None:
            trimmed["metadata"] = kept_meta
        if kept_spec is not None:
            trimmed["spec"] = kept_spec
        return validated(cls, trimmed)


_CACHED_METADATA = ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
_CACHED_SPEC = ("type", "targetRef", "skills")


def is_agentruntime(obj: Any, api_version: str = DEFAULT_AGENTRUNTIME_API) -> bool:
    return (
        isinstance(obj, dict)
        and obj.get("kind") == AGENTRUNTIME_KIND
        and api_group(str(obj.get("apiVersion", ""))) == api_group(api_version)
    )
