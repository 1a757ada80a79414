"""cosign key-based signatures, checked against the registry only (docs/registries.md).

cosign stores the signatures of `repo@sha256:<hex>` as an image manifest at tag `sha256-<hex>.sig`
in the same repository. Each layer of media type `application/vnd.dev.cosign.simplesigning.v1+json`
is a JSON "simple signing" payload whose `critical.image.docker-manifest-digest` names the signed
image, and carries the base64 signature of those exact payload bytes in the layer annotation
`dev.cosignproject.cosign/signature` (ECDSA P-256 over SHA-256 for cosign's generated keys).

Keyless signing (Fulcio certificates) and transparency-log checks are deliberately not done: both
need services outside the cluster's registry, and admission must be decidable from what we cache.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from app.core.registry_facts import (
    COSIGN_SIGNATURE_ANNOTATION,
    COSIGN_SIMPLESIGNING,
    Verdict,
    check_simple_signing,
    signature_tag,
)

from app.sources.registry.client import RegistryClient, RegistryError

MAX_PAYLOAD_BYTES = 64 * 1024
MAX_SIGNATURE_LAYERS = 32


@dataclass(frozen=True)
class CosignKey:
    name: str  # the file it came from, for messages
    key: ec.EllipticCurvePublicKey


class CosignKeyError(ValueError):
    """A --cosign-key file that is not a usable public key."""


def load_keys(paths: Iterable[Path]) -> tuple[CosignKey, ...]:
    """The PEM public keys of `paths` (a file may hold several); raises CosignKeyError."""
    keys: list[CosignKey] = []
    for path in paths:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise CosignKeyError(f"{path}: cannot read: {exc.strerror or exc}") from None
        blocks = [b for b in data.split(b"-----END PUBLIC KEY-----") if b"-----BEGIN PUBLIC KEY-----" in b]
        if not blocks:
            raise CosignKeyError(f"{path}: no PEM public key (-----BEGIN PUBLIC KEY-----)")
        for block in blocks:
            pem = block[block.index(b"-----BEGIN PUBLIC KEY-----"):] + b"-----END PUBLIC KEY-----\n"
            try:
                key = serialization.load_pem_public_key(pem)
            except ValueError as exc:
                raise CosignKeyError(f"{path}: not a PEM public key: {exc}") from None
            if not isinstance(key, ec.EllipticCurvePublicKey):
                raise CosignKeyError(f"{path}: {type(key).__name__} keys are not supported (cosign keys are ECDSA)")
            keys.append(CosignKey(str(path), key))
    return tuple(keys)


def signature_matches(payload: bytes, signature_b64: str, keys: Sequence[CosignKey]) -> CosignKey | None:
    """The key whose ECDSA/SHA-256 signature `signature_b64` is over `payload`, if any."""
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError):
        return None
    for candidate in keys:
        try:
            candidate.key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            continue
        return candidate
    return None


async def verify_image(
    client: RegistryClient, registry: str, repository: str, digest: str, keys: Sequence[CosignKey],
) -> tuple[Verdict, str]:
    """(verdict, reason) for `repository@digest`: verified when one simple-signing layer names the
    digest and verifies with one key; unverified when the signatures are missing or wrong; unknown
    when the registry could not say (the caller keeps the previous verdict then, if it has one)."""
    if not keys:
        return "unverified", "no cosign key configured"
    try:
        manifest = await client.get_manifest(registry, repository, signature_tag(digest))
    except RegistryError as exc:
        if exc.kind == "not_found":
            return "unverified", "no signature"
        return "unknown", f"signature lookup failed: {exc}"
    layers = [
        layer for layer in manifest.document.get("layers") or ()
        if isinstance(layer, dict) and layer.get("mediaType") == COSIGN_SIMPLESIGNING
    ][:MAX_SIGNATURE_LAYERS]
    if not layers:
        return "unverified", "signature manifest has no simple-signing layer"
    reasons: list[str] = []
    for layer in layers:
        annotations = layer.get("annotations") if isinstance(layer.get("annotations"), dict) else {}
        signature = annotations.get(COSIGN_SIGNATURE_ANNOTATION)
        blob_digest = layer.get("digest")
        if not isinstance(signature, str) or not isinstance(blob_digest, str):
            reasons.append("signature layer without signature annotation")
            continue
        try:
            payload = await client.get_blob(registry, repository, blob_digest, limit=MAX_PAYLOAD_BYTES)
        except RegistryError as exc:
            return "unknown", f"signature payload fetch failed: {exc}"
        problem = check_simple_signing(payload, digest)
        if problem is not None:
            reasons.append(problem)
            continue
        key = signature_matches(payload, signature, keys)
        if key is not None:
            return "verified", f"signed with {key.name}"
        reasons.append("signature does not verify with any configured key")
    return "unverified", "; ".join(dict.fromkeys(reasons))
