"""What a registry says about one skill image, now (docs/registries.md).

`resolve_image` fetches the manifest a reference names (and, for an index, the entry a node would
pull), decides mountability, reads the skill metadata annotations and, when asked, checks the cosign
signature. It never raises for registry trouble: the result carries the error and keeps what was
known before. The background resolver (app.sources.registry.resolver) and `skill-webhook inspect` call it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import replace
from typing import Iterable, Sequence

from app.core.registry_facts import (
    ImageFacts,
    annotations_of,
    choose_platform_entry,
    config_media_type,
    index_entry_mountability,
    is_index,
    manifest_mountability,
    skill_metadata,
)
from app.core.validation.oci import parse_reference

from app.sources.registry.cosign import CosignKey, verify_image
from app.sources.registry.client import RegistryClient, RegistryError


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


async def resolve_image(
    client: RegistryClient,
    reference: str,
    *,
    verify: bool = False,
    keys: Sequence[CosignKey] = (),
    previous: ImageFacts | None = None,
) -> ImageFacts:
    """What the registry says about `reference` now. Never raises for registry trouble: the
    result carries `error`, and keeps `previous`'s digest and facts when there were any."""
    base = previous if previous is not None else ImageFacts.unresolved(reference)
    if base.error_kind == "invalid":
        return base
    parsed = parse_reference(reference)
    registry, repository = parsed.registry, parsed.repository
    try:
        if parsed.digest is not None:
            manifest = await client.get_manifest(registry, repository, parsed.digest)
        else:
            manifest = await client.get_manifest(registry, repository, parsed.tag or "latest")
        facts = await _describe(client, base, registry, repository, manifest)
    except RegistryError as exc:
        text = str(exc)
        if exc.kind == "not_found" and base.digest is not None and parsed.digest is None:
            text = "tag no longer resolves"
        return base.with_error(exc.kind, text, _now())
    if not verify:
        return replace(facts, signature="off", signature_reason="")
    verdict, reason = await verify_image(client, registry, repository, facts.digest or "", keys)
    if verdict == "unknown" and previous is not None and previous.digest == facts.digest \
            and previous.signature in ("verified", "unverified"):
        # A registry hiccup on the signature tag does not undo what we verified for these bytes.
        verdict, reason = previous.signature, previous.signature_reason
    return replace(facts, signature=verdict, signature_reason=reason)


async def _describe(client: RegistryClient, base: ImageFacts, registry: str, repository: str, manifest) -> ImageFacts:
    annotations = annotations_of(manifest.document)
    config_type = ""
    if is_index(manifest.media_type, manifest.document):
        entry = choose_platform_entry(manifest.document)
        decision = index_entry_mountability(entry)
        if decision is None and entry is not None:
            child = await client.get_manifest(registry, repository, entry["digest"])
            decision = manifest_mountability(str(entry.get("mediaType", "")), child.document)
            config_type = config_media_type(child.document)
            # Skill annotations usually sit on the image manifest; the index's own win where both say.
            annotations = {**annotations_of(child.document), **annotations}
    else:
        decision = manifest_mountability(manifest.media_type, manifest.document)
        config_type = config_media_type(manifest.document)
    # Only the fields read from the annotations are kept: 10,000 images must not hold 10,000 annotation
    # mappings.
    return replace(
        base,
        digest=manifest.digest,
        media_type=manifest.media_type,
        config_media_type=config_type,
        mountable=decision.mountable,
        mount_reason=decision.reason,
        error=None,
        error_kind=None,
        resolved_at=_now(),
        **skill_metadata(annotations),
    )


async def resolve_many(
    client: RegistryClient, references: Iterable[str], *, verify: bool = False,
    keys: Sequence[CosignKey] = (), concurrency: int = 8,
) -> list[ImageFacts]:
    """Resolve references once, in order (the `inspect` command)."""
    semaphore = asyncio.Semaphore(max(concurrency, 1))

    async def one(ref: str) -> ImageFacts:
        async with semaphore:
            return await resolve_image(client, ref, verify=verify, keys=keys)

    return list(await asyncio.gather(*(one(ref) for ref in references)))
