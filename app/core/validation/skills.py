"""The rules of a skills list: count, names, images, mount paths, pull policies.

A list is declared in spec.skills or, where the installed CRD has no spec.skills (and the API server
prunes it), in the annotation `<domain>/skill-images` as a JSON array of the same entries
(docs/rossoctl.md). `skills_source` finds the one list an object declares and says where;
`check_skills` checks it with field paths beneath that place.

This runs for every skill of every AgentRuntime CREATE, UPDATE and dry run, so the per-value checks
are cached (see app.core.validation.caching).
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any, Callable, NamedTuple

from app.core.parsing.documents import DocumentError, load_json
from app.core.model import MAX_SKILL_NAME_LENGTH, MAX_SKILLS, PULL_POLICIES, Skill
from app.core.names import DEFAULT_DOMAIN, Domain

from app.core.validation import fields as f
from app.core.validation import oci, paths
from app.core.validation.fields import FieldPath
from app.core.validation.caching import cached_when_short
from app.core.validation.findings import Findings, type_name

# Beyond this many items only the count is reported: it bounds the work and the message for a
# hostile 3 MiB list while still showing every problem of any list a person would write.
MAX_EXAMINED_SKILLS = 5 * MAX_SKILLS

DNS1123_LABEL_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DNS1123_LABEL_MESSAGE = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must "
    "start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for "
    "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
SKILL_FIELDS = frozenset(f.name for f in dataclasses.fields(Skill))
# The values of the AgentRuntime annotation `<domain>/skill-delivery` (app.core.mutation.delivery).
DELIVERY_VALUES = ("image", "extract")
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

    names: set[str] = set()
    mount_paths: list[tuple[int, paths.Components]] = []
    unpinned: list[str] = []
    # One pass. Each check of a value (name, image with its pull policy, mount path) is cached, since the
    # same values come back on every UPDATE, dry run and stored object, and a field's path is made only
    # for a finding.
    for i, item in enumerate(raw[:MAX_EXAMINED_SKILLS]):
        at = base.index(i)
        if not isinstance(item, dict):
            findings.add(f.invalid(at, type_name(item), "must be an object"))
            continue
        skill = findings.typed(Skill, item, at)
        if skill is not None:
            name, image, mount_path = skill.name, skill.image, skill.mountPath
            pull_policy, skill_path = skill.pullPolicy, skill.path
        else:  # its type errors are reported: the rules below check whatever is a string
            values = {k: v for k, v in item.items() if k in SKILL_FIELDS and isinstance(v, str)}
            name, image, mount_path = values.get("name"), values.get("image"), values.get("mountPath")
            pull_policy, skill_path = values.get("pullPolicy"), values.get("path")
        name_ok = name is not None and _check_name(at, name, names, findings)
        if name_ok:
            names.add(name)
        if image is not None:
            errors, warnings, pinned = image_verdict(image, pull_policy == "Always", registry_allow)
            if errors or warnings:
                path = at.child("image")
                for make, args in errors:
                    findings.add(make(path, *args))
                for text in warnings:
                    findings.warn(path, text)
            if pinned is False:
                unpinned.append(name if name_ok else str(at))
        if mount_path is not None and _check_mount_path(at, mount_path, findings):
            mount_paths.append((i, paths.components(mount_path)))
        if pull_policy is not None and pull_policy not in PULL_POLICIES:
            findings.add(f.not_supported(at.child("pullPolicy"), pull_policy, PULL_POLICIES))
        if skill_path is not None:
            for problem in paths.skill_path_problems(skill_path):
                findings.add(f.invalid(at.child("path"), skill_path, problem))
        if not item.keys() <= SKILL_FIELDS:
            _warn_unknown_fields(item, at, findings)
    if mount_paths:
        _check_overlaps(raw, mount_paths, findings, base)
    if unpinned:
        count = "1 skill image is" if len(unpinned) == 1 else f"{len(unpinned)} skill images are"
        findings.warn(
            base,
            f"{count} not pinned by digest ({', '.join(unpinned)}): a tag can be moved, so pods created "
            "later may mount other content; use image@sha256:<digest>",
        )


def _warn_unknown_fields(item: dict, path: FieldPath, findings: Findings) -> None:
    for key in item:
        if isinstance(key, str) and key not in SKILL_FIELDS:
            # The CRD's schema prunes unknown skill fields, so they never reach a pod.
            findings.warn(path.child(key), "unknown field, ignored")


@cached_when_short(maxsize=4096, longest=4 * MAX_SKILL_NAME_LENGTH)
def skill_name_problems(name: str) -> tuple[str, ...]:
    """Why a non-empty skill name is not usable (empty when it is)."""
    problems: list[str] = []
    if len(name) > MAX_SKILL_NAME_LENGTH:
        # Why 57: the volume is "skill-" + name and a volume name is a 63-character label.
        problems.append(f"must be no more than {MAX_SKILL_NAME_LENGTH} characters")
    if not DNS1123_LABEL_RE.fullmatch(name):
        problems.append(DNS1123_LABEL_MESSAGE)
    return tuple(problems)


def _check_name(at: FieldPath, name: str, seen: set[str], findings: Findings) -> bool:
    """True when the name of the skill `at` is valid (duplicates are reported here, and are valid names)."""
    if not name:
        findings.add(f.required(at.child("name")))
        return False
    problems = skill_name_problems(name)
    for problem in problems:
        findings.add(f.invalid(at.child("name"), name, problem))
    if not problems and name in seen:
        findings.add(f.duplicate(at.child("name"), name))
    return not problems


def allow_list_message(image: str, registry_allow: tuple[str, ...]) -> str:
    return f"image {json.dumps(image)} is not in the registry allow-list ({', '.join(registry_allow)})"


# An error to record beneath a field: the FieldError constructor and its arguments after the path.
_Problem = tuple[Callable[..., f.FieldError], tuple[Any, ...]]


@cached_when_short(maxsize=4096, longest=1024)  # a valid reference has at most about 520 characters
def image_verdict(
    image: str, pull_always: bool, registry_allow: tuple[str, ...]
) -> tuple[tuple[_Problem, ...], tuple[str, ...], bool | None]:
    """What one image (with `pullPolicy: Always` or not) gives beneath its field: (errors, warnings,
    pinned), pinned None when the image is not a usable reference. Cached: the same images come back
    on every UPDATE, dry run and stored object."""
    if not image:
        return ((f.required, ()),), (), None
    try:
        reference = oci.parse_reference(image)
    except oci.InvalidImageReference as problem:
        return ((f.invalid, (image, f"not a valid OCI image reference: {problem}")),), (), None
    errors: tuple[_Problem, ...] = ()
    if registry_allow and not oci.registry_allowed(reference, registry_allow):
        errors = ((f.forbidden, (allow_list_message(image, registry_allow),)),)
    warnings: tuple[str, ...] = ()
    if reference.floating and not pull_always:
        warnings = (
            f"{json.dumps(image)} has no fixed version (tag latest or none) and pullPolicy is not Always: "
            "nodes may keep mounting an older copy",
        )
    return errors, warnings, reference.pinned


def _check_mount_path(at: FieldPath, mount_path: str, findings: Findings) -> bool:
    """True when the mount path of the skill `at` is usable (it may still overlap another)."""
    if not mount_path:
        findings.add(f.required(at.child("mountPath")))
        return False
    problems = paths.mount_path_problems(mount_path)
    for problem in problems:
        findings.add(f.invalid(at.child("mountPath"), mount_path, problem))
    if "," in mount_path:
        # SKILL_FOLDERS is comma-separated: an agent splitting it would see two folders, neither real.
        findings.warn(
            at.child("mountPath"), f"{json.dumps(mount_path)} contains \",\", which SKILL_FOLDERS uses as separator"
        )
    return not problems


def _check_overlaps(
    raw: list, mount_paths: list[tuple[int, paths.Components]], findings: Findings, base: FieldPath
) -> None:
    """Two skills on one directory, or one inside another: one image would hide the other."""

    def at(i: int) -> FieldPath:
        return base.index(i).child("mountPath")

    all_parts = tuple(parts for _, parts in mount_paths)
    for position, same, other in overlaps(all_parts):
        i, first = mount_paths[position][0], mount_paths[other][0]
        if same:
            findings.add(f.duplicate(at(i), raw[i]["mountPath"], f"same directory as {at(first)}"))
        else:
            outer_path = json.dumps(paths.normalise(raw[first]["mountPath"]))
            findings.add(f.invalid(at(i), raw[i]["mountPath"], f"must not be beneath {at(first)} ({outer_path})"))


def overlaps(all_parts: tuple[paths.Components, ...]) -> tuple[tuple[int, bool, int], ...]:
    """(position, same directory?, position of the first owner or of the outermost enclosing path)
    for each normalised path that repeats an earlier one or lies beneath another."""
    owners = paths.first_owners(enumerate(all_parts))
    found: list[tuple[int, bool, int]] = []
    for position, parts in enumerate(all_parts):
        first = owners[parts]
        if first != position:
            found.append((position, True, first))
            continue
        outer = paths.first_enclosing(parts, owners)
        if outer is not None:
            found.append((position, False, outer))
    return tuple(found)
