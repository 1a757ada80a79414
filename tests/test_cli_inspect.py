"""`skill-webhook inspect` against the real registry: a skillimage exits 0, an artifact or a missing
image exits 1; table and JSON output; signatures only with --cosign-key."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from app.core import registry_facts as supply
from app.service.cli.main import main
from tests.registry_harness import Layout, empty_config_artifact, new_cosign_key, signature_manifest, skillimage


@pytest.fixture(scope="module")
def images(docker_registries, tmp_path_factory):
    regs = docker_registries
    work = tmp_path_factory.mktemp("inspect")
    layout = Layout(work / "oci")
    key, key_file = new_cosign_key(work, "cosign")
    skill = layout.tag(skillimage(layout, "resume-reviewer", "1.4.0", description="Reviews resumes"), "skill")
    artifact = layout.tag(empty_config_artifact(layout, "artifact"), "artifact")
    regs.secure.push(layout, "skill", "inspect/resume-reviewer", dest_tag="v1")
    regs.secure.push(layout, "artifact", "inspect/artifact", dest_tag="v1")
    sig_tag = supply.signature_tag(skill)
    layout.tag(signature_manifest(layout, key, f"{regs.secure.host}/inspect/resume-reviewer", skill), sig_tag)
    regs.secure.push(layout, sig_tag, "inspect/resume-reviewer")
    auth = regs.secure.docker_config(work / "config.json")
    flags = ["--registry-auth", str(auth), "--registry-ca", str(regs.secure.ca_file)]
    return regs.secure.host, skill, artifact, flags, key_file


def test_a_skillimage_inspects_clean(images, capsys) -> None:
    host, skill, _, flags, _ = images
    assert main(["inspect", f"{host}/inspect/resume-reviewer:v1", *flags]) == 0
    out = capsys.readouterr().out
    header, row = out.splitlines()[:2]
    assert header.split() == ["IMAGE", "DIGEST", "MOUNTABLE", "SKILL", "VERSION", "STATUS", "SIGNATURE"]
    assert row.split() == [f"{host}/inspect/resume-reviewer:v1", skill, "yes", "resume-reviewer", "1.4.0", "published", "off"]
    assert "description: Reviews resumes" in out


def test_an_artifact_exits_1(images, capsys) -> None:
    host, _, artifact, flags, _ = images
    assert main(["inspect", f"{host}/inspect/artifact:v1", *flags, "-o", "json"]) == 1
    (result,) = json.loads(capsys.readouterr().out)
    assert result["digest"] == artifact and result["mountable"] is False
    assert result["configMediaType"] == supply.OCI_EMPTY and "empty config" in result["mountReason"]


def test_a_missing_image_exits_1_and_says_why(images, capsys) -> None:
    host, _, _, flags, _ = images
    assert main(["inspect", f"{host}/inspect/resume-reviewer:v1", f"{host}/inspect/nothing:v1", *flags]) == 1
    out = capsys.readouterr().out
    assert f"{host}/inspect/nothing:v1: error: tag not found" in out


def test_signature_verdict_with_a_key(images, capsys) -> None:
    host, skill, _, flags, key_file = images
    assert main(["inspect", f"{host}/inspect/resume-reviewer:v1", *flags, "--cosign-key", str(key_file), "-o", "json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert result["signature"] == {"verdict": "verified", "reason": f"signed with {key_file}"}
    assert result["pinnedReference"] == f"{host}/inspect/resume-reviewer:v1@{skill}"


def test_an_unusable_key_is_a_usage_error(images, tmp_path, capsys) -> None:
    host, _, _, flags, _ = images
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    assert main(["inspect", f"{host}/inspect/resume-reviewer:v1", *flags, "--cosign-key", str(bad)]) == 2
    assert "no PEM public key" in capsys.readouterr().err


def test_the_console_script(images) -> None:
    host, _, _, flags, _ = images
    done = subprocess.run(
        [sys.executable, "-m", "app.service.cli.main", "inspect", f"{host}/inspect/artifact:v1", *flags],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 1
    assert "not mountable: an OCI artifact with an empty config" in done.stdout


def test_a_plain_http_registry_says_to_list_it_as_insecure(docker_registries, capsys) -> None:
    plain = docker_registries.plain.host
    assert main(["inspect", f"{plain}/inspect/nothing:v1"]) == 1
    out = capsys.readouterr().out
    assert (f"{plain}/inspect/nothing:v1: error: TLS: the registry answered in plain HTTP; if it has no TLS, "
            "add it to --insecure-registries") in out
    assert "_ssl.c" not in out and "WRONG_VERSION_NUMBER" not in out
    assert main(["inspect", f"{plain}/inspect/nothing:v1", "--insecure-registries", plain]) == 1
    assert f"{plain}/inspect/nothing:v1: error: tag not found" in capsys.readouterr().out


@pytest.mark.parametrize("flag, content, message", [
    ("--registry-auth", None, "--registry-auth {path}: no such file"),
    ("--registry-auth", "{not json", "--registry-auth {path}: not a usable docker config.json: "),
    ("--registry-ca", None, "--registry-ca {path}: no such file"),
    ("--registry-ca", "not a certificate", "--registry-ca {path}: not a PEM CA bundle"),
])
def test_unusable_registry_files_stop_the_command(images, tmp_path, capsys, flag, content, message) -> None:
    host = images[0]
    path = tmp_path / "file"
    if content is not None:
        path.write_text(content)
    assert main(["inspect", f"{host}/inspect/resume-reviewer:v1", flag, str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"skill-webhook inspect: {message.format(path=path)}")
    assert len(err.splitlines()) == 1


def test_a_bundle_lists_its_skills_and_an_artifact_says_it_is_extracted(docker_registries, images, tmp_path, capsys) -> None:
    host, _, _, flags, _ = images
    layout = Layout(tmp_path / "oci")
    files = {"pdf-tools/SKILL.md": b"---\nname: pdf-tools\n---\n", "csv-tools/SKILL.md": b"---\nname: csv-tools\n---\n"}
    annotations = {supply.SKILLIMAGE_BUNDLE: "true", supply.SKILLIMAGE_BUNDLE_SKILLS: "pdf-tools, csv-tools"}
    layout.tag(layout.image(files, annotations), "bundle")
    docker_registries.secure.push(layout, "bundle", "inspect/bundle", dest_tag="v1")
    assert main(["inspect", f"{host}/inspect/bundle:v1", *flags]) == 0
    out = capsys.readouterr().out
    assert f"{host}/inspect/bundle:v1: bundle of 2 skill(s): pdf-tools, csv-tools (choose one with path)" in out
    assert main(["inspect", "-o", "json", f"{host}/inspect/bundle:v1", *flags]) == 0
    assert json.loads(capsys.readouterr().out)[0]["bundleSkills"] == ["pdf-tools", "csv-tools"]
    main(["inspect", f"{host}/inspect/artifact:v1", *flags])
    assert "an image volume of it is an empty directory; --delivery auto extracts it" in capsys.readouterr().out
