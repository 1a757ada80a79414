"""OCI image references: parse, check, and match against the registry allow-list.

The grammar is the one container runtimes use (github.com/distribution/reference):

    reference  := name [":" tag] ["@" digest]
    name       := [registry "/"] path            registry := host [":" port]
    path       := component ("/" component)*     component := [a-z0-9]+ (([._]|__|-+) [a-z0-9]+)*
    tag        := [\\w][\\w.-]{0,127}             digest := algorithm ":" lowercase hex

The first component of a name is the registry only when it looks like a host: it contains "." or
":", is "localhost", or has upper-case letters (paths cannot). Otherwise the image is on Docker
Hub ("docker.io"), and a one-component path there means "library/<path>" (official images). This
is how kubelet and containerd read an image, so the allow-list sees what the node will pull.

Digests are the two algorithms the OCI image spec registers: sha256 with 64 hex digits and sha512
with 128. Anything else could never be verified by a node, so it is an error rather than a guess.

We implement the grammar here rather than depending on a package: the few Python ports of it are
unmaintained, and the rules fit in a page.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

DOCKER_HUB = "docker.io"
# Spellings of Docker Hub that pull the same images as "docker.io".
_DOCKER_HUB_ALIASES = frozenset({"index.docker.io", "registry-1.docker.io"})
DOCKER_HUB_OFFICIAL_NAMESPACE = "library"
MAX_NAME_LENGTH = 255  # distribution's NameTotalLengthMax, for "registry/path"

_HOST_COMPONENT = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_REGISTRY_RE = re.compile(rf"(?:{_HOST_COMPONENT}(?:\.{_HOST_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?")
_PATH_COMPONENT_RE = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
# The OCI image spec's registered algorithms and the length of their hex encoding.
DIGEST_LENGTHS = {"sha256": 64, "sha512": 128}
_DIGEST_RE = re.compile(r"sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128}")
_HEX_RE = re.compile(r"[0-9a-fA-F]+")
_UNPRINTABLE_OR_SPACE_RE = re.compile(r"[\s\x00-\x1f\x7f]")


class InvalidImageReference(ValueError):
    """Why a string is not an image reference; the message is a short lower-case phrase."""


@dataclass(frozen=True)
class ImageReference:
    """A parsed reference, normalised as a node would pull it (Docker Hub spelled "docker.io",
    its official images under "library/")."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def pinned(self) -> bool:
        return self.digest is not None

    @property
    def floating(self) -> bool:
        """Unpinned and tagged `latest` or not at all: what the node runs can change underneath."""
        return self.digest is None and (self.tag is None or self.tag == "latest")

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"

    def __str__(self) -> str:
        text = self.name
        if self.tag is not None:
            text += ":" + self.tag
        if self.digest is not None:
            text += "@" + self.digest
        return text


def parse_reference(text: str) -> ImageReference:
    """Parse an image reference; raises InvalidImageReference saying what is wrong."""
    if not text:
        raise InvalidImageReference("must not be empty")
    if _UNPRINTABLE_OR_SPACE_RE.search(text):
        raise InvalidImageReference("must not contain whitespace or control characters")
    name_and_tag, at, digest = text.partition("@")
    if at:
        _check_digest(digest)
    slash = name_and_tag.rfind("/")
    colon = name_and_tag.rfind(":")
    tag: str | None = None
    name = name_and_tag
    if colon > slash:
        name, tag = name_and_tag[:colon], name_and_tag[colon + 1 :]
        if not _TAG_RE.fullmatch(tag):
            raise InvalidImageReference(
                "tag must be 1-128 characters of letters, digits, '_', '.' and '-', not starting with '.' or '-'"
            )
    registry, path = _repository(name)
    return ImageReference(registry, path, tag, digest if at else None)


def _repository(name: str) -> tuple[str, str]:
    """(registry, path) of a name without tag or digest, normalised; raises InvalidImageReference."""
    if not name:
        raise InvalidImageReference("repository name must not be empty")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidImageReference(f"repository name must not be more than {MAX_NAME_LENGTH} characters")
    registry, path = split_registry(name)
    if registry is not None and not _REGISTRY_RE.fullmatch(registry):
        raise InvalidImageReference(f"registry {registry!r} is not a valid host[:port]")
    _check_path(path)
    registry = _normalise_registry(registry)
    if registry == DOCKER_HUB and "/" not in path:
        path = f"{DOCKER_HUB_OFFICIAL_NAMESPACE}/{path}"
    return registry, path


def split_registry(name: str) -> tuple[str | None, str]:
    """(registry or None, path) of a name without tag or digest, by the host-looking rule."""
    first, slash, rest = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost" or first.lower() != first):
        return first, rest
    return None, name


# -- the registry allow-list ----------------------------------------------------------------------


@dataclass(frozen=True)
class RegistryPrefix:
    """One allow-list entry: a registry and a (possibly empty) leading run of path components.

    `ghcr.io` allows every image on ghcr.io; `ghcr.io/org` allows `ghcr.io/org/...` but not
    `ghcr.io/organisation/...` (whole components, never string prefixes); `localhost:5000` is a
    registry with a port. An entry whose first component does not look like a host follows the
    same rule as an image name and means a Docker Hub path (`bitnami` = `docker.io/bitnami`);
    official Docker Hub images are matched by `docker.io/library`.
    """

    registry: str
    path: tuple[str, ...] = ()

    def allows(self, reference: ImageReference) -> bool:
        # Host names are case-insensitive (and a port is digits).
        if reference.registry.lower() != self.registry:
            return False
        if not self.path:
            return True
        return tuple(reference.repository.split("/")[: len(self.path)]) == self.path

    def __str__(self) -> str:
        return "/".join((self.registry, *self.path))


def parse_registry_prefix(entry: str) -> RegistryPrefix:
    """Parse one allow-list entry (surrounding spaces and trailing "/" ignored); raises
    InvalidImageReference for an entry that could never match. Useful to check settings at start."""
    text = entry.strip().rstrip("/")
    if not text:
        raise InvalidImageReference("allow-list entry must not be empty")
    if "@" in text or _UNPRINTABLE_OR_SPACE_RE.search(text):
        raise InvalidImageReference(f"allow-list entry {entry!r} must be a registry or registry/path prefix")
    registry, path = split_registry(text)
    if registry is None and "/" not in text and ("." in text or ":" in text or text == "localhost"):
        # A lone host ("ghcr.io", "localhost:5000") is a registry, not a Docker Hub path.
        registry, path = text, ""
    if registry is not None and not _REGISTRY_RE.fullmatch(registry):
        raise InvalidImageReference(f"allow-list entry {entry!r}: {registry!r} is not a valid host[:port]")
    components = tuple(path.split("/")) if path else ()
    for component in components:
        if not _PATH_COMPONENT_RE.fullmatch(component):
            raise InvalidImageReference(
                f"allow-list entry {entry!r}: {component!r} is not a valid lower-case path component"
            )
    return RegistryPrefix(_normalise_registry(registry).lower(), components)


def registry_allowed(reference: str | ImageReference, allow_list: Iterable[str]) -> bool:
    """True when the image comes from a registry/prefix on the allow-list; an empty list allows
    all. An invalid reference is never allowed; invalid entries allow nothing."""
    entries = tuple(allow_list)
    if not entries:
        return True
    if isinstance(reference, str):
        try:
            reference = parse_reference(reference)
        except InvalidImageReference:
            return False
    for entry in entries:
        try:
            prefix = parse_registry_prefix(entry)
        except InvalidImageReference:
            continue
        if prefix.allows(reference):
            return True
    return False


def _normalise_registry(registry: str | None) -> str:
    """Docker Hub by one name. Other hosts keep their case so that the reference still reads the
    same (a lower-cased "Registry/x" would be a Docker Hub path); comparisons ignore it."""
    if registry is None:
        return DOCKER_HUB
    return DOCKER_HUB if registry.lower() in _DOCKER_HUB_ALIASES else registry


def _check_digest(digest: str) -> None:
    if _DIGEST_RE.fullmatch(digest):
        return
    algorithm, colon, encoded = digest.partition(":")
    if not colon or not algorithm:
        raise InvalidImageReference("digest must be sha256:<64 hex digits> or sha512:<128 hex digits>")
    length = DIGEST_LENGTHS.get(algorithm)
    if length is None:
        raise InvalidImageReference(f"digest algorithm {algorithm!r} is not supported (use sha256 or sha512)")
    if _HEX_RE.fullmatch(encoded) and len(encoded) == length:
        raise InvalidImageReference(f"{algorithm} digest must be lower-case hex")
    raise InvalidImageReference(f"{algorithm} digest must be {length} hex digits")


def _check_path(path: str) -> None:
    for component in path.split("/"):
        if _PATH_COMPONENT_RE.fullmatch(component):
            continue
        if not component:
            raise InvalidImageReference("repository path must not have empty components")
        if _PATH_COMPONENT_RE.fullmatch(component.lower()):
            raise InvalidImageReference("repository path must be lower-case")
        raise InvalidImageReference(
            f"repository path component {component!r} must be lower-case letters and digits, "
            "separated by '.', '_', '__' or '-'"
        )
