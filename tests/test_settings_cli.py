"""One settings object: every `serve` flag has a SKILL_WEBHOOK_<FLAG> variable, flags win, bad values fail clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.service.cli import main as cli
from app.service.cli import options
from app.service.settings import Settings


@pytest.fixture(autouse=True)
def _at_the_root(monkeypatch) -> None:
    monkeypatch.chdir(Path(__file__).resolve().parent.parent)  # the sample files are named relatively
    for name in [n for n in __import__("os").environ if n.startswith("SKILL_WEBHOOK_") and n != "SKILL_WEBHOOK_RESOLVE_INTERVAL"]:
        monkeypatch.delenv(name)


def parse_serve(argv: list[str]) -> Settings:
    args = cli.build_parser().parse_args(["serve", *argv])
    return Settings(**{k: v for k, v in vars(args).items() if k in Settings.model_fields and v is not None})


# The documented surface, written out (docs/configuration.md): flag, variable, default.
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


def test_pydantic_words_do_not_reach_the_user(capsys) -> None:
    assert cli.main(["serve", "--registry-allow", "https://quay.io"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line == ("skill-webhook serve: --registry-allow: allow-list entry 'https://quay.io': "
                    "'https:' is not a valid host[:port]")


def test_log_format_text_is_explained_in_help(capsys) -> None:
    with pytest.raises(SystemExit):
        cli.main(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--log-format LOG_FORMAT log format: json (one JSON object per line) or text (for a terminal)" in text


# -- the options several commands share -----------------------------------------------------------------


def subcommand_options() -> dict[str, dict[str, object]]:
    """command -> {dest: argparse action} of every subcommand's shared options."""
    found = {}
    for name, parser in cli._build(None)[1].items():  # noqa: SLF001 - the parsers main dispatches with
        if name in ("pull",):
            continue  # the puller's init container reads its own, pod-side settings
        found[name] = {a.dest: a for a in parser._actions if a.dest in options.SHARED}  # noqa: SLF001
    return found


def test_shared_options_are_declared_once_with_the_serve_settings() -> None:
    for name, option in options.SHARED.items():
        field = Settings.model_fields[name]
        assert (field.default, field.description) == (option.default, option.help), name
    seen = subcommand_options()
    assert {"domain", "agentruntime_api", "registry_allow"} <= set(seen["validate"])
    assert {"domain", "agentruntime_api", "registry_allow", "sidecar_names"} <= set(seen["mutate"])
    assert {"kubeconfig", "pin_digests", "registry_auth", "registry_ca", "insecure_registries",
            "registry_allow", "domain", "agentruntime_api"} <= set(seen["stale"])
    assert {"registry_auth", "registry_ca", "insecure_registries"} <= set(seen["inspect"])
    for command, actions in seen.items():
        for dest, action in actions.items():
            option = options.SHARED[dest]
            assert option.flag in action.option_strings, (command, dest)
            assert f"[{option.env}; default: " in action.help, (command, dest)


BAD_VALUES = [
    (["--registry-allow", "https://quay.io"], "--registry-allow"),
    (["--domain", "Not A Domain"], "--domain"),
    (["--agentruntime-api", "no-version"], "--agentruntime-api"),
]
COMMANDS = {
    "serve": ["serve", "--source", "file"],
    "validate": ["validate", "manifests/samples/agentruntimes.yaml"],
    "mutate": ["mutate", "--pod", "manifests/samples/pod.yaml", "--runtimes", "manifests/samples"],
    "stale": ["stale", "--kubeconfig", "/nonexistent"],
    "manifests": ["manifests"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("argv, flag", BAD_VALUES, ids=[f for _, f in BAD_VALUES])
def test_every_command_refuses_a_bad_shared_value_the_same_way(command: str, argv: list[str], flag: str, capsys) -> None:
    if command == "manifests" and flag == "--registry-allow":
        return  # the install manifests do not take an allow-list
    assert cli.main([*COMMANDS[command], *argv]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"skill-webhook {command}: {flag}: "), lines


@pytest.mark.parametrize("command", ["validate", "mutate", "stale"])
def test_a_bad_value_from_the_environment_names_the_variable(command: str, monkeypatch, capsys) -> None:
    monkeypatch.setenv("SKILL_WEBHOOK_REGISTRY_ALLOW", "ghcr.io/Org")
    assert cli.main(COMMANDS[command]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"skill-webhook {command}: SKILL_WEBHOOK_REGISTRY_ALLOW (--registry-allow): ")
    assert "'Org' is not a valid lower-case path component" in line


@pytest.mark.parametrize("command", ["serve", "stale", "inspect"])
def test_insecure_registries_entries_must_be_hosts(command: str, capsys) -> None:
    argv = {"serve": ["serve"], "stale": ["stale"], "inspect": ["inspect", "localhost:5000/a:v1"]}[command]
    assert cli.main([*argv, "--insecure-registries", "localhost:5000,http://registry.local"]) == 2
    assert "'http://registry.local' is not a registry host[:port]" in capsys.readouterr().err
    assert parse_serve(["--insecure-registries", "localhost:5000, 127.0.0.1:5001"]).insecure == (
        "localhost:5000", "127.0.0.1:5001")


@pytest.mark.parametrize("entries", ["ghcr.io", "ghcr.io/org, quay.io", "localhost:5000", "bitnami", "docker.io/library"])
def test_registry_allow_entries_that_name_a_registry_or_path_are_accepted(entries: str) -> None:
    assert parse_serve(["--registry-allow", entries]).registries == tuple(e.strip() for e in entries.split(","))


def test_a_choice_outside_the_list_is_one_line_too(capsys) -> None:
    assert cli.main(["stale", "--pin-digests", "maybe"]) == 2
    assert capsys.readouterr().err == 'skill-webhook stale: --pin-digests: "maybe" is not one of off, on, required\n'
