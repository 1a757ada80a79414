"""What the registry tells about a skill image, and the decisions made from it (docs/registries.md).

Pure data and rules: the resolver (app.sources.registry.resolver) fetches manifests and signatures and calls these;
`/mutate` and validation read `ImageFacts` from an `ImageFactsCache`, never the network.

Mountability follows what container runtimes accept for an image volume: an image manifest (OCI or
Docker schema 2) whose config is an image config. An OCI *artifact* (an empty or custom config media
type, or an `artifactType`) is pulled by containerd and mounted as an EMPTY directory, without an error,
so it is recognised here, at the API: `--delivery auto` extracts it instead (app.core.mutation.delivery).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field, replace
import threading
from typing import Any, Collection, Literal, Mapping

from app.core.validation.oci import InvalidImageReference, parse_reference

# -- media types ----------------------------------------------------------------------------------

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
COSIGN_SIMPLESIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
COSIGN_SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"

IMAGE_MANIFESTS = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEXES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
IMAGE_CONFIGS = frozenset({OCI_CONFIG, DOCKER_CONFIG})
# What a client asks for: the same four a node's runtime accepts, so the digest we learn is the one it pulls.
MANIFEST_ACCEPT = (OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST)

# -- skill metadata annotations -------------------------------------------------------------------

TITLE = "org.opencontainers.image.title"
DESCRIPTION = "org.opencontainers.image.description"
VERSION = "org.opencontainers.image.version"
SKILLIMAGE_STATUS = "io.skillimage.status"
AGENTSKILLS_NAME = "io.agentskills.skill.name"
# skillimage bundles: several skills in sub-directories of one image.
SKILLIMAGE_BUNDLE = "io.skillimage.bundle"
SKILLIMAGE_BUNDLE_SKILLS = "io.skillimage.bundle.skills"
DEPRECATED = "deprecated"

PREFERRED_PLATFORM = ("linux", "amd64")

Verdict = Literal["verified", "unverified", "unknown", "off"]


@dataclass(frozen=True)
class Mountability:
    """Whether image volumes can mount a manifest; `reason` says why not (empty when mountable)."""

    mountable: bool
    reason: str = ""


def manifest_mountability(media_type: str, manifest: Mapping[str, Any]) -> Mountability:
    """Decide for one image manifest (not an index): its media type, `artifactType` and config type."""
    media_type = manifest.get("mediaType") or media_type
    if media_type not in IMAGE_MANIFESTS:
        return Mountability(False, f"manifest media type {media_type or 'none'} is not an image manifest")
    if manifest.get("artifactType"):
        return Mountability(False, f"an OCI artifact (artifactType {manifest['artifactType']}), not an image")
    config = manifest.get("config")
    config_type = config.get("mediaType") if isinstance(config, Mapping) else None
    if config_type in IMAGE_CONFIGS:
        return Mountability(True)
    if config_type == OCI_EMPTY:
        return Mountability(False, "an OCI artifact with an empty config, not an image")
    return Mountability(False, f"an OCI artifact (config media type {config_type or 'none'}), not an image")


def config_media_type(manifest: Mapping[str, Any]) -> str:
    config = manifest.get("config")
    value = config.get("mediaType") if isinstance(config, Mapping) else None
    return value if isinstance(value, str) else ""


def is_index(media_type: str, manifest: Mapping[str, Any]) -> bool:
    return (manifest.get("mediaType") or media_type) in INDEXES


def choose_platform_entry(
    index: Mapping[str, Any], platform: tuple[str, str] = PREFERRED_PLATFORM
) -> Mapping[str, Any] | None:
    """The index entry a node would most likely pull: `platform` (os, architecture; the resolver
    assumes linux/amd64, the puller knows its node's) first, else the first entry.

    Attestation entries (`unknown/unknown`, as BuildKit writes them) are never chosen."""
    entries = [
        e for e in index.get("manifests") or ()
        if isinstance(e, Mapping) and isinstance(e.get("digest"), str)
        and _platform(e) != ("unknown", "unknown")
    ]
    for entry in entries:
        if _platform(entry) == platform:
            return entry
    return entries[0] if entries else None


def index_entry_mountability(entry: Mapping[str, Any] | None) -> Mountability | None:
    """Rule out an index entry from its descriptor alone; None when its manifest must be read."""
    if entry is None:
        return Mountability(False, "an index without image entries")
    media_type = entry.get("mediaType")
    if media_type in INDEXES:
        return Mountability(False, "an index of indexes, which image volumes do not follow")
    if media_type not in IMAGE_MANIFESTS:
        return Mountability(False, f"index entry media type {media_type or 'none'} is not an image manifest")
    if entry.get("artifactType"):
        return Mountability(False, f"an index of OCI artifacts (artifactType {entry['artifactType']})")
    return None


def _platform(entry: Mapping[str, Any]) -> tuple[str, str] | None:
    platform = entry.get("platform")
    if not isinstance(platform, Mapping):
        return None
    return (str(platform.get("os", "")), str(platform.get("architecture", "")))


def annotations_of(manifest: Mapping[str, Any]) -> dict[str, str]:
    value = manifest.get("annotations")
    if not isinstance(value, Mapping):
        return {}
    return {str(k): v for k, v in value.items() if isinstance(v, str)}


# -- references -----------------------------------------------------------------------------------


def pinned_reference(reference: str, digest: str) -> str:
    """`<repo>:<tag>@<digest>` as written (no tag: `<repo>@<digest>`); a reference that already names
    a digest is returned unchanged, since that is what the node pulls anyway."""
    if "@" in reference:
        return reference
    return f"{reference}@{digest}"


def signature_tag(digest: str) -> str:
    """cosign's signature tag for an image digest: `sha256:<hex>` -> `sha256-<hex>.sig`."""
    algorithm, _, encoded = digest.partition(":")
    return f"{algorithm}-{encoded}.sig"


def check_simple_signing(payload: bytes, expected_digest: str) -> str | None:
    """None when a cosign simple-signing payload names `expected_digest`; else why it does not."""
    try:
        document = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return "signature payload is not JSON"
    critical = document.get("critical") if isinstance(document, dict) else None
    image = critical.get("image") if isinstance(critical, dict) else None
    digest = image.get("docker-manifest-digest") if isinstance(image, dict) else None
    if not isinstance(digest, str):
        return "signature payload has no critical.image.docker-manifest-digest"
    if digest != expected_digest:
        return f"signature is for another digest ({digest})"
    return None


# -- what the resolver learns ---------------------------------------------------------------------


@dataclass(frozen=True)
class ImageFacts:
    """Everything known about one skill image reference, as written in an AgentRuntime.

    `digest` is None until the registry answered once; after that a failing lookup keeps the last
    digest and records `error`/`error_kind` (so a tag that stops resolving still pins what it was).
    `mountable` is None while unknown."""

    reference: str
    registry: str
    repository: str
    tag: str | None
    digest: str | None = None
    media_type: str = ""
    config_media_type: str = ""
    mountable: bool | None = None
    mount_reason: str = ""
    title: str | None = None
    description: str | None = None
    version: str | None = None
    status: str | None = None
    agentskills_name: str | None = None
    # The skills of a skillimage bundle (`io.skillimage.bundle=true`); None when it is not a bundle.
    bundle_skills: tuple[str, ...] | None = None
    signature: Verdict = "unknown"
    signature_reason: str = ""
    error: str | None = None
    # not_found, unauthorized, timeout, unreachable, server_error, tls, bad_response, invalid
    error_kind: str | None = None
    # When it was last asked, not a fact of the image: two lookups with the same answer are equal.
    resolved_at: dt.datetime | None = field(default=None, compare=False)

    @classmethod
    def unresolved(cls, reference: str) -> "ImageFacts":
        try:
            parsed = parse_reference(reference)
        except InvalidImageReference as exc:
            return cls(reference, "", "", None, error=f"invalid reference: {exc}", error_kind="invalid")
        return cls(reference, parsed.registry, parsed.repository, parsed.tag, digest=parsed.digest)

    @property
    def pinned(self) -> bool:
        """The reference itself names a digest."""
        return "@" in self.reference

    @property
    def deprecated(self) -> bool:
        return (self.status or "").lower() == DEPRECATED

    @property
    def tag_gone(self) -> bool:
        """The tag resolved once and now is not found (an archived skill): "tag no longer resolves"."""
        return self.error_kind == "not_found" and self.digest is not None and not self.pinned

    @property
    def agentskills_artifact(self) -> bool:
        """An agentskills OCI artifact: image volumes mount it empty, and its one top-level directory,
        named by `io.agentskills.skill.name`, is the skill."""
        return self.mountable is False and bool(self.agentskills_name)

    @property
    def pinned_reference(self) -> str | None:
        return pinned_reference(self.reference, self.digest) if self.digest else None

    def metadata(self) -> dict[str, str]:
        """The `skills-metadata` entry: version, description, digest, only those that are known."""
        found = {"version": self.version, "description": self.description, "digest": self.digest}
        return {k: v for k, v in found.items() if v}

    def with_error(self, kind: str, text: str, at: dt.datetime) -> "ImageFacts":
        """The same facts (last digest kept) with a failed lookup recorded."""
        return replace(self, error=text, error_kind=kind, resolved_at=at)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "reference": self.reference, "registry": self.registry, "repository": self.repository,
            "tag": self.tag, "digest": self.digest, "mediaType": self.media_type or None,
            "configMediaType": self.config_media_type or None, "mountable": self.mountable,
            "mountReason": self.mount_reason or None,
            "title": self.title, "description": self.description, "version": self.version,
            "status": self.status, "agentskillsName": self.agentskills_name,
            "bundleSkills": list(self.bundle_skills) if self.bundle_skills is not None else None,
            "signature": {"verdict": self.signature, "reason": self.signature_reason or None},
            "error": self.error,
            "resolvedAt": self.resolved_at.isoformat() if self.resolved_at else None,
        }
        if self.digest and not self.pinned:
            out["pinnedReference"] = self.pinned_reference
        return out


def skill_metadata(annotations: Mapping[str, str]) -> dict[str, Any]:
    """ImageFacts fields from manifest annotations (skillimage and agentskills layouts)."""
    return {
        "title": annotations.get(TITLE),
        "description": annotations.get(DESCRIPTION),
        "version": annotations.get(VERSION),
        "status": annotations.get(SKILLIMAGE_STATUS),
        "agentskills_name": annotations.get(AGENTSKILLS_NAME),
        "bundle_skills": bundle_skills(annotations),
    }


def bundle_skills(annotations: Mapping[str, str]) -> tuple[str, ...] | None:
    """The skills a skillimage bundle lists (`io.skillimage.bundle.skills`: a comma-separated list, or a
    JSON array); None unless `io.skillimage.bundle` is "true"."""
    if annotations.get(SKILLIMAGE_BUNDLE, "").strip().lower() != "true":
        return None
    text = annotations.get(SKILLIMAGE_BUNDLE_SKILLS, "").strip()
    names: list[Any] = []
    if text.startswith("["):
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        names = parsed if isinstance(parsed, list) else []
    else:
        names = text.split(",")
    return tuple(n.strip() for n in names if isinstance(n, str) and n.strip())


# -- what /mutate reads ---------------------------------------------------------------------------


class ImageFactsCache:
    """What the resolver knows, by image reference as written. Readers take one entry without a lock (a
    dict read is atomic under the GIL); writers set or drop entries under the lock, and `snapshot` copies
    under it, so that nothing iterates the dict while it changes."""

    def __init__(self, initial: Mapping[str, ImageFacts] | None = None) -> None:
        self._facts: dict[str, ImageFacts] = dict(initial or {})
        self._lock = threading.Lock()

    def facts(self, reference: str) -> ImageFacts | None:
        return self._facts.get(reference)

    def snapshot(self) -> dict[str, ImageFacts]:
        with self._lock:
            return dict(self._facts)

    def put(self, reference: str, facts: ImageFacts) -> None:
        with self._lock:
            self._facts[reference] = facts

    def keep_only(self, references: Collection[str]) -> None:
        """Drop the facts of every reference not in `references`."""
        with self._lock:
            for gone in self._facts.keys() - set(references):
                del self._facts[gone]

    def __len__(self) -> int:
        return len(self._facts)
