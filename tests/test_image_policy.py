"""The image policy at admission: what the resolver knows, applied with --pin-digests and
--verify-signatures (pinning, metadata, warnings, and the denials the admin asked for). The facts are the
resolver's own ImageFacts records, looked up by reference as written."""

from __future__ import annotations

import json

import pytest

from app.core.mutation.review import MutationOptions, mutate_pod
from app.core.names import DEFAULT_DOMAIN
from app.core.mutation.image_policy import ImagePolicy
from app.core.registry_facts import ImageFacts
from tests.builders import NAMESPACE, apply_and_recheck, container, deployment_pod, index_of, runtime_object, skill

IMAGE = "ghcr.io/example/skills/alpha:v1"
DIGEST = "sha256:" + "a" * 64
OTHER_DIGEST = "sha256:" + "b" * 64


def facts(**fields) -> ImageFacts:
    base = ImageFacts.unresolved(IMAGE)
    values = {"digest": DIGEST, "mountable": True, "signature": "verified", **fields}
    return ImageFacts(**{**base.__dict__, **values})


def mutate(known: dict[str, ImageFacts], pin="off", verify="off", image=IMAGE):
    index = index_of(runtime_object("rt", skills=[skill("alpha", image=image)]))
    options = MutationOptions(image_policy=ImagePolicy(known.get, pin, verify))
    the_pod = deployment_pod(container("agent"))
    return the_pod, index, options, mutate_pod(the_pod, NAMESPACE, index, options)


def volume_reference(patched: dict) -> str:
    return next(v["image"]["reference"] for v in patched["spec"]["volumes"] if v["name"] == "skill-alpha")


def test_pinning_injects_tag_and_digest_and_records_it():
    the_pod, index, options, decision = mutate({IMAGE: facts()}, pin="on")
    patched = apply_and_recheck(the_pod, decision, index, options)
    assert volume_reference(patched) == f"{IMAGE}@{DIGEST}"
    record = json.loads(patched["metadata"]["annotations"][DEFAULT_DOMAIN.skills_injected])
    assert record["skills"] == {"alpha": f"{IMAGE}@{DIGEST}"}
    assert decision.warnings == []


def test_pinning_off_injects_as_written_but_still_writes_metadata():
    the_pod, index, options, decision = mutate({IMAGE: facts(version="1.2.0", description="Reviews")})
    patched = apply_and_recheck(the_pod, decision, index, options)
    assert volume_reference(patched) == IMAGE
    metadata = json.loads(patched["metadata"]["annotations"][DEFAULT_DOMAIN.skills_metadata])
    assert metadata == {"alpha": {"version": "1.2.0", "description": "Reviews", "digest": DIGEST}}


def test_unknown_digest_is_injected_by_tag_with_a_warning():
    the_pod, index, options, decision = mutate({}, pin="on")
    assert decision.allowed
    patched = apply_and_recheck(the_pod, decision, index, options)
    assert volume_reference(patched) == IMAGE
    assert any("by tag" in w and "not resolved yet" in w for w in decision.warnings)
    assert DEFAULT_DOMAIN.skills_metadata not in patched["metadata"]["annotations"]


def test_pin_required_denies_while_the_digest_is_unknown_as_retryable():
    *_, decision = mutate({IMAGE: facts(digest=None, error="registry unreachable")}, pin="required")
    assert not decision.allowed and decision.code == 503 and decision.reason == "ServiceUnavailable"
    assert 'AgentRuntime "rt"' in decision.message and "registry unreachable" in decision.message


def test_an_image_already_pinned_by_digest_is_injected_as_written():
    pinned = f"ghcr.io/example/skills/alpha@{OTHER_DIGEST}"
    the_pod, index, options, decision = mutate({}, pin="required", image=pinned)
    assert decision.allowed
    assert volume_reference(apply_and_recheck(the_pod, decision, index, options)) == pinned


def test_reinvocation_keeps_a_volume_injected_by_tag_before_the_digest_was_known():
    index = index_of(runtime_object("rt", skills=[skill("alpha")]))
    by_tag = MutationOptions(image_policy=ImagePolicy({}.get, "on"))
    the_pod = deployment_pod(container("agent"))
    first = apply_and_recheck(the_pod, mutate_pod(the_pod, NAMESPACE, index, by_tag), index, by_tag)
    now_known = MutationOptions(image_policy=ImagePolicy({IMAGE: facts()}.get, "on"))
    again = mutate_pod(first, NAMESPACE, index, now_known)
    assert again.allowed, again.message
    ops = {op["path"] for op in again.patch}
    # Only the metadata annotation is new; the volume and the record stay what the pod really has.
    assert ops == {"/metadata/annotations/" + DEFAULT_DOMAIN.skills_metadata.replace("/", "~1")}


@pytest.mark.parametrize(
    ("verdict", "code"), [("unverified", 403), ("unknown", 503)],
)
def test_enforce_denies_unverified_and_unknown_signatures(verdict, code):
    *_, decision = mutate({IMAGE: facts(signature=verdict, signature_reason="no signature")}, verify="enforce")
    assert not decision.allowed and decision.code == code
    assert 'skill "alpha"' in decision.message and verdict in decision.message


def test_enforce_admits_a_verified_skill_and_warn_only_warns():
    assert mutate({IMAGE: facts()}, verify="enforce")[-1].allowed
    *_, decision = mutate({IMAGE: facts(signature="unverified", signature_reason="wrong key")}, verify="warn")
    assert decision.allowed and any("signature unverified" in w and "wrong key" in w for w in decision.warnings)


def test_artifacts_and_deprecated_skills_warn_at_admission():
    *_, decision = mutate({IMAGE: facts(mountable=False, status="deprecated")})
    assert decision.allowed and decision.extracted == 1
    assert any("artifact" in w and "delivered by extraction" in w for w in decision.warnings)
    assert any("deprecated" in w for w in decision.warnings)


# -- validation with the resolver's facts ----------------------------------------------------------

from app.core.validation.agentruntime import ValidationOptions, validate_agentruntime  # noqa: E402


def validate(known: dict[str, ImageFacts], verify="off", delivery="auto", annotation=None, **fields):
    obj = runtime_object("rt", skills=[skill("alpha", image=IMAGE, **fields)])
    if annotation is not None:
        obj["metadata"]["annotations"] = {DEFAULT_DOMAIN.skill_delivery: annotation}
    options = ValidationOptions(image_policy=ImagePolicy(known.get, "off", verify), delivery=delivery)
    return validate_agentruntime(obj, options=options)


ARTIFACT = {IMAGE: facts(mountable=False, config_media_type="application/vnd.oci.empty.v1+json")}


def test_an_artifact_is_an_error_once_known_only_where_delivery_is_image():
    for forced in (validate(ARTIFACT, delivery="image"), validate(ARTIFACT, annotation="image")):
        assert not forced.allowed
        assert any(e.startswith("spec.skills[0].image: Invalid value") and "cannot mount" in e
                   and "delivery is image" in e for e in forced.errors), forced.errors
    auto = validate(ARTIFACT)
    assert auto.allowed and any("empty directory; delivered by extraction" in w for w in auto.warnings)
    for extracted in (validate(ARTIFACT, delivery="extract"), validate(ARTIFACT, delivery="image", annotation="extract")):
        assert extracted.allowed and not any("artifact" in w for w in extracted.warnings)
    report = validate({})
    assert report.allowed and any("not resolved in the registry yet" in w for w in report.warnings)


BUNDLE = {IMAGE: facts(bundle_skills=("pdf-tools", "csv-tools"))}


def test_a_bundle_warns_without_a_path_and_with_one_naming_none_of_its_skills():
    bare = validate(BUNDLE)
    assert bare.allowed and any(w.startswith("spec.skills[0].image: ") and "skill bundle (pdf-tools, csv-tools)" in w
                                and "path" in w for w in bare.warnings), bare.warnings
    wrong = validate(BUNDLE, path="xls-tools")
    assert wrong.allowed and any(w.startswith("spec.skills[0].path: ") and "names none of the skills" in w
                                 for w in wrong.warnings), wrong.warnings
    for right in ("pdf-tools", "skills/csv-tools/"):
        report = validate(BUNDLE, path=right)
        assert report.allowed and not any("bundle" in w for w in report.warnings), (right, report.warnings)


def test_deprecated_and_vanished_tags_warn():
    report = validate({IMAGE: facts(status="deprecated", error="tag no longer resolves", error_kind="not_found")})
    assert report.allowed
    assert any("deprecated" in w for w in report.warnings)


@pytest.mark.parametrize(("verify", "allowed"), [("enforce", False), ("warn", True), ("off", True)])
def test_an_unverified_signature_fails_validation_only_when_enforced(verify, allowed):
    report = validate({IMAGE: facts(signature="unverified", signature_reason="wrong key")}, verify)
    assert report.allowed is allowed
    if verify == "warn":
        assert any("wrong key" in w for w in report.warnings)


def test_the_cached_verdict_never_includes_registry_facts():
    from app.core.validation.agentruntime import stored_object_verdict

    obj = runtime_object("rt", skills=[skill("alpha", image=IMAGE)])
    policy = ImagePolicy({IMAGE: facts(mountable=False)}.get)
    assert stored_object_verdict(obj, ValidationOptions())[0] == ()
    assert validate_agentruntime(obj, options=ValidationOptions(image_policy=policy, delivery="image")).errors
