"""The OCI distribution client and one-shot resolution against a real registry (docker-registry with
TLS and htpasswd, and a plain-HTTP one), and stand-ins for the failures a real one will not produce."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from pathlib import Path

import pytest

from app.core import registry_facts as supply
from app.sources.registry.client import DockerConfigAuth, RegistryClient, api_host, parse_challenge, parse_docker_config
from app.sources.registry.lookup import resolve_image
from tests.registry_harness import (
    Layout,
    Registries,
    StallingServer,
    StandInRegistry,
    agentskills_image,
    empty_config_artifact,
    multi_arch_index,
    sha256,
    skillimage,
)


@pytest.fixture(scope="module")
def regs(docker_registries, tmp_path_factory) -> Registries:
    regs = docker_registries
    layout = Layout(tmp_path_factory.mktemp("layout") / "oci")
    regs.pushed["resume"] = layout.tag(skillimage(layout, "resume-reviewer", "1.0.0"), "resume")
    regs.pushed["old"] = layout.tag(skillimage(layout, "old-skill", "0.9.0", status="deprecated"), "old")
    regs.pushed["agentskills"] = layout.tag(agentskills_image(layout, "blog-writer"), "agentskills")
    regs.pushed["artifact"] = layout.tag(empty_config_artifact(layout, "artifact-skill"), "artifact")
    regs.pushed["multi"] = layout.tag(multi_arch_index(layout, "multi", "2.0.0"), "multi")
    regs.pushed["typed"] = layout.tag(layout.image({"SKILL.md": b"x"}, artifact_type="application/x-skill"), "typed")
    for tag, repo in [("resume", "skills/resume"), ("old", "skills/old"), ("agentskills", "skills/blog-writer"),
                      ("artifact", "skills/artifact"), ("multi", "skills/multi"), ("typed", "skills/typed")]:
        regs.secure.push(layout, tag, repo, dest_tag="v1")
    regs.plain.push(layout, "resume", "skills/resume", dest_tag="v1")
    return regs


@pytest.fixture
def auth_file(regs, tmp_path) -> Path:
    return regs.secure.docker_config(tmp_path / "config.json")


def resolve(reference: str, **client_args) -> supply.ImageFacts:
    async def go() -> supply.ImageFacts:
        client = RegistryClient(**{"timeout": 5.0, **client_args})
        try:
            return await resolve_image(client, reference)
        finally:
            await client.aclose()
    return asyncio.run(go())


def test_skillimage_over_tls_with_basic_auth(regs, auth_file) -> None:
    facts = resolve(f"{regs.secure.host}/skills/resume:v1", auth_file=auth_file, ca_file=regs.secure.ca_file)
    assert facts.error is None
    assert facts.digest == regs.pushed["resume"]
    assert (facts.media_type, facts.config_media_type) == (supply.OCI_MANIFEST, supply.OCI_CONFIG)
    assert facts.mountable is True
    assert (facts.title, facts.version, facts.status) == ("resume-reviewer", "1.0.0", "published")
    assert facts.description == "The resume-reviewer skill"
    assert facts.signature == "off"
    assert facts.pinned_reference == f"{regs.secure.host}/skills/resume:v1@{regs.pushed['resume']}"


def test_agentskills_layout_and_deprecated_status(regs, auth_file) -> None:
    common = dict(auth_file=auth_file, ca_file=regs.secure.ca_file)
    blog = resolve(f"{regs.secure.host}/skills/blog-writer:v1", **common)
    assert blog.mountable and blog.agentskills_name == "blog-writer" and blog.title is None
    old = resolve(f"{regs.secure.host}/skills/old:v1", **common)
    assert old.deprecated and old.mountable


def test_artifacts_are_not_mountable(regs, auth_file) -> None:
    common = dict(auth_file=auth_file, ca_file=regs.secure.ca_file)
    empty = resolve(f"{regs.secure.host}/skills/artifact:v1", **common)
    assert empty.digest == regs.pushed["artifact"]
    assert empty.mountable is False and empty.config_media_type == supply.OCI_EMPTY
    assert "empty config" in empty.mount_reason
    typed = resolve(f"{regs.secure.host}/skills/typed:v1", **common)
    assert typed.mountable is False and "artifactType" in typed.mount_reason


def test_multi_arch_index_decides_from_linux_amd64(regs, auth_file) -> None:
    facts = resolve(f"{regs.secure.host}/skills/multi:v1", auth_file=auth_file, ca_file=regs.secure.ca_file)
    assert facts.digest == regs.pushed["multi"]  # the index digest: what every node resolves the tag to
    assert facts.media_type == supply.OCI_INDEX and facts.mountable is True
    assert facts.title == "multi (amd64)"  # from the amd64 entry, though arm64 is listed first
    assert facts.description == "multi, multi-arch"  # the index's own annotation


def test_digest_pinned_reference_still_learns_the_rest(regs, auth_file) -> None:
    ref = f"{regs.secure.host}/skills/resume:v1@{regs.pushed['resume']}"
    facts = resolve(ref, auth_file=auth_file, ca_file=regs.secure.ca_file)
    assert facts.digest == regs.pushed["resume"] and facts.mountable and facts.version == "1.0.0"
    assert facts.pinned_reference == ref


def test_digest_that_does_not_exist(regs, auth_file) -> None:
    facts = resolve(f"{regs.secure.host}/skills/resume@sha256:{'0' * 64}", auth_file=auth_file, ca_file=regs.secure.ca_file)
    assert facts.error_kind == "not_found" and facts.error == "manifest not found"


def test_missing_tag_and_repository_are_not_found(regs, auth_file) -> None:
    common = dict(auth_file=auth_file, ca_file=regs.secure.ca_file)
    assert resolve(f"{regs.secure.host}/skills/resume:v9", **common).error == "tag not found"
    missing = resolve(f"{regs.secure.host}/skills/nothing:v1", **common)
    assert missing.error_kind == "not_found" and missing.digest is None and missing.mountable is None


def test_wrong_or_no_credentials_are_unauthorized(regs, tmp_path) -> None:
    wrong = regs.secure.docker_config(tmp_path / "wrong.json", password="not-it")
    facts = resolve(f"{regs.secure.host}/skills/resume:v1", auth_file=wrong, ca_file=regs.secure.ca_file)
    assert (facts.error_kind, facts.error) == ("unauthorized", "401 unauthorized")
    anonymous = resolve(f"{regs.secure.host}/skills/resume:v1", ca_file=regs.secure.ca_file)
    assert anonymous.error_kind == "unauthorized"


def test_tls_is_verified_without_the_private_ca(regs, auth_file) -> None:
    facts = resolve(f"{regs.secure.host}/skills/resume:v1", auth_file=auth_file)
    assert facts.error_kind == "tls" and facts.digest is None


def test_plain_http_only_through_insecure_registries(regs) -> None:
    ref = f"{regs.plain.host}/skills/resume:v1"
    facts = resolve(ref, insecure=[regs.plain.host])
    assert facts.error is None and facts.digest == regs.pushed["resume"] and facts.mountable
    refused = resolve(ref)  # https to a plain-HTTP server
    assert refused.error is not None and refused.digest is None


def test_credentials_reload_when_the_file_changes(regs, tmp_path) -> None:
    path = regs.secure.docker_config(tmp_path / "config.json", password="wrong-pass")

    async def go() -> tuple[str | None, str | None]:
        client = RegistryClient(auth_file=path, ca_file=regs.secure.ca_file, timeout=5.0)
        try:
            ref = f"{regs.secure.host}/skills/resume:v1"
            first = await resolve_image(client, ref)
            regs.secure.docker_config(path)  # the Secret is updated in place
            stamp = time.time_ns() + 1_000_000_000
            os.utime(path, ns=(stamp, stamp))
            second = await resolve_image(client, ref)
            return first.error, second.digest
        finally:
            await client.aclose()

    error, digest = asyncio.run(go())
    assert error == "401 unauthorized" and digest == regs.pushed["resume"]


def test_docker_config_forms(tmp_path) -> None:
    token = base64.b64encode(b"u1:p:with:colons").decode()
    creds = parse_docker_config(json.dumps({"auths": {
        "https://index.docker.io/v1/": {"auth": token},
        "ghcr.io": {"username": "u2", "password": "p2"},
        "http://reg.local:5000/v2/": {"auth": base64.b64encode(b"u3:p3").decode()},
        "empty.io": {},
    }}).encode())
    assert creds == {"index.docker.io": ("u1", "p:with:colons"), "ghcr.io": ("u2", "p2"), "reg.local:5000": ("u3", "p3")}
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"auths": {"https://index.docker.io/v1/": {"auth": token}}}))
    auth = DockerConfigAuth(path)
    assert auth.credentials("docker.io") == ("u1", "p:with:colons")
    assert auth.credentials("registry-1.docker.io") == ("u1", "p:with:colons")
    assert auth.credentials("ghcr.io") is None
    path.write_text("{ half a file")
    os.utime(path, ns=(time.time_ns() + 2_000_000_000,) * 2)
    assert auth.credentials("docker.io") == ("u1", "p:with:colons")  # the last good content is kept
    with pytest.raises(ValueError):
        parse_docker_config(b'{"auths": {"x.io": {"auth": "%%%"}}}')


def test_docker_hub_normalisation() -> None:
    assert api_host("docker.io") == "registry-1.docker.io"
    assert api_host("index.docker.io") == "registry-1.docker.io"
    assert api_host("127.0.0.1:5000") == "127.0.0.1:5000"
    assert RegistryClient(insecure=["127.0.0.1:5000"]).base_url("127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert RegistryClient().base_url("docker.io") == "https://registry-1.docker.io"


def test_challenge_parsing() -> None:
    scheme, params = parse_challenge('Bearer realm="https://auth.io/token",service="registry.io",scope="repository:a/b:pull,push"')
    assert scheme == "bearer"
    assert params == {"realm": "https://auth.io/token", "service": "registry.io", "scope": "repository:a/b:pull,push"}
    assert parse_challenge('Basic realm="x"') == ("basic", {"realm": "x"})


def test_bearer_token_flow(tmp_path) -> None:
    body = json.dumps({"schemaVersion": 2, "mediaType": supply.OCI_MANIFEST,
                       "config": {"mediaType": supply.OCI_CONFIG, "digest": sha256(b"{}"), "size": 2},
                       "layers": [], "annotations": {supply.VERSION: "3.1.0"}}).encode()
    standin = StandInRegistry(bearer=True, manifests={"/v2/org/skill/manifests/v1": (supply.OCI_MANIFEST, body)})
    try:
        config = tmp_path / "config.json"
        config.write_text(json.dumps({"auths": {standin.host: {"username": "skills", "password": "s3cret-pass"}}}))
        facts = resolve(f"{standin.host}/org/skill:v1", auth_file=config, insecure=[standin.host])
        assert facts.error is None and facts.digest == sha256(body) and facts.version == "3.1.0"
        assert standin.token_requests[0] == {"scope": "repository:org/skill:pull", "service": "standin"}
        anonymous = resolve(f"{standin.host}/org/skill:v1", insecure=[standin.host])
        assert anonymous.error_kind == "unauthorized"
    finally:
        standin.stop()


@pytest.mark.parametrize("status,kind", [(500, "server_error"), (503, "server_error"), (429, "server_error"),
                                         (404, "not_found"), (400, "bad_response")])
def test_error_statuses(status: int, kind: str) -> None:
    standin = StandInRegistry(status)
    try:
        facts = resolve(f"{standin.host}/org/skill:v1", insecure=[standin.host])
        assert facts.error_kind == kind and facts.digest is None
    finally:
        standin.stop()


def test_a_stalling_registry_costs_one_timeout() -> None:
    stall = StallingServer()
    try:
        started = time.monotonic()
        facts = resolve(f"{stall.host}/org/skill:v1", insecure=[stall.host], timeout=0.5)
        elapsed = time.monotonic() - started
        assert (facts.error_kind, facts.error) == ("timeout", "timeout after 0.5s")
        assert elapsed < 5.0
    finally:
        stall.stop()


def test_nothing_listening_is_unreachable() -> None:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    facts = resolve(f"127.0.0.1:{port}/org/skill:v1", insecure=[f"127.0.0.1:{port}"])
    assert facts.error_kind == "unreachable"
