"""The rules of a skills list: count, names, images, mount paths, pull policies.

A list is declared in spec.skills or, where the installed CRD has no spec.skills (and the API server
prunes it), in the annotation `<domain>/skill-images` as a JSON array of the same entries (README
"Running beside the rossoctl operator"). `skills_source` finds the one list an object declares and
says where; `check_skills` checks it with field paths beneath that place.

This runs for every skill of every AgentRuntime CREATE, UPDATE and dry run, so field paths are only
built when there is something to report, and the per-value checks are cached.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any, Callable, NamedTuple

from app.core.documents import DocumentError, load_json
from app.core.model import MAX_SKILL_NAME_LENGTH, MAX_SKILLS, PULL_POLICIES, Skill
from app.core.names import DEFAULT_DOMAIN, Domain

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
BOTH_FORMS_MESSAGE = "declare skills in spec.skills or in the annotation, not both"


class SkillsSource(NamedTuple):
    """The skills list an AgentRuntime declares, as found (not yet checked)."""

    raw: Any  # the list (or whatever stands there); None when the object declares no skills
    path: FieldPath  # spec.skills, or metadata.annotations[<domain>/skill-images]
    errors: tuple[f.FieldError, ...]  # the annotation is not a JSON array, or both forms are used


def annotation_path(domain: Domain) -> FieldPath:
    return FieldPath(("metadata", "annotations")).key(domain.skill_images)


def skills_source(obj: Any, domain: Domain = DEFAULT_DOMAIN) -> SkillsSource:
    """Where `obj` (a raw AgentRuntime) declares its skills: spec.skills, or the `<domain>/skill-images`
    annotation decoded from JSON. Never raises. With errors, `raw` is spec.skills (when present) so
    that its own problems are still reported; a cache must treat any error as an invalid object."""
    spec = obj.get("spec") if isinstance(obj, dict) else None
    spec_skills = spec.get("skills") if isinstance(spec, dict) else None
    metadata = obj.get("metadata") if isinstance(obj, dict) else None
    annotations = metadata.get("annotations") if isinstance(metadata, dict) else None
    text = annotations.get(domain.skill_images) if isinstance(annotations, dict) else None
    if text is None:
        return SkillsSource(spec_skills, SKILLS_PATH, ())
    path = annotation_path(domain)
    if not isinstance(text, str):
        error = f.invalid(path, type_name(text), "must be a string (annotation values are strings)")
        return SkillsSource(spec_skills, SKILLS_PATH, (error,))
    if spec_skills is not None:
        return SkillsSource(spec_skills, SKILLS_PATH, (f.forbidden(path, BOTH_FORMS_MESSAGE),))
    try:
        value = load_json(text)
    except DocumentError as err:
        return SkillsSource(None, path, (f.invalid(path, text, f"not valid JSON: {err}"),))
    if not isinstance(value, list):
        detail = 'must be a JSON array of skills, e.g. [{"name": ..., "image": ..., "mountPath": ...}]'
        return SkillsSource(None, path, (f.invalid(path, type_name(value), detail),))
    return SkillsSource(value, path, ())


def check_skills(
    raw: Any, findings: Findings, registry_allow: tuple[str, ...], base: FieldPath = SKILLS_PATH
) -> None:
    """Every rule of one skills list declared at `base` (spec.skills or the annotation)."""
    if raw is None:
        return
    if not isinstance(raw, list):
        findings.add(f.invalid(base, type_name(raw), "must be a list"))
        return
    if len(raw) > MAX_SKILLS:
        findings.add(f.too_many(base, len(raw), MAX_SKILLS))

    def _at(i: int, key: str) -> FieldPath:
        return base.index(i).child(key)

    names: set[str] = set()
    mount_paths: list[tuple[int, paths.Components]] = []
    unpinned: list[str] = []
    for i, item in enumerate(raw[:MAX_EXAMINED_SKILLS]):
        if not isinstance(item, dict):
            findings.add(f.invalid(base.index(i), type_name(item), "must be an object"))
            continue
        skill = findings.typed(Skill, item, base.index(i))
        if skill is None:  # check what is well-typed; the type errors are already reported
            values = {k: v for k, v in item.items() if k in SKILL_FIELDS and isinstance(v, str)}
            name, image = values.get("name"), values.get("image")
            mount_path, pull_policy = values.get("mountPath"), values.get("pullPolicy")
        else:
            name, image, mount_path, pull_policy = skill.name, skill.image, skill.mountPath, skill.pullPolicy
        name_ok = name is not None and _check_name(_at(i, "name"), name, names, findings)
        if name_ok:
            names.add(name)
        if image is not None:
            reference = _check_image(_at(i, "image"), image, pull_policy, registry_allow, findings)
            if reference is not None and not reference.pinned:
                unpinned.append(name if name_ok else str(base.index(i)))
        if mount_path is not None and _check_mount_path(_at(i, "mountPath"), mount_path, findings):
            mount_paths.append((i, paths.components(mount_path)))
        if pull_policy is not None and pull_policy not in PULL_POLICIES:
            findings.add(f.not_supported(_at(i, "pullPolicy"), pull_policy, PULL_POLICIES))
        if not item.keys() <= SKILL_FIELDS:
            for key in item:
                if isinstance(key, str) and key not in SKILL_FIELDS:
                    # The CRD's schema prunes unknown skill fields, so they never reach a pod.
                    findings.warn(_at(i, key), "unknown field, ignored")
    _check_overlaps(raw, mount_paths, findings, _at)
    if unpinned:
        count = "1 skill image is" if len(unpinned) == 1 else f"{len(unpinned)} skill images are"
        findings.warn(
            base,
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


def _check_name(path: FieldPath, name: str, seen: set[str], findings: Findings) -> bool:
    """True when the name is valid (duplicates are reported here, and are valid names)."""
    if not name:
        findings.add(f.required(path))
        return False
    problems = skill_name_problems(name)
    for problem in problems:
        findings.add(f.invalid(path, name, problem))
    if not problems and name in seen:
        findings.add(f.duplicate(path, name))
    return not problems


def allow_list_message(image: str, registry_allow: tuple[str, ...]) -> str:
    return f"image {json.dumps(image)} is not in the registry allow-list ({', '.join(registry_allow)})"


def _check_image(
    path: FieldPath, image: str, pull_policy: str | None, registry_allow: tuple[str, ...], findings: Findings
) -> oci.ImageReference | None:
    if not image:
        findings.add(f.required(path))
        return None
    try:
        reference = oci.parse_reference(image)
    except oci.InvalidImageReference as problem:
        findings.add(f.invalid(path, image, f"not a valid OCI image reference: {problem}"))
        return None
    if registry_allow and not oci.registry_allowed(reference, registry_allow):
        findings.add(f.forbidden(path, allow_list_message(image, registry_allow)))
    if reference.floating and pull_policy != "Always":
        findings.warn(
            path,
            f"{json.dumps(image)} has no fixed version (tag latest or none) and pullPolicy is not Always: "
            "nodes may keep mounting an older copy",
        )
    return reference


def _check_mount_path(path: FieldPath, mount_path: str, findings: Findings) -> bool:
    if not mount_path:
        findings.add(f.required(path))
        return False
    problems = paths.mount_path_problems(mount_path)
    for problem in problems:
        findings.add(f.invalid(path, mount_path, problem))
    if "," in mount_path:
        # SKILL_FOLDERS is comma-separated: an agent splitting it would see two folders, neither real.
        findings.warn(path, f"{json.dumps(mount_path)} contains \",\", which SKILL_FOLDERS uses as separator")
    return not problems


def _check_overlaps(
    raw: list, mount_paths: list[tuple[int, paths.Components]], findings: Findings, at: Callable[[int, str], FieldPath]
) -> None:
    """Two skills on one directory, or one inside another: one image would hide the other."""
    owners = paths.first_owners(mount_paths)
    for i, parts in mount_paths:
        first = owners[parts]
        if first != i:
            findings.add(
                f.duplicate(at(i, "mountPath"), raw[i]["mountPath"], f"same directory as {at(first, 'mountPath')}")
            )
            continue
        outer = paths.first_enclosing(parts, owners)
        if outer is not None:
            outer_path = json.dumps(paths.normalise(raw[outer]["mountPath"]))
            findings.add(
                f.invalid(
                    at(i, "mountPath"), raw[i]["mountPath"], f"must not be beneath {at(outer, 'mountPath')} ({outer_path})"
                )
            )
