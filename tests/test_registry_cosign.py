"""cosign key-based signatures made by the tests (ECDSA P-256 with `cryptography`), pushed as
`sha256-<hex>.sig` manifests into the real registry and checked by the resolver."""

from __future__ import annotations

import asyncio

import pytest

from app.core import registry_facts as supply
from app.sources.registry.cosign import CosignKeyError, load_keys, signature_matches
from app.sources.registry.client import RegistryClient
from app.sources.registry.lookup import resolve_image
from tests.registry_harness import Layout, new_cosign_key, signature_manifest, simple_signing_payload, skillimage


@pytest.fixture(scope="module")
def signed(docker_registries, tmp_path_factory):
    regs = docker_registries
    work = tmp_path_factory.mktemp("cosign")
    layout = Layout(work / "oci")
    key, key_file = new_cosign_key(work, "release")
    _, other_file = new_cosign_key(work, "other")
    wrong_key, _ = new_cosign_key(work, "wrong")
    host = regs.plain.host
    images = {}
    for name in ("good", "other-digest", "wrong-key", "unsigned"):
        digest = layout.tag(skillimage(layout, name, "1.0.0"), name)
        regs.plain.push(layout, name, f"signed/{name}", dest_tag="v1")
        images[name] = digest
    decoy = "sha256:" + "9" * 64
    for name, signer, names in [("good", key, images["good"]), ("other-digest", key, decoy),
                                ("wrong-key", wrong_key, images["wrong-key"])]:
        tag = supply.signature_tag(images[name])
        layout.tag(signature_manifest(layout, signer, f"{host}/signed/{name}", names), tag)
        regs.plain.push(layout, tag, f"signed/{name}")
    return host, images, key_file, other_file


def verdict(host: str, name: str, keys) -> supply.ImageFacts:
    async def go():
        client = RegistryClient(insecure=[host], timeout=5.0)
        try:
            return await resolve_image(client, f"{host}/signed/{name}:v1", verify=True, keys=keys)
        finally:
            await client.aclose()
    return asyncio.run(go())


def test_a_valid_signature_verifies(signed) -> None:
    host, images, key_file, other_file = signed
    facts = verdict(host, "good", load_keys([other_file, key_file]))  # any configured key may match
    assert facts.digest == images["good"]
    assert (facts.signature, facts.signature_reason) == ("verified", f"signed with {key_file}")


def test_a_signature_for_another_digest_fails(signed) -> None:
    host, _, key_file, _ = signed
    facts = verdict(host, "other-digest", load_keys([key_file]))
    assert facts.signature == "unverified" and "another digest" in facts.signature_reason


def test_a_wrong_key_fails(signed) -> None:
    host, _, key_file, _ = signed
    facts = verdict(host, "wrong-key", load_keys([key_file]))
    assert facts.signature == "unverified"
    assert facts.signature_reason == "signature does not verify with any configured key"


def test_no_signature_tag_is_unverified(signed) -> None:
    host, _, key_file, _ = signed
    facts = verdict(host, "unsigned", load_keys([key_file]))
    assert (facts.signature, facts.signature_reason) == ("unverified", "no signature")


def test_no_key_configured_is_unverified(signed) -> None:
    host, *_ = signed
    assert verdict(host, "good", ()).signature_reason == "no cosign key configured"


def test_key_files(tmp_path) -> None:
    key, one = new_cosign_key(tmp_path, "one")
    _, two = new_cosign_key(tmp_path, "two")
    both = tmp_path / "both.pem"
    both.write_bytes(one.read_bytes() + two.read_bytes())
    assert len(load_keys([both])) == 2
    payload = simple_signing_payload("r", "sha256:" + "1" * 64)
    import base64
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    sig = base64.b64encode(key.sign(payload, ec.ECDSA(hashes.SHA256()))).decode()
    assert signature_matches(payload, sig, load_keys([two, one])).name == str(one)
    assert signature_matches(payload + b" ", sig, load_keys([one])) is None
    assert signature_matches(payload, "not base64!", load_keys([one])) is None
    (tmp_path / "junk.pem").write_text("hello")
    with pytest.raises(CosignKeyError, match="no PEM public key"):
        load_keys([tmp_path / "junk.pem"])
    with pytest.raises(CosignKeyError, match="cannot read"):
        load_keys([tmp_path / "missing.pem"])
