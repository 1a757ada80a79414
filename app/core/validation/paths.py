"""Mount paths: normalisation and component-wise containment.

Paths are compared as tuples of components, never as strings: "/devices" is not beneath "/dev", and
"/a" does not contain "/ab". Normalisation only removes what cannot change the meaning of a path
(repeated "/", "." components, a trailing "/"); ".." is refused before it, because resolving it
lexically would disagree with the container's view when a component is a symlink.
"""

from __future__ import annotations

import re
from typing import Iterable, Mapping

from app.core.validation.caching import cached_when_short

Components = tuple[str, ...]

# Linux's PATH_MAX; the CRD's schema bounds the field the same way (its CEL rules need a bound).
MAX_MOUNT_PATH_LENGTH = 4096

# Kernel and credential trees: an image mounted over them hides what the runtime put there.
RESERVED_TREES: tuple[Components, ...] = (
    ("proc",),
    ("sys",),
    ("dev",),
    ("var", "run", "secrets"),
    ("run", "secrets"),
)
# Mounting over these replaces the image's own system files, so the container would not start;
# their subdirectories (/etc/skills, /var/lib/x) are fine.
SYSTEM_DIRECTORIES: frozenset[Components] = frozenset(
    (name,) for name in ("bin", "boot", "etc", "lib", "lib64", "run", "sbin", "usr", "var")
) | {("var", "run")}  # /var/run is a link to /run on every distribution
# Files the kubelet bind-mounts into every container: a skill there would hide (or fail to hide) them.
KUBELET_FILES: frozenset[Components] = frozenset({("etc", "hosts"), ("etc", "hostname"), ("etc", "resolv.conf")})

# C0 control characters and DEL: a path with them cannot be typed, logged or compared by a person,
# and NUL ends the path for the kernel.
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_NAMES = {"\x00": "NUL", "\n": "newline", "\t": "tab", "\r": "carriage return", "\x7f": "DEL"}


# Cached: split afresh, mount paths measured 9 % of /validate (20 skills) and 5 % of /mutate in process.
@cached_when_short(maxsize=4096, longest=MAX_MOUNT_PATH_LENGTH)
def components(path: str) -> Components:
    """The path's components without empty and "." ones: "/a//b/./c/" -> ("a", "b", "c")."""
    return tuple(part for part in path.split("/") if part and part != ".")


def normalise(path: str) -> str:
    """"/a//b/./c/" -> "/a/b/c"; the root stays "/". For absolute paths without ".."."""
    return "/" + "/".join(components(path))


def is_within(path: Components, parent: Components) -> bool:
    """True when `path` is `parent` or beneath it, comparing whole components."""
    return path[: len(parent)] == parent


@cached_when_short(maxsize=4096, longest=MAX_MOUNT_PATH_LENGTH)
def mount_path_problems(path: str) -> tuple[str, ...]:
    """What is wrong with one mount path on its own (empty when nothing is). Cached: the same
    paths come back on every UPDATE and dry run."""
    problems: list[str] = []
    if len(path) > MAX_MOUNT_PATH_LENGTH:
        problems.append(f"must be no more than {MAX_MOUNT_PATH_LENGTH} characters")
    if not path.startswith("/"):
        problems.append("must be an absolute path")
    control = _CONTROL_RE.search(path)
    if control is not None:
        char = control.group()
        name = _CONTROL_NAMES.get(char, f"U+{ord(char):04X}")
        problems.append(f"must not contain control characters (found {name} at offset {control.start()})")
    elif any(part != part.strip() for part in path.split("/")):  # a tab or newline is said above
        problems.append("path components must not begin or end with whitespace")
    if ".." in path.split("/"):
        problems.append("must not contain '..'")
    if problems:
        return tuple(problems)
    parts = components(path)
    if not parts:
        return ("must not be the root directory",)
    if parts in SYSTEM_DIRECTORIES:
        return (f"must not be the system directory {normalise(path)}",)
    if parts in KUBELET_FILES:
        return (f"must not be {normalise(path)}, a file the kubelet writes into every container",)
    for tree in RESERVED_TREES:
        if is_within(parts, tree):
            return (f"must not be {normalise('/'.join(('', *tree)))} or beneath it",)
    return ()


def first_enclosing(path: Components, others: Mapping[Components, int]) -> int | None:
    """The owner in `others` (normalised path -> owner) of the outermost path that strictly
    contains `path`, or None; in O(depth), not O(number of paths)."""
    for depth in range(len(path)):
        owner = others.get(path[:depth])
        if owner is not None:
            return owner
    return None


def first_owners(paths: Iterable[tuple[int, Components]]) -> dict[Components, int]:
    """Normalised path -> the first owner that uses it."""
    owners: dict[Components, int] = {}
    for owner, parts in paths:
        owners.setdefault(parts, owner)
    return owners


# A skill's `path` inside its image: the mount's subPath. Kubernetes refuses an absolute subPath and
# one with "..", and its own limit is far longer than any directory name a skill image would use.
MAX_SKILL_PATH_LENGTH = 255


@cached_when_short(maxsize=4096, longest=4 * MAX_SKILL_PATH_LENGTH)
def skill_path_problems(path: str) -> tuple[str, ...]:
    """What is wrong with a skill's `path` (a directory inside the image; empty when nothing is)."""
    if not path:
        return ("must not be empty (leave path out to mount the whole image)",)
    problems: list[str] = []
    if len(path) > MAX_SKILL_PATH_LENGTH:
        problems.append(f"must be no more than {MAX_SKILL_PATH_LENGTH} characters")
    if path.startswith("/"):
        problems.append("must be a relative path inside the image (no leading '/')")
    control = _CONTROL_RE.search(path)
    if control is not None:
        char = control.group()
        name = _CONTROL_NAMES.get(char, f"U+{ord(char):04X}")
        problems.append(f"must not contain control characters (found {name} at offset {control.start()})")
    if ".." in path.split("/"):
        problems.append("must not contain '..'")
    if not problems and not components(path):
        problems.append("must name a directory inside the image, not its root (leave path out for that)")
    return tuple(problems)
