"""`skill-webhook validate FILE...`: the offline validator, and its agreement with the /validate dry run."""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import pytest
import yaml

from app.core.matching.index import AgentRuntimeIndex
from app.service.cli import validate as cli_validate
from app.sources.files.source import FileSource, document_files

VALID = """\
apiVersion: agent.kagenti.dev/v1alpha1
kind: AgentRuntime
metadata: {name: resume-agent-runtime, namespace: team-a}
spec:
  type: agent
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: resume-agent}
  skills:
    - name: resume-reviewer
      image: ghcr.io/redhat-et/skillimage/resume-reviewer@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
      mountPath: /agent/skills/resume-reviewer
"""
INVALID = VALID.replace("type: agent", "type: robot").replace("/agent/skills/resume-reviewer", "/proc/skills")
UNPINNED = VALID.replace("@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", ":v1")
DEPLOYMENT = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: resume-agent}\n"

TYPE_ERROR = 'spec.type: Unsupported value: "robot": supported values: "agent", "tool"'
PROC_ERROR = 'spec.skills[0].mountPath: Invalid value: "/proc/skills": must not be /proc or beneath it'
UNPINNED_WARNING = (
    "warning: spec.skills: 1 skill image is not pinned by digest (resume-reviewer): a tag can be moved, "
    "so pods created later may mount other content; use image@sha256:<digest>"
)


def run(*argv: str, stdin: bytes | None = None, monkeypatch: pytest.MonkeyPatch | None = None) -> int:
    parser = argparse.ArgumentParser(prog="skill-webhook")
    commands = parser.add_subparsers(dest="command", required=True)
    cli_validate.add_parser(commands)
    args = parser.parse_args(["validate", *argv])
    if stdin is not None:
        assert monkeypatch is not None
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    assert args.handler is cli_validate.run
    return args.handler(args)


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_valid_file_exits_0_silently(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, "ok.yaml", VALID)
    assert run(str(path)) == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert "1 AgentRuntime(s) checked: 0 error(s), 0 warning(s)" in err


def test_every_problem_one_line_each_and_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, "bad.yaml", INVALID)
    assert run(str(path)) == 1
    assert capsys.readouterr().out.splitlines() == [f"{path}: {TYPE_ERROR}", f"{path}: {PROC_ERROR}"]


def test_warnings_alone_exit_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, "warn.yaml", UNPINNED)
    assert run(str(path)) == 0
    assert capsys.readouterr().out.splitlines() == [f"{path}: {UNPINNED_WARNING}"]


def test_multi_document_lines_carry_the_document_index(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = "---\n".join(
        [VALID, DEPLOYMENT, INVALID.replace("resume-agent-runtime", "second").replace("name: resume-agent}", "name: other}")]
    )
    path = _write(tmp_path, "many.yaml", text)
    assert run(str(path)) == 1
    out, err = capsys.readouterr()
    assert out.splitlines() == [f"{path}#3: {TYPE_ERROR}", f"{path}#3: {PROC_ERROR}"]
    assert f'{path}#2: note: skipped Deployment (apps/v1) "resume-agent": not an AgentRuntime' in err


def test_stdin(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("-", stdin=INVALID.encode(), monkeypatch=monkeypatch) == 1
    assert capsys.readouterr().out.splitlines() == [f"<stdin>: {TYPE_ERROR}", f"<stdin>: {PROC_ERROR}"]


def test_json_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, "runtime.json", json.dumps(yaml.safe_load(INVALID)))
    assert run(str(path)) == 1
    assert capsys.readouterr().out.splitlines() == [f"{path}: {TYPE_ERROR}", f"{path}: {PROC_ERROR}"]


def test_parse_error_names_line_and_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = _write(tmp_path, "broken.yaml", "apiVersion: v1\nkind: [AgentRuntime\n")
    good = _write(tmp_path, "good.yaml", VALID)
    assert run(str(broken), str(good)) == 1
    out, err = capsys.readouterr()
    (line,) = out.splitlines()
    assert line.startswith(f"{broken}:3:1: ") and "expected ',' or ']'" in line
    assert "1 AgentRuntime(s) checked: 1 error(s) (1 file(s) not read or parsed), 0 warning(s)" in err


def test_alias_bomb_is_a_parse_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, "bomb.yaml", 'a: &a ["x","x"]\nb: [*a,*a]\n')
    assert run(str(path)) == 1
    assert capsys.readouterr().out.strip() == f"{path}:1:4: YAML anchors are not allowed"


def test_unreadable_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.yaml"
    assert run(str(missing)) == 1
    out, err = capsys.readouterr()
    assert out.strip() == f"{missing}: no such file"
    # The summary counts what the exit status counts.
    assert "0 AgentRuntime(s) checked: 1 error(s) (1 file(s) not read or parsed), 0 warning(s)" in err


def test_directory_of_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write(tmp_path, "a.yaml", VALID)
    _write(tmp_path, "b.yml", INVALID.replace("resume-agent}", "b}"))
    _write(tmp_path, "notes.txt", "not: read")
    assert run(str(tmp_path)) == 1
    out, err = capsys.readouterr()
    assert out.splitlines() == [f"{tmp_path / 'b.yml'}: {TYPE_ERROR}", f"{tmp_path / 'b.yml'}: {PROC_ERROR}"]
    assert "2 AgentRuntime(s) checked: 2 error(s), 0 warning(s)" in err


def test_two_runtimes_on_one_workload_across_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = _write(tmp_path, "first.yaml", VALID)
    second = _write(tmp_path, "second.yaml", VALID.replace("name: resume-agent-runtime", "name: another"))
    assert run(str(first), str(second)) == 1
    assert capsys.readouterr().out.splitlines() == [
        f'{second}: spec.targetRef: Forbidden: AgentRuntime "resume-agent-runtime" already targets Deployment '
        '"resume-agent" in namespace "team-a"; a workload takes its skills from one AgentRuntime'
    ]


def test_kind_list_is_looked_into(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    items = [yaml.safe_load(VALID), yaml.safe_load(INVALID.replace("resume-agent}", "b}"))]
    path = _write(tmp_path, "list.yaml", yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": items}))
    assert run(str(path)) == 1
    assert capsys.readouterr().out.splitlines() == [f"{path}.items[1]: {TYPE_ERROR}", f"{path}.items[1]: {PROC_ERROR}"]


def test_registry_allow_flag_and_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path, "ok.yaml", VALID)
    assert run("--registry-allow", "quay.io, ghcr.io/redhat-et", str(path)) == 0
    assert run("--registry-allow", "quay.io", str(path)) == 1
    assert (
        'spec.skills[0].image: Forbidden: image "ghcr.io/redhat-et/skillimage/resume-reviewer@sha256:'
        '0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" is not in the registry allow-list (quay.io)'
    ) in capsys.readouterr().out
    monkeypatch.setenv("SKILL_WEBHOOK_REGISTRY_ALLOW", "quay.io")
    assert run(str(path)) == 1


def test_other_agentruntime_api(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # An AgentRuntime of another group is an error that names the group wanted (a forgotten
    # --agentruntime-api), not a silent skip.
    path = _write(tmp_path, "ok.yaml", VALID.replace("agent.kagenti.dev/v1alpha1", "agents.example.org/v1"))
    assert run(str(path)) == 1
    assert capsys.readouterr().out.splitlines() == [
        f'{path}: apiVersion: Unsupported value: "agents.example.org/v1": supported values: "agent.kagenti.dev/v1alpha1"'
    ]
    assert run("--agentruntime-api", "agents.example.org/v1", str(path)) == 0
    assert "1 AgentRuntime(s) checked" in capsys.readouterr().err


def test_empty_and_non_object_documents(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = _write(tmp_path, "empty.yaml", "# nothing\n")
    assert run(str(empty)) == 0
    assert f"{empty}: note: no documents" in capsys.readouterr().err
    scalar = _write(tmp_path, "scalar.yaml", "just text\n")
    assert run(str(scalar)) == 1
    assert capsys.readouterr().out.splitlines() == [
        f'{scalar}: <root>: Invalid value: "string": must be an object (an AgentRuntime)'
    ]


def _tree(root: Path) -> dict[str, Path]:
    """A runtimes directory as admins keep them: nested, with a ConfigMap mount's hidden copies."""
    files = {
        "top": root / "a.yaml",
        "nested": root / "team-b" / "deep" / "b.YML",
        "json": root / "team-c" / "c.json",
    }
    for path in (*files.values(), root / "..data" / "a.yaml", root / ".git" / "x.yaml", root / "team-b" / ".swap.yaml",
                 root / "notes.txt"):
        path.parent.mkdir(parents=True, exist_ok=True)
    files["top"].write_text(VALID)
    files["nested"].write_text(INVALID.replace("resume-agent-runtime", "nested").replace("resume-agent}", "b}"))
    files["json"].write_text(json.dumps(yaml.safe_load(VALID.replace("resume-agent-runtime", "c").replace("resume-agent}", "c}"))))
    for hidden in (root / "..data" / "a.yaml", root / ".git" / "x.yaml", root / "team-b" / ".swap.yaml"):
        hidden.write_text(INVALID)  # would be reported if it were read
    (root / "notes.txt").write_text("not: read\n")
    return files


def test_a_directory_is_read_recursively_as_serve_reads_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = _tree(tmp_path)
    assert document_files(tmp_path) == sorted(files.values())
    assert run(str(tmp_path)) == 1
    out, err = capsys.readouterr()
    assert out.splitlines() == [f"{files['nested']}: {TYPE_ERROR}", f"{files['nested']}: {PROC_ERROR}"]
    assert "3 AgentRuntime(s) checked: 2 error(s), 0 warning(s)" in err
    # The file source reads exactly those files: the valid two and the nested one (valid or not).
    index = AgentRuntimeIndex()
    FileSource(index, tmp_path).reload()
    assert sorted(r.metadata.name for r in index.all()) == ["c", "nested", "resume-agent-runtime"]


def test_a_file_given_by_name_is_read_whatever_its_suffix(tmp_path: Path) -> None:
    path = _write(tmp_path, "runtime.txt", VALID)
    assert document_files(path) == [path]
    assert document_files(tmp_path / "missing") == []


def test_duplicate_keys_are_an_error_at_their_position(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, "dup.yaml", VALID.replace("  type: agent\n", "  type: agent\n  type: tool\n"))
    assert run(str(path)) == 1
    assert capsys.readouterr().out == f"{path}:6:3: duplicate key \"type\": the API server's strict decoding refuses it\n"


def test_skills_in_the_annotation_of_another_domain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runtime = yaml.safe_load(VALID)
    skills = runtime["spec"].pop("skills")
    skills[0]["mountPath"] = "/etc/hosts"
    runtime["metadata"]["annotations"] = {"rossoctl.io/skill-images": json.dumps(skills)}
    path = _write(tmp_path, "rossoctl.yaml", yaml.safe_dump(runtime))
    assert run("--domain", "rossoctl.io", str(path)) == 1
    assert capsys.readouterr().out.splitlines() == [
        f'{path}: metadata.annotations[rossoctl.io/skill-images][0].mountPath: Invalid value: "/etc/hosts": '
        "must not be /etc/hosts, a file the kubelet writes into every container"
    ]
    # Under the default domain the annotation is not ours: no skills, nothing wrong.
    assert run(str(path)) == 0


def test_agentruntimes_of_another_group_get_a_hint_with_the_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rossoctl = VALID.replace("agent.kagenti.dev/v1alpha1", "agent.rossoctl.dev/v1alpha1")
    path = _write(tmp_path, "rossoctl.yaml", rossoctl)
    assert run(str(path)) == 1
    out, err = capsys.readouterr()
    assert out.startswith(f'{path}: apiVersion: Unsupported value: "agent.rossoctl.dev/v1alpha1"')
    assert (f"{path}: hint: an AgentRuntime of agent.rossoctl.dev/v1alpha1, not of agent.kagenti.dev/v1alpha1: "
            "to check it as one, pass --agentruntime-api agent.rossoctl.dev/v1alpha1 --domain rossoctl.io") in err
    assert run("--agentruntime-api", "agent.rossoctl.dev/v1alpha1", "--domain", "rossoctl.io", str(path)) == 0
    assert "hint" not in capsys.readouterr().err
