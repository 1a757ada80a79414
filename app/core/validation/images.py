"""Validation rules that need what the registry resolver knows about skill images (README "Skill
images and registries"): an OCI artifact that image volumes cannot mount is an error once known;
deprecated skills and tags that no longer resolve are warnings; with signature enforcement an image
whose signature does not verify is an error. These are never part of the cached verdict of a stored
object: registry facts change without the object changing, so admission reads them afresh.
"""

from __future__ import annotations

from typing import Any

from app.core.validation import fields as f
from app.core.validation.fields import FieldPath
from app.core.validation.findings import Findings

SKIPPED_ABOVE = 100  # a hostile list is bounded by the other rules already; do not look up more


def check_image_facts(raw: Any, base: FieldPath, findings: Findings, supply: Any) -> None:
    """`supply` is an app.core.mutation.skill_images.SupplyPlan (facts lookup plus the signature policy)."""
    if not isinstance(raw, list):
        return
    unknown: list[str] = []
    for i, item in enumerate(raw[:SKIPPED_ABOVE]):
        image = item.get("image") if isinstance(item, dict) else None
        if not isinstance(image, str) or not image:
            continue
        path = base.index(i).child("image")
        facts = supply.facts(image)
        if facts is None:
            unknown.append(image)
            continue
        if facts.mountable is False:
            why = facts.mount_reason or f"config media type {facts.config_media_type or 'empty'}"
            findings.add(f.invalid(path, image, f"an OCI artifact that image volumes cannot mount ({why})"))
        if facts.deprecated:
            findings.warn(path, f"{image} is deprecated (io.skillimage.status)")
        if facts.tag_gone:
            findings.warn(path, f"the tag of {image} no longer resolves; pods get its last known digest only if pinned")
        _check_signature(path, image, facts, findings, supply.verify_signatures)
    if unknown:
        findings.warn(
            base,
            f"not resolved in the registry yet ({', '.join(unknown)}): whether image volumes can mount "
            "them is not known",
        )


def _check_signature(path: FieldPath, image: str, facts: Any, findings: Findings, mode: str) -> None:
    if mode == "off" or facts.signature in ("verified", "off"):
        return
    detail = f"signature {facts.signature}" + (f" ({facts.signature_reason})" if facts.signature_reason else "")
    if mode == "enforce" and facts.signature != "unknown":
        findings.add(f.invalid(path, image, f"{detail}; --verify-signatures is enforce"))
    else:
        findings.warn(path, f"{image}: {detail}")
