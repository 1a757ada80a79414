"""The pure supply-chain decisions: mountability, index entry choice, pinning, simple-signing payloads,
and the lock-free cache /mutate reads."""

from __future__ import annotations

import json
import threading

import pytest
from hypothesis import given, strategies as st

from app.core import registry_facts as supply
from app.core.registry_facts import (
    ImageFacts,
    ImageFactsCache,
    check_simple_signing,
    choose_platform_entry,
    index_entry_mountability,
    manifest_mountability,
    pinned_reference,
    signature_tag,
)
from app.core.validation.oci import parse_reference

DIGEST = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32


def image_manifest(config_type: str, media_type: str = supply.OCI_MANIFEST, **extra) -> dict:
    return {"schemaVersion": 2, "mediaType": media_type, "config": {"mediaType": config_type}, "layers": [], **extra}


@pytest.mark.parametrize("media_type,config_type,mountable", [
    (supply.OCI_MANIFEST, supply.OCI_CONFIG, True),
    (supply.OCI_MANIFEST, supply.DOCKER_CONFIG, True),
    (supply.DOCKER_MANIFEST, supply.DOCKER_CONFIG, True),
    (supply.DOCKER_MANIFEST, supply.OCI_CONFIG, True),
    (supply.OCI_MANIFEST, supply.OCI_EMPTY, False),
    (supply.OCI_MANIFEST, "application/vnd.acme.skill.config.v1+json", False),
    (supply.OCI_MANIFEST, "", False),
    ("application/vnd.docker.distribution.manifest.v1+prettyjws", supply.DOCKER_CONFIG, False),
])
def test_mountability_from_media_types(media_type: str, config_type: str, mountable: bool) -> None:
    decision = manifest_mountability(media_type, image_manifest(config_type, media_type))
    assert decision.mountable is mountable
    assert (decision.reason == "") is mountable


def test_an_artifact_type_makes_an_artifact_even_with_an_image_config() -> None:
    decision = manifest_mountability(supply.OCI_MANIFEST, image_manifest(supply.OCI_CONFIG, artifactType="application/x-skill"))
    assert not decision.mountable and "artifactType application/x-skill" in decision.reason


def test_empty_config_is_named_in_the_reason() -> None:
    assert "empty config" in manifest_mountability(supply.OCI_MANIFEST, image_manifest(supply.OCI_EMPTY)).reason


def test_media_type_from_the_header_when_the_body_has_none() -> None:
    body = image_manifest(supply.DOCKER_CONFIG)
    del body["mediaType"]
    assert manifest_mountability(supply.DOCKER_MANIFEST, body).mountable
    assert not manifest_mountability("", body).mountable


def entry(arch: str, os: str = "linux", media_type: str = supply.OCI_MANIFEST, digest: str = DIGEST) -> dict:
    return {"mediaType": media_type, "digest": digest, "size": 1, "platform": {"os": os, "architecture": arch}}


def test_index_prefers_linux_amd64_then_the_first_entry() -> None:
    amd = entry("amd64", digest=OTHER)
    assert choose_platform_entry({"manifests": [entry("arm64"), amd]}) is amd
    first = entry("arm64")
    assert choose_platform_entry({"manifests": [first, entry("s390x")]}) is first
    assert choose_platform_entry({"manifests": []}) is None


def test_index_skips_attestation_entries() -> None:
    real = entry("arm64", digest=OTHER)
    assert choose_platform_entry({"manifests": [entry("unknown", os="unknown"), real]}) is real


@pytest.mark.parametrize("descriptor,verdict", [
    (entry("amd64"), None),  # an image manifest: its config decides
    (entry("amd64", media_type=supply.DOCKER_MANIFEST), None),
    (entry("amd64", media_type=supply.OCI_INDEX), False),
    (entry("amd64", media_type="application/vnd.oci.artifact.manifest.v1+json"), False),
    ({**entry("amd64"), "artifactType": "application/x-skill"}, False),
    (None, False),
])
def test_index_entry_rules(descriptor, verdict) -> None:
    decision = index_entry_mountability(descriptor)
    assert (decision.mountable if decision else None) is verdict


def test_pinned_reference_keeps_what_was_written() -> None:
    assert pinned_reference("ghcr.io/org/skill:v1", DIGEST) == f"ghcr.io/org/skill:v1@{DIGEST}"
    assert pinned_reference("localhost:5000/skill", DIGEST) == f"localhost:5000/skill@{DIGEST}"
    already = f"ghcr.io/org/skill:v1@{OTHER}"
    assert pinned_reference(already, DIGEST) == already


_component = st.from_regex(r"[a-z0-9]{1,8}(-[a-z0-9]{1,4})?", fullmatch=True)
_tag = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True)


@given(st.sampled_from(["ghcr.io", "localhost:5000", "127.0.0.1:39000", "docker.io"]),
       st.lists(_component, min_size=1, max_size=3), _tag, st.binary(min_size=32, max_size=32))
def test_pinned_reference_parses_back_with_tag_and_digest(host, path, tag, raw) -> None:
    digest = "sha256:" + raw.hex()
    written = f"{host}/{'/'.join(path)}:{tag}"
    parsed = parse_reference(pinned_reference(written, digest))
    assert (parsed.tag, parsed.digest) == (tag, digest)
    assert parsed.repository.endswith("/".join(path))


def test_signature_tag() -> None:
    assert signature_tag(DIGEST) == "sha256-" + "ab" * 32 + ".sig"


def payload(digest: object) -> bytes:
    return json.dumps({"critical": {"identity": {"docker-reference": "r"}, "image": {"docker-manifest-digest": digest},
                                    "type": "cosign container image signature"}, "optional": None}).encode()


def test_simple_signing_payload_check() -> None:
    assert check_simple_signing(payload(DIGEST), DIGEST) is None
    assert "another digest" in check_simple_signing(payload(OTHER), DIGEST)
    assert "not JSON" in check_simple_signing(b"\xff{", DIGEST)
    assert "no critical.image" in check_simple_signing(b'{"critical": {}}', DIGEST)
    assert "no critical.image" in check_simple_signing(payload(7), DIGEST)
    assert "no critical.image" in check_simple_signing(b"[]", DIGEST)


@given(st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32))
def test_a_payload_verifies_only_its_own_digest(a, b) -> None:
    expected, named = "sha256:" + a.hex(), "sha256:" + b.hex()
    assert (check_simple_signing(payload(named), expected) is None) is (a == b)


@given(st.binary(max_size=200))
def test_payload_check_never_raises(data) -> None:
    result = check_simple_signing(data, DIGEST)
    assert result is None or isinstance(result, str)


def test_metadata_from_annotations_and_facts_helpers() -> None:
    annotations = {supply.TITLE: "resume", supply.DESCRIPTION: "Reviews", supply.VERSION: "1.2.0",
                   supply.SKILLIMAGE_STATUS: "deprecated", supply.AGENTSKILLS_NAME: "resume"}
    facts = ImageFacts("ghcr.io/o/resume:v1", "ghcr.io", "o/resume", "v1", digest=DIGEST,
                       **supply.skill_metadata(annotations))
    assert facts.deprecated and facts.agentskills_name == "resume"
    assert facts.metadata() == {"version": "1.2.0", "description": "Reviews", "digest": DIGEST}
    assert facts.pinned_reference == f"ghcr.io/o/resume:v1@{DIGEST}"
    assert ImageFacts.unresolved("ghcr.io/o/resume:v1").metadata() == {}
    assert json.loads(json.dumps(facts.to_json()))["pinnedReference"] == facts.pinned_reference


def test_unresolved_facts() -> None:
    pinned = ImageFacts.unresolved(f"ghcr.io/o/s@{DIGEST}")
    assert pinned.digest == DIGEST and pinned.pinned and pinned.mountable is None
    hub = ImageFacts.unresolved("busybox:1")
    assert (hub.registry, hub.repository) == ("docker.io", "library/busybox")
    bad = ImageFacts.unresolved("UPPER/Case")
    assert bad.error_kind == "invalid" and bad.error.startswith("invalid reference")


def test_tag_gone_needs_a_known_digest_and_a_tag() -> None:
    from datetime import datetime, timezone
    now = datetime.now(timezone.utc)
    known = ImageFacts("r.io/s:v1", "r.io", "s", "v1", digest=DIGEST)
    assert known.with_error("not_found", "tag no longer resolves", now).tag_gone
    assert not known.with_error("timeout", "timeout", now).tag_gone
    assert not ImageFacts.unresolved("r.io/s:v1").with_error("not_found", "tag not found", now).tag_gone


def test_a_snapshot_is_a_copy_and_keep_only_drops_the_rest() -> None:
    cache = ImageFactsCache()
    a, b = ImageFacts.unresolved("r.io/a:1"), ImageFacts.unresolved("r.io/b:1")
    cache.put("r.io/a:1", a)
    before = cache.snapshot()
    cache.put("r.io/b:1", b)
    cache.keep_only({"r.io/b:1"})
    assert cache.facts("r.io/a:1") is None and cache.facts("r.io/b:1") is b and len(cache) == 1
    assert before == {"r.io/a:1": a}  # a reader's snapshot never changes under it


def test_snapshots_while_the_cache_changes() -> None:
    cache = ImageFactsCache()
    refs = [f"r.io/s{i}:1" for i in range(200)]
    stop = threading.Event()
    problems: list[str] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                snap = cache.snapshot()
            except RuntimeError as err:  # "dictionary changed size during iteration"
                problems.append(str(err))
                return
            if any(facts.reference != ref for ref, facts in snap.items()):
                problems.append("a reference mapped to another's facts")
                return

    thread = threading.Thread(target=reader)
    thread.start()
    for generation in range(30):
        for ref in refs:
            cache.put(ref, ImageFacts(ref, "r.io", ref, str(generation)))
        cache.keep_only(refs[generation % 7:])
    stop.set()
    thread.join()
    assert problems == []


_refs = st.sampled_from([f"r.io/s{i}:1" for i in range(8)])


@given(st.lists(st.tuples(st.dictionaries(_refs, st.sampled_from(["1", "2", "3"]), max_size=5),
                          st.one_of(st.none(), st.lists(_refs, max_size=8))), max_size=12))
def test_puts_and_keep_only_equal_a_plain_dict(steps) -> None:
    cache, model = ImageFactsCache(), {}
    for updates, keep in steps:
        batch = {ref: ImageFacts(ref, "r.io", ref, tag) for ref, tag in updates.items()}
        if keep is not None:
            cache.keep_only(keep)
            model = {k: v for k, v in model.items() if k in set(keep)}
        for ref, facts in batch.items():
            cache.put(ref, facts)
        model.update(batch)
        assert cache.snapshot() == model and len(cache) == len(model)
