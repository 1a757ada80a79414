"""One settings object: every `serve` flag has a SKILL_WEBHOOK_<FLAG> variable, flags win, bad values fail clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.service import cli
from app.service.settings import Settings


def parse_serve(argv: list[str]) -> Settings:
    args = cli.build_parser().parse_args(["serve", *argv])
    return Settings(**{k: v for k, v in vars(args).items() if k in Settings.model_fields and v is not None})


@pytest.mark.parametrize("field", sorted(Settings.model_fields))
def test_every_setting_is_a_flag_listed_in_help_with_its_variable(field: str, capsys) -> None:
    with pytest.raises(SystemExit):
        cli.main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--" + field.replace("_", "-") in text
    assert "SKILL_WEBHOOK_" + field.upper() in text


def test_environment_is_read_and_flags_win(monkeypatch) -> None:
    monkeypatch.setenv("SKILL_WEBHOOK_PORT", "9443")
    monkeypatch.setenv("SKILL_WEBHOOK_TLS_CERT_FILE", "/tls/tls.crt")
    monkeypatch.setenv("SKILL_WEBHOOK_IMAGE_VOLUMES", "off")
    settings = parse_serve(["--image-volumes", "on"])
    assert settings.port == 9443
    assert settings.tls_cert_file == Path("/tls/tls.crt")
    assert settings.image_volumes == "on"


def test_lists_are_split_and_trimmed() -> None:
    settings = parse_serve(["--registry-allow", "ghcr.io/org, quay.io ,", "--sidecar-names", "a,b"])
    assert settings.registries == ("ghcr.io/org", "quay.io")
    assert settings.sidecars == frozenset({"a", "b"})


def test_source_auto_picks_kube_with_a_kubeconfig(tmp_path: Path) -> None:
    assert parse_serve(["--kubeconfig", str(tmp_path / "k")]).resolved_source() == "kube"
    assert parse_serve(["--source", "file", "--kubeconfig", "x"]).resolved_source() == "file"


@pytest.mark.parametrize(
    "argv,flag",
    [
        (["--port", "70000"], "--port"),
        (["--image-volumes", "maybe"], "--image-volumes"),
        (["--agentruntime-api", "no-version"], "--agentruntime-api"),
        (["--log-format", "xml"], "--log-format"),
    ],
)
def test_bad_values_are_named_and_exit_2(argv: list[str], flag: str, capsys) -> None:
    assert cli.main(["serve", *argv]) == 2
    assert flag in capsys.readouterr().err
