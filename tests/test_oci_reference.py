"""OCI image references: the grammar validation uses, normalisation, pinning, and the registry allow-list."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from app.core.validation.oci import (
    ImageReference,
    InvalidImageReference,
    parse_reference,
    parse_registry_prefix,
    registry_allowed,
)

DIGEST = "sha256:" + "0123456789abcdef" * 4


@pytest.mark.parametrize(
    "text, registry, repository, tag, digest",
    [
        ("ghcr.io/redhat-et/skillimage/resume-reviewer:v1.0.0", "ghcr.io", "redhat-et/skillimage/resume-reviewer", "v1.0.0", None),
        ("registry.example.com:5000/team/skill:1.0", "registry.example.com:5000", "team/skill", "1.0", None),
        ("localhost:5000/skill", "localhost:5000", "skill", None, None),
        ("localhost/skill", "localhost", "skill", None, None),
        ("[::1]:5000/a/b:v1", "[::1]:5000", "a/b", "v1", None),
        ("ghcr.io/org/skill@" + DIGEST, "ghcr.io", "org/skill", None, DIGEST),
        ("ghcr.io/org/skill:v2@" + DIGEST, "ghcr.io", "org/skill", "v2", DIGEST),
        ("ghcr.io/org/skill@sha512:" + "0123456789abcdef" * 8, "ghcr.io", "org/skill", None, "sha512:" + "0123456789abcdef" * 8),
        ("a/b/c/d/e:tag_1.2-3", "docker.io", "a/b/c/d/e", "tag_1.2-3", None),
        ("busybox", "docker.io", "library/busybox", None, None),
        ("busybox:latest", "docker.io", "library/busybox", "latest", None),
        ("bitnami/nginx:1", "docker.io", "bitnami/nginx", "1", None),
        ("docker.io/busybox", "docker.io", "library/busybox", None, None),
        ("index.docker.io/org/x", "docker.io", "org/x", None, None),
        ("GHCR.IO/org/x", "GHCR.IO", "org/x", None, None),
        ("Registry/org/x", "Registry", "org/x", None, None),  # upper case: a host, paths cannot have it
        ("ab__c--d/e_f.g", "docker.io", "ab__c--d/e_f.g", None, None),
        ("ghcr.io/org/x:" + "A" * 128, "ghcr.io", "org/x", "A" * 128, None),
    ],
)
def test_valid_reference(text: str, registry: str, repository: str, tag: str | None, digest: str | None) -> None:
    reference = parse_reference(text)
    assert reference == ImageReference(registry, repository, tag, digest)
    assert reference.pinned == (digest is not None)
    assert parse_reference(str(reference)) == reference


@pytest.mark.parametrize(
    "text, reason",
    [
        ("", "must not be empty"),
        (" ghcr.io/a/b", "whitespace"),
        ("ghcr.io/a/b\n", "whitespace"),
        ("ghcr.io/Org/b", "repository path must be lower-case"),
        ("ghcr.io//b", "empty components"),
        ("ghcr.io/a/b/", "empty components"),
        ("ghcr.io/-a/b", "must be lower-case letters and digits"),
        ("ghcr.io/a_/b", "must be lower-case letters and digits"),
        ("ghcr.io/a.../b", "must be lower-case letters and digits"),
        ("ghcr.io/a/b:", "tag must be"),
        ("ghcr.io/a/b:-x", "tag must be"),
        ("ghcr.io/a/b:" + "a" * 129, "tag must be"),
        ("ghcr.io/a/b:v1:v2", "must be lower-case letters and digits"),
        ("ghcr.io/a/b@sha256:" + "a" * 63, "64 hex digits"),
        ("ghcr.io/a/b@sha256:" + "g" * 64, "64 hex digits"),
        ("ghcr.io/a/b@sha256:" + "A" * 64, "lower-case hex"),
        ("ghcr.io/a/b@sha512:" + "a" * 64, "sha512 digest must be 128 hex digits"),
        ("ghcr.io/a/b@sha512:" + "a" * 127, "sha512 digest must be 128 hex digits"),
        ("ghcr.io/a/b@sha512:" + "A" * 128, "sha512 digest must be lower-case hex"),
        ("ghcr.io/a/b@sha384:" + "a" * 96, "'sha384' is not supported (use sha256 or sha512)"),
        ("ghcr.io/a/b@sha256:" + "a" * 128, "sha256 digest must be 64 hex digits"),
        ("ghcr.io/a/b@" + "a" * 64, "digest must be sha256:"),
        ("ghcr.io/a/b@sha256:" + "a" * 64 + "@x", "64 hex digits"),
        ("@sha256:" + "a" * 64, "repository name must not be empty"),
        (":v1", "repository name must not be empty"),
        ("-ghcr.io/a/b", "not a valid host"),
        ("ghcr.io:port/a", "not a valid host"),
        ("a/" * 128 + "b", "more than 255 characters"),
    ],
)
def test_invalid_reference(text: str, reason: str) -> None:
    with pytest.raises(InvalidImageReference) as caught:
        parse_reference(text)
    assert reason in str(caught.value)


def test_floating_means_untagged_or_latest_and_unpinned() -> None:
    assert parse_reference("ghcr.io/a/b").floating
    assert parse_reference("ghcr.io/a/b:latest").floating
    assert not parse_reference("ghcr.io/a/b:v1").floating
    assert not parse_reference("ghcr.io/a/b:latest@" + DIGEST).floating


@pytest.mark.parametrize(
    "image, allow_list, allowed",
    [
        ("ghcr.io/org/x:v1", [], True),  # an empty list allows all
        ("ghcr.io/org/x:v1", ["ghcr.io"], True),
        ("ghcr.io/org/x:v1", ["GHCR.io/"], True),
        ("GHCR.IO/org/x:v1", ["ghcr.io"], True),
        ("ghcr.io/org/x:v1", ["ghcr.io/org"], True),
        ("ghcr.io/org/team/x:v1", ["ghcr.io/org/team"], True),
        ("ghcr.io/organisation/x:v1", ["ghcr.io/org"], False),  # whole components, not string prefixes
        ("ghcr.io/org/x:v1", ["ghcr.io/org/x/y"], False),
        ("ghcr.io/org/x:v1", ["quay.io", "ghcr.io/org"], True),
        ("ghcr.io.evil.com/org/x", ["ghcr.io"], False),
        ("localhost:5000/x", ["localhost:5000"], True),
        ("localhost:5001/x", ["localhost:5000"], False),
        ("localhost/x", ["localhost"], True),
        ("nginx", ["docker.io"], True),
        ("nginx", ["docker.io/library"], True),
        ("nginx", ["index.docker.io"], True),
        ("bitnami/nginx", ["docker.io/library"], False),
        ("bitnami/nginx", ["bitnami"], True),  # no host-looking first component: a Docker Hub path
        ("nginx", ["ghcr.io"], False),
        ("GHCR.io/A/b", ["ghcr.io"], False),  # invalid references are never allowed
        ("ghcr.io/org/x", ["https://ghcr.io"], False),  # an invalid entry allows nothing
    ],
)
def test_registry_allowed(image: str, allow_list: list[str], allowed: bool) -> None:
    assert registry_allowed(image, allow_list) is allowed
    if allowed and allow_list:
        assert registry_allowed(parse_reference(image), allow_list)


@pytest.mark.parametrize(
    "entry, text",
    [("ghcr.io", "ghcr.io"), (" ghcr.io/Org/ ", None), ("localhost:5000/a", "localhost:5000/a"), ("bitnami", "docker.io/bitnami")],
)
def test_registry_prefix(entry: str, text: str | None) -> None:
    if text is None:
        with pytest.raises(InvalidImageReference, match="lower-case path component"):
            parse_registry_prefix(entry)
    else:
        assert str(parse_registry_prefix(entry)) == text


@pytest.mark.parametrize("entry", ["", "  ", "ghcr.io/a@sha256:x", "ghcr io", "-bad.host/x"])
def test_registry_prefix_rejects_entries_that_never_match(entry: str) -> None:
    with pytest.raises(InvalidImageReference):
        parse_registry_prefix(entry)


_component = st.from_regex(r"[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)?", fullmatch=True)
_references = st.builds(
    lambda registry, path, tag, digest: (registry + "/" if registry else "") + "/".join(path) + tag + digest,
    st.sampled_from(["", "ghcr.io", "localhost:5000", "registry.example.com:443", "Quay.IO"]),
    st.lists(_component, min_size=1, max_size=4),
    st.sampled_from(["", ":v1", ":latest", ":1.0_rc-2", ":A"]),
    st.sampled_from(["", "@" + DIGEST]),
)


@given(text=_references)
def test_generated_references_parse_and_round_trip(text: str) -> None:
    assume(len(text) <= 200)
    reference = parse_reference(text)
    assert parse_reference(str(reference)) == reference
    assert registry_allowed(reference, [reference.registry])


@given(text=st.text(max_size=60) | st.text(alphabet="abc/:@.-_9AZ", max_size=40))
def test_any_text_parses_or_is_refused_with_a_reason(text: str) -> None:
    try:
        reference = parse_reference(text)
    except InvalidImageReference as problem:
        assert str(problem)
    else:
        assert reference.registry and reference.repository
        assert parse_reference(str(reference)) == reference


def test_the_caches_of_value_checks_hold_no_hostile_strings() -> None:
    """Verdicts are cached per value, but a value longer than any valid one is checked afresh: a cache
    of thousands of 3 MiB strings would hold gigabytes."""
    from app.core.validation import paths, skills

    huge = "ghcr.io/o/" + "a" * (3 * 1024 * 1024)
    checks = [
        (skills.image_verdict, (huge, False, ())),
        (skills.skill_name_problems, ("a" * 1_000_000,)),
        (paths.mount_path_problems, ("/" + "a" * 1_000_000,)),
    ]
    for check, args in checks:
        before = check.cache_info().currsize
        for _ in range(2):
            try:
                check(*args)
            except InvalidImageReference:
                pass
        assert check.cache_info().currsize == before, check.__name__
    short = skills.image_verdict("ghcr.io/o/x:v1", False, ())
    assert skills.image_verdict("ghcr.io/o/x:v1", False, ()) is short  # short ones are cached
