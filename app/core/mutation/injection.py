"""What one injection puts into a pod, and the record of it that the pod carries.

Mutation writes the record (annotation `<domain>/skills-injected`); staleness compares a running
pod's record with what the mutation would write now. Both go through `injected_skills` and
`skills_fingerprint`, so the two can never disagree on what "the same skills" means.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any, Iterable, Mapping, NamedTuple, Sequence

import orjson

from app.core.model import Skill
from app.core.objects import text_of

if TYPE_CHECKING:
    from app.core.mutation.delivery import SkillDelivery


class InjectedSkill(NamedTuple):
    """One skill as injected: `image` is the reference mounted or pulled (digest-pinned when the
    resolver pins), `path` the directory inside it that is mounted (None: its root), `delivery` how it
    reaches the pod (app.core.mutation.delivery)."""

    name: str
    image: str
    mountPath: str
    pullPolicy: str | None
    path: str | None = None
    delivery: str = "image"

    def as_dict(self) -> dict[str, str]:
        entry = {"name": self.name, "image": self.image, "mountPath": self.mountPath}
        if self.pullPolicy:
            entry["pullPolicy"] = self.pullPolicy
        # Only when set: a skill injected as an image volume of its whole image has the fingerprint it
        # had before paths and extraction existed, so upgrading makes no running pod stale.
        if self.path is not None:
            entry["path"] = self.path
        if self.delivery == "extract":
            entry["delivery"] = "extract"
        return entry


def injected_skills(
    skills: Iterable[Skill],
    references: Mapping[str, str] | None = None,
    deliveries: Sequence[SkillDelivery] | None = None,
) -> tuple[InjectedSkill, ...]:
    """The skills in spec order, each with the image reference to inject (`references[name]` when given)
    and its delivery and path (`deliveries`, in the same order; None: image volumes of `path` as written)."""
    refs = references or {}
    if deliveries is None:
        return tuple(InjectedSkill(s.name, refs.get(s.name, s.image), s.mountPath, s.pullPolicy, s.path)
                     for s in skills)
    return tuple(
        InjectedSkill(s.name, refs.get(s.name, s.image), s.mountPath, s.pullPolicy, d.path, d.delivery)
        for s, d in zip(skills, deliveries)
    )


def skills_fingerprint(skills: Iterable[InjectedSkill]) -> str:
    """sha256 of the canonical JSON (sorted keys, no spaces) of the injected skills in spec order: any
    change of image, mount path, pull policy, path, delivery, order or membership changes it."""
    canonical = json.dumps([s.as_dict() for s in skills], sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def injected_record(runtime_name: str, container: str, skills: tuple[InjectedSkill, ...]) -> dict[str, Any]:
    return {
        "agentRuntime": runtime_name,
        "container": container,
        "skills": {s.name: s.image for s in skills},
        "fingerprint": skills_fingerprint(skills),
    }


class InjectedRecord(NamedTuple):
    """A pod's `skills-injected` annotation, read back (fields that are missing or ill-typed are empty)."""

    agent_runtime: str
    container: str
    skills: Mapping[str, str]
    fingerprint: str


def read_injected_record(value: Any) -> InjectedRecord | None:
    """The record in an annotation value, or None when there is none or it is not a record object."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(parsed, dict):
        return None
    skills = parsed.get("skills")
    return InjectedRecord(
        agent_runtime=text_of(parsed.get("agentRuntime")),
        container=text_of(parsed.get("container")),
        skills={k: v for k, v in skills.items() if isinstance(v, str)} if isinstance(skills, dict) else {},
        fingerprint=text_of(parsed.get("fingerprint")),
    )
