"""The rules of spec.skills (SPEC §5): count, names, images, mount paths, pull policies.

This runs for every skill of every AgentRuntime CREATE, UPDATE and dry run, so field paths are only
built when there is something to report, and the per-value checks are cached.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

from app.core.model import MAX_SKILL_NAME_LENGTH, MAX_SKILLS, PULL_POLICIES, Skill

from . import fields as f
from . import oci, paths
from .fields import FieldPath
from .findings import Findings, type_name

# Beyond this many items only the count is reported: it bounds the work and the message for a
# hostile 3 MiB list while still showing every problem of any list a person would write.
MAX_EXAMINED_SKILLS = 5 * MAX_SKILLS

DNS1123_LABEL_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DNS1123_LABEL_MESSAGE = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must "
    "start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for "
    "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
SKILL_FIELDS = frozenset(Skill.model_fields)
SKILLS_PATH = FieldPath(("spec", "skills"))


def check_skills(raw: Any, findings: Findings, registry_allow: tuple[str, ...]) -> None:
    if raw is None:
        return
    if not isinstance(raw, list):
        findings.add(f.invalid(SKILLS_PATH, type_name(raw), "must be a list"))
        return
    if len(raw) > MAX_SKILLS:
        findings.add(f.too_many(SKILLS_PATH, len(raw), MAX_SKILLS))
    names: set[str] = set()
    mount_paths: list[tuple[int, paths.Components]] = []
    unpinned: list[str] = []
    for i, item in enumerate(raw[:MAX_EXAMINED_SKILLS]):
        if not isinstance(item, dict):
            findings.add(f.invalid(SKILLS_PATH.index(i), type_name(item), "must be an object"))
            continue
        skill = findings.typed(Skill, item, ("spec", "skills", i))
        if skill is None:  # check what is well-typed; the type errors are already reported
            values = {k: v for k, v in item.items() if k in SKILL_FIELDS and isinstance(v, str)}
            name, image = values.get("name"), values.get("image")
            mount_path, pull_policy = values.get("mountPath"), values.get("pullPolicy")
        else:
            name, image, mount_path, pull_policy = skill.name, skill.image, skill.mountPath, skill.pullPolicy
        name_ok = name is not None and _check_name(i, name, names, findings)
        if name_ok:
            names.add(name)
        if image is not None:
            reference = _check_image(i, image, pull_policy, registry_allow, findings)
            if reference is not None and not reference.pinned:
                unpinned.append(name if name_ok else f"spec.skills[{i}]")
        if mount_path is not None and _check_mount_path(i, mount_path, findings):
            mount_paths.append((i, paths.components(mount_path)))
        if pull_policy is not None and pull_policy not in PULL_POLICIES:
            findings.add(f.not_supported(_at(i, "pullPolicy"), pull_policy, PULL_POLICIES))
        if not item.keys() <= SKILL_FIELDS:
            for key in item:
                if isinstance(key, str) and key not in SKILL_FIELDS:
                    # The CRD's schema prunes unknown skill fields, so they never reach a pod.
                    findings.warn(_at(i, key), "unknown field, ignored")
    _check_overlaps(raw, mount_paths, findings)
    if unpinned:
        count = "1 skill image is" if len(unpinned) == 1 else f"{len(unpinned)} skill images are"
        findings.warn(
            SKILLS_PATH,
            f"{count} not pinned by digest ({', '.join(unpinned)}): a tag can be moved, so pods created "
            "later may mount other content; use image@sha256:<digest>",
        )


@functools.lru_cache(maxsize=4096)
def skill_name_problems(name: str) -> tuple[str, ...]:
    """Why a non-empty skill name is not usable (empty when it is)."""
    problems: list[str] = []
    if len(name) > MAX_SKILL_NAME_LENGTH:
        # Why 57: the volume is "skill-" + name and a volume name is a 63-character label.
        problems.append(f"must be no more than {MAX_SKILL_NAME_LENGTH} characters")
    if not DNS1123_LABEL_RE.fullmatch(name):
        problems.append(DNS1123_LABEL_MESSAGE)
    return tuple(problems)


def _at(i: int, key: str) -> FieldPath:
    return FieldPath(("spec", "skills", i, key))


def _check_name(i: int, name: str, seen: set[str], findings: Findings) -> bool:
    """True when the name is valid (duplicates are reported here, and are valid names)."""
    if not name:
        findings.add(f.required(_at(i, "name")))
        return False
    problems = skill_name_problems(name)
    for problem in problems:
        findings.add(f.invalid(_at(i, "name"), name, problem))
    if not problems and name in seen:
        findings.add(f.duplicate(_at(i, "name"), name))
    return not problems


def _check_image(
    i: int, image: str, pull_policy: str | None, registry_allow: tuple[str, ...], findings: Findings
) -> oci.ImageReference | None:
    if not image:
        findings.add(f.required(_at(i, "image")))
        return None
    try:
        reference = oci.parse_reference(image)
    except oci.InvalidImageReference as problem:
        findings.add(f.invalid(_at(i, "image"), image, f"not a valid OCI image reference: {problem}"))
        return None
    if registry_allow and not oci.registry_allowed(reference, registry_allow):
        findings.add(
            f.invalid(
                _at(i, "image"),
                image,
                f"registry {json.dumps(reference.name)} is not allowed; allowed: {f.quote_all(registry_allow)}",
            )
        )
    if reference.floating and pull_policy != "Always":
        findings.warn(
            _at(i, "image"),
            f"{json.dumps(image)} has no fixed version (tag latest or none) and pullPolicy is not Always: "
            "nodes may keep mounting an older copy",
        )
    return reference


def _check_mount_path(i: int, mount_path: str, findings: Findings) -> bool:
    if not mount_path:
        findings.add(f.required(_at(i, "mountPath")))
        return False
    problems = paths.mount_path_problems(mount_path)
    for problem in problems:
        findings.add(f.invalid(_at(i, "mountPath"), mount_path, problem))
    if "," in mount_path:
        # SKILL_FOLDERS is comma-separated: an agent splitting it would see two folders, neither real.
        findings.warn(_at(i, "mountPath"), f"{json.dumps(mount_path)} contains \",\", which SKILL_FOLDERS uses as separator")
    return not problems


def _check_overlaps(raw: list, mount_paths: list[tuple[int, paths.Components]], findings: Findings) -> None:
    """Two skills on one directory, or one inside another: one image would hide the other."""
    owners = paths.first_owners(mount_paths)
    for i, parts in mount_paths:
        first = owners[parts]
        if first != i:
            findings.add(
                f.duplicate(_at(i, "mountPath"), raw[i]["mountPath"], f"same directory as {_at(first, 'mountPath')}")
            )
            continue
        outer = paths.first_enclosing(parts, owners)
        if outer is not None:
            outer_path = json.dumps(paths.normalise(raw[outer]["mountPath"]))
            findings.add(
                f.invalid(
                    _at(i, "mountPath"), raw[i]["mountPath"], f"must not be beneath {_at(outer, 'mountPath')} ({outer_path})"
                )
            )
