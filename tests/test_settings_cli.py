"""One settings object: every `serve` flag has a SKILL_WEBHOOK_<FLAG> variable, flags win, bad values fail clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.service.cli import main as cli
from app.service.settings import Settings


def parse_serve(argv: list[str]) -> Settings:
    args = cli.build_parser().parse_args(["serve", *argv])
    return Settings(**{k: v for k, v in vars(args).items() if k in Settings.model_fields and v is not None})


# The documented surface, written out (README "Commands and settings"): flag, variable, default.
DOCUMENTED_FLAGS = [
    ("--source", "SKILL_WEBHOOK_SOURCE", "auto"),
    ("--runtimes", "SKILL_WEBHOOK_RUNTIMES", "manifests/samples"),
    ("--host", "SKILL_WEBHOOK_HOST", "0.0.0.0"),
    ("--port", "SKILL_WEBHOOK_PORT", "8443"),
    ("--metrics-port", "SKILL_WEBHOOK_METRICS_PORT", "8080"),
    ("--tls-cert-file", "SKILL_WEBHOOK_TLS_CERT_FILE", "none"),
    ("--tls-key-file", "SKILL_WEBHOOK_TLS_KEY_FILE", "none"),
    ("--image-volumes", "SKILL_WEBHOOK_IMAGE_VOLUMES", "auto"),
    ("--registry-allow", "SKILL_WEBHOOK_REGISTRY_ALLOW", ""),
    ("--kubeconfig", "SKILL_WEBHOOK_KUBECONFIG", "none"),
    ("--agentruntime-api", "SKILL_WEBHOOK_AGENTRUNTIME_API", "agent.kagenti.dev/v1alpha1"),
    ("--domain", "SKILL_WEBHOOK_DOMAIN", "kagenti.io"),
    ("--log-level", "SKILL_WEBHOOK_LOG_LEVEL", "info"),
    ("--log-format", "SKILL_WEBHOOK_LOG_FORMAT", "json"),
    ("--rollout-timeout", "SKILL_WEBHOOK_ROLLOUT_TIMEOUT", "300.0"),
    ("--event-interval", "SKILL_WEBHOOK_EVENT_INTERVAL", "600.0"),
]


@pytest.mark.parametrize("flag, variable, default", DOCUMENTED_FLAGS, ids=[f for f, _, _ in DOCUMENTED_FLAGS])
def test_every_documented_setting_is_a_flag_listed_in_help_with_its_variable_and_default(
    flag: str, variable: str, default: str, capsys
) -> None:
    with pytest.raises(SystemExit):
        cli.main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"[{variable}; default: {default}]" in text
    assert f"{flag} {variable[len('SKILL_WEBHOOK_'):]}" in text


def test_sidecar_names_default_is_the_documented_list() -> None:
    assert parse_serve([]).sidecars == frozenset({
        "envoy-proxy", "authbridge-proxy", "spiffe-helper", "kagenti-client-registration", "istio-proxy",
        "linkerd-proxy", "vault-agent", "cloud-sql-proxy",
    })


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
        (["--registry-allow", "ghcr.io,https://quay.io"], "--registry-allow"),
        (["--registry-allow", "ghcr.io/Org"], "--registry-allow"),
        (["--registry-allow", "ghcr.io/org@sha256:x"], "--registry-allow"),
    ],
)
def test_bad_values_are_named_and_exit_2(argv: list[str], flag: str, capsys) -> None:
    assert cli.main(["serve", *argv]) == 2
    assert flag in capsys.readouterr().err


@pytest.mark.parametrize("entries", ["ghcr.io", "ghcr.io/org, quay.io", "localhost:5000", "bitnami", "docker.io/library"])
def test_registry_allow_entries_that_name_a_registry_or_path_are_accepted(entries: str) -> None:
    assert parse_serve(["--registry-allow", entries]).registries == tuple(e.strip() for e in entries.split(","))
