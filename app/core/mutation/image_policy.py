"""The admin's image policy (`--pin-digests`, `--verify-signatures`) applied at admission to what the
registry resolver knows about skill images.

The resolver runs off the admission path (docs/registries.md); admission only reads
its published facts through `ImagePolicy.facts`, a lock-free dictionary lookup, and never waits for a
registry. This module turns those facts into the references to inject (digest pinning), the
`<domain>/skills-metadata` annotation, warnings, and the denials an admin asked for
(`--pin-digests required`, `--verify-signatures enforce`). What an OCI artifact means for a pod (it is
extracted, or warned about) is app.core.mutation.delivery's decision.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Literal, NamedTuple

from app.core.model import Skill
from app.core.registry_facts import ImageFacts

PinDigests = Literal["off", "on", "required"]
VerifySignatures = Literal["off", "warn", "enforce"]

VERIFIED = "verified"


@dataclass(frozen=True)
class ImagePolicy:
    """What the resolver knows of each image, and what the admin asked to do with it."""

    facts: Callable[[str], ImageFacts | None]  # reference as written -> what is known (None: not yet)
    pin_digests: PinDigests = "off"
    verify_signatures: VerifySignatures = "off"


class Denial(NamedTuple):
    code: int
    reason: str
    message: str


@dataclass
class ImagePolicyOutcome:
    references: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, dict[str, str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    denial: Denial | None = None
    unpinned: int = 0  # skills injected by tag because their digest is not known yet


def apply_image_policy(policy: ImagePolicy | None, skills: Iterable[Skill]) -> ImagePolicyOutcome:
    """References, metadata, warnings and a possible denial for the skills of one pod."""
    outcome = ImagePolicyOutcome()
    if policy is None:
        return outcome
    by_tag: list[str] = []  # "injected by tag" warnings: untrue once the pod is denied
    for skill in skills:
        facts = policy.facts(skill.image)
        _metadata(outcome, skill, facts)
        if facts is not None and (facts.status or "").lower() == "deprecated":
            outcome.warnings.append(f'skill "{skill.name}": image {skill.image} is deprecated')
        by_tag += _pin(policy, outcome, skill, facts)
        _signature(policy, outcome, skill, facts)
        if outcome.denial is not None:
            # Nothing is injected into a denied pod: no warning may say something was.
            outcome.warnings = [w for w in outcome.warnings if w not in by_tag]
            outcome.unpinned = 0
            return outcome
    return outcome


def _pin(policy: ImagePolicy, outcome: ImagePolicyOutcome, skill: Skill, facts: ImageFacts | None) -> list[str]:
    """Pins the reference when the digest is known; returns the "injected by tag" warning it added."""
    if policy.pin_digests == "off" or "@" in skill.image:
        return []  # an image already pinned by digest is injected as written
    digest = facts.digest if facts is not None else None
    if digest:
        outcome.references[skill.name] = f"{skill.image}@{digest}"
        return []
    why = (facts.error if facts is not None and facts.error else "not resolved yet")
    if policy.pin_digests == "required":
        outcome.denial = Denial(
            503, "ServiceUnavailable",
            f'skill "{skill.name}": the digest of {skill.image} is not known ({why}) and --pin-digests is '
            "required; retry shortly",
        )
        return []
    outcome.unpinned += 1
    warning = f'skill "{skill.name}": injected {skill.image} by tag: its digest is not known ({why})'
    outcome.warnings.append(warning)
    return [warning]


def _signature(policy: ImagePolicy, outcome: ImagePolicyOutcome, skill: Skill, facts: ImageFacts | None) -> None:
    if policy.verify_signatures == "off" or outcome.denial is not None:
        return
    verdict = facts.signature if facts is not None else "unknown"
    if verdict == VERIFIED:
        return
    reason = facts.signature_reason if facts is not None else "not resolved yet"
    detail = f"{skill.image}: signature {verdict}" + (f" ({reason})" if reason else "")
    if policy.verify_signatures == "warn":
        outcome.warnings.append(f'skill "{skill.name}": {detail}')
    elif verdict == "unknown":
        outcome.denial = Denial(503, "ServiceUnavailable", f'skill "{skill.name}": {detail}; retry shortly')
    else:
        outcome.denial = Denial(403, "Forbidden", f'skill "{skill.name}": {detail}')


def _metadata(outcome: ImagePolicyOutcome, skill: Skill, facts: ImageFacts | None) -> None:
    if facts is None:
        return
    known = {
        key: value
        for key, value in (("version", facts.version), ("description", facts.description), ("digest", facts.digest))
        if value
    }
    if known:
        outcome.metadata[skill.name] = known
