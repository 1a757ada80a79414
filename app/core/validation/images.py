"""Validation rules that need what the registry resolver knows about skill images (docs/registries.md):
an OCI artifact is an error once known where its delivery is forced to image
volumes (which mount it as an empty directory) and a warning under `--delivery auto` (which extracts
it); a skill bundle without a `path` naming one of its skills, deprecated skills and tags that no longer
resolve are warnings; with signature enforcement an image whose signature does not verify is an error.
These are never part of the cached verdict of a stored object: registry facts change without the
object changing, so admission reads them afresh.
"""

from __future__ import annotations

from typing import Any

from app.core.validation import fields as f
from app.core.validation.fields import FieldPath
from app.core.validation.findings import Findings
from app.core.validation.paths import components

SKIPPED_ABOVE = 100  # a hostile list is bounded by the other rules already; do not look up more


def check_image_facts(raw: Any, base: FieldPath, findings: Findings, policy: Any, delivery: str = "auto") -> None:
    """`policy` is an app.core.mutation.image_policy.ImagePolicy (facts lookup plus the signature policy);
    `delivery` the one in force for this AgentRuntime (its annotation, else `--delivery`)."""
    if not isinstance(raw, list):
        return
    unknown: list[str] = []
    for i, item in enumerate(raw[:SKIPPED_ABOVE]):
        image = item.get("image") if isinstance(item, dict) else None
        if not isinstance(image, str) or not image:
            continue
        path = base.index(i).child("image")
        facts = policy.facts(image)
        if facts is None:
            unknown.append(image)
            continue
        if facts.mountable is False:
            why = facts.mount_reason or f"config media type {facts.config_media_type or 'empty'}"
            if delivery == "image":
                problem = (f"an OCI artifact that image volumes cannot mount ({why}): its image volume would be "
                           "an empty directory, and delivery is image")
                findings.add(f.invalid(path, image, problem))
            elif delivery == "auto":
                findings.warn(path, f"{image} is an OCI artifact ({why}): an image volume of it would mount an empty "
                                    "directory; delivered by extraction")
        if facts.bundle_skills is not None:
            _check_bundle(base.index(i), image, item.get("path"), facts.bundle_skills, findings)
        if facts.deprecated:
            findings.warn(path, f"{image} is deprecated (io.skillimage.status)")
        if facts.tag_gone:
            findings.warn(path, f"the tag of {image} no longer resolves; pods get its last known digest only if pinned")
        _check_signature(path, image, facts, findings, policy.verify_signatures)
    if unknown:
        findings.warn(
            base,
            f"not resolved in the registry yet ({', '.join(unknown)}): whether image volumes can mount "
            "them is not known",
        )


def _check_bundle(at: FieldPath, image: str, path: Any, skills: tuple[str, ...], findings: Findings) -> None:
    listed = ", ".join(skills) or "none listed"
    if path is None:
        findings.warn(at.child("image"), f"{image} is a skill bundle ({listed}): without path the agent gets every "
                                         "skill of it; name one skill's directory with path")
    elif isinstance(path, str) and skills and not (set(components(path)[-1:]) & set(skills)):
        findings.warn(at.child("path"), f"{path!r} names none of the skills of the bundle {image} ({listed})")


def _check_signature(path: FieldPath, image: str, facts: Any, findings: Findings, mode: str) -> None:
    if mode == "off" or facts.signature in ("verified", "off"):
        return
    detail = f"signature {facts.signature}" + (f" ({facts.signature_reason})" if facts.signature_reason else "")
    if mode == "enforce" and facts.signature != "unknown":
        findings.add(f.invalid(path, image, f"{detail}; --verify-signatures is enforce"))
    else:
        findings.warn(path, f"{image}: {detail}")
