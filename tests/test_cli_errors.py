"""What a new user meets when something is wrong: one line that names the file or flag and says what to
do, worded the same by every command; never a silent `[]`, a library's wording or the wrong usage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from app.service.cli.main import main

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "manifests" / "samples"
POD = SAMPLES / "pod.yaml"


@pytest.fixture(autouse=True)
def _no_settings_from_the_caller(monkeypatch) -> None:
    for name in [n for n in __import__("os").environ if n.startswith("SKILL_WEBHOOK_")]:
        if name != "SKILL_WEBHOOK_RESOLVE_INTERVAL":
            monkeypatch.delenv(name)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# -- a missing file is worded one way ------------------------------------------------------------------


@pytest.mark.parametrize("argv, line", [
    (["validate", "{missing}"], "{missing}: no such file"),
    (["mutate", "--pod", "{missing}", "--runtimes", str(SAMPLES)], "{missing}: no such file"),
    (["mutate", "--pod", str(POD), "--runtimes", "{missing}"], "--runtimes {missing}: no such file"),
    (["ca-bundle", "--ca", "{missing}"], "skill-webhook ca-bundle: --ca {missing}: no such file"),
    (["inspect", "localhost:5000/a:v1", "--registry-auth", "{missing}"],
     "skill-webhook inspect: --registry-auth {missing}: no such file"),
    (["stale", "--kubeconfig", "{missing}"], "skill-webhook stale: --kubeconfig {missing}: no such file"),
], ids=["validate", "mutate --pod", "mutate --runtimes", "ca-bundle", "inspect", "stale"])
def test_a_missing_file_is_one_line_worded_one_way(argv, line, tmp_path, capsys) -> None:
    missing = tmp_path / "missing.yaml"
    code, out, err = run(capsys, *(a.format(missing=missing) for a in argv))
    assert code == 1
    lines = [x for x in (out + err).splitlines() if "AgentRuntime(s) checked" not in x]
    assert lines == [line.format(missing=missing)]
    assert "Errno" not in out + err and "No such file or directory" not in out + err


# -- mutate ------------------------------------------------------------------------------------------------


def test_a_typo_in_an_option_shows_that_command_usage(capsys) -> None:
    with pytest.raises(SystemExit) as exit:
        main(["mutate", "--pod", str(POD), "--runtimes", str(SAMPLES), "--ouptut", "pod"])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: skill-webhook mutate ")
    assert err.splitlines()[-1] == "skill-webhook mutate: error: unrecognized arguments: --ouptut pod"


def test_a_deployment_given_as_the_pod_is_named(tmp_path, capsys) -> None:
    deployment = tmp_path / "deployment.yaml"
    deployment.write_text((ROOT / "manifests" / "deployment.yaml").read_text())
    assert run(capsys, "mutate", "--pod", str(deployment), "--runtimes", str(SAMPLES)) == (
        1, "", f"{deployment}: found a Deployment, expected a Pod\n")


def test_a_pod_without_spec_is_an_error_naming_spec(tmp_path, capsys) -> None:
    pod = yaml.safe_load(POD.read_text())
    del pod["spec"]
    path = tmp_path / "pod.yaml"
    path.write_text(yaml.safe_dump(pod))
    assert run(capsys, "mutate", "--pod", str(path), "--runtimes", str(SAMPLES)) == (
        1, "", f"{path}: the Pod has no spec (spec.containers is what the webhook changes)\n")


def test_runtimes_of_another_api_group_are_not_skipped_silently(tmp_path, capsys) -> None:
    """rossoctl AgentRuntimes read with the default settings: no match, but it says why and what to pass."""
    runtimes = [d for d in yaml.safe_load_all((SAMPLES / "agentruntimes.yaml").read_text()) if d]
    for runtime in runtimes:
        runtime["apiVersion"] = "agent.rossoctl.dev/v1alpha1"
        skills = runtime["spec"].pop("skills")
        runtime["metadata"]["annotations"] = {"rossoctl.io/skill-images": json.dumps(skills)}
    path = tmp_path / "rossoctl.yaml"
    path.write_text(yaml.safe_dump_all(runtimes))
    pod = yaml.safe_load(POD.read_text())
    pod["metadata"]["labels"] = {k.replace("kagenti.io", "rossoctl.io"): v for k, v in pod["metadata"]["labels"].items()}
    pod_file = tmp_path / "pod.yaml"
    pod_file.write_text(yaml.safe_dump(pod))
    code, out, err = run(capsys, "mutate", "--pod", str(pod_file), "--runtimes", str(path))
    assert (code, out.strip()) == (0, "[]")
    assert err == (f"{path}: {len(runtimes)} AgentRuntime(s) of agent.rossoctl.dev/v1alpha1 skipped: not of "
                   "agent.kagenti.dev/v1alpha1; to read them, pass --agentruntime-api agent.rossoctl.dev/v1alpha1 "
                   "--domain rossoctl.io\n")
    code, out, err = run(capsys, "mutate", "--pod", str(pod_file), "--runtimes", str(path),
                         "--agentruntime-api", "agent.rossoctl.dev/v1alpha1", "--domain", "rossoctl.io")
    assert code == 0 and err == "" and json.loads(out) != []
