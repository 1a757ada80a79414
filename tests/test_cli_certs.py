"""`skill-webhook certs` and `skill-webhook ca-bundle`, driven through their argparse wiring."""

from __future__ import annotations

import argparse
import base64
import io
import os
import stat
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from cryptography import x509

from app.service.cli import certs as cli_certs
from app.service.install.certs import load_cert, write_cert_bundle

ROOT = Path(__file__).resolve().parent.parent


def run_cli(argv: list[str], monkeypatch: pytest.MonkeyPatch, stdin: str = "") -> int:
    parser = argparse.ArgumentParser(prog="skill-webhook")
    cli_certs.add_parser(parser.add_subparsers(dest="command", required=True))
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    return cli_certs.run(parser.parse_args(argv))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return write_cert_bundle(tmp_path_factory.mktemp("certs"), "skill-webhook", "skill-webhook")


# -- certs -------------------------------------------------------------------------------------------


def test_certs_writes_a_bundle_for_the_service(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    argv = ["certs", "--service", "hook", "--namespace", "ops", "--out", str(out), "--dns", "hook.example.com"]
    assert run_cli(argv, monkeypatch) == 0
    leaf = load_cert(out / "tls.crt")
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert names == ["hook.ops.svc", "hook.ops.svc.cluster.local", "localhost", "hook.example.com"]
    assert leaf.issuer == load_cert(out / "ca.crt").subject
    assert stat.S_IMODE(os.stat(out / "tls.key").st_mode) == 0o600


def test_certs_prints_the_install_steps_in_their_order_for_the_namespace_given(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    assert run_cli(["certs", "--namespace", "ops", "--out", str(out)], monkeypatch) == 0
    steps = [line.strip() for line in capsys.readouterr().out.splitlines()[2:]]
    assert steps == [
        "1. kubectl create namespace ops --dry-run=client -o yaml | kubectl apply -f -",
        f"2. kubectl -n ops create secret tls skill-webhook-tls --cert={out / 'tls.crt'} --key={out / 'tls.key'} "
        "--dry-run=client -o yaml | kubectl apply -f -",
        "3. skill-webhook manifests --namespace ops -o skill-webhook-install && kubectl apply -k skill-webhook-install",
        "4. kubectl -n ops rollout status deployment/skill-webhook --timeout=180s",
        f"5. skill-webhook ca-bundle --ca {out / 'ca.crt'} --namespace ops | kubectl apply -f -",
    ]


def test_certs_steps_for_another_service_and_the_rossoctl_variant(tmp_path, monkeypatch, capsys):
    argv = ["certs", "--namespace", "ops", "--service", "hook", "--out", str(tmp_path), "--domain", "rossoctl.io",
            "--agentruntime-api", "agent.rossoctl.dev/v1alpha1"]
    assert run_cli(argv, monkeypatch) == 0
    printed = capsys.readouterr().out
    variant = "--domain rossoctl.io --agentruntime-api agent.rossoctl.dev/v1alpha1"
    assert f"skill-webhook manifests --namespace ops {variant} -o skill-webhook-install" in printed
    assert f"skill-webhook ca-bundle --ca {tmp_path / 'ca.crt'} --namespace ops --service hook {variant} |" in printed


def test_the_printed_ca_bundle_step_registers_webhooks_for_that_namespace(tmp_path, monkeypatch, capsys):
    """Run step 5 as printed, from a directory that is not the checkout: the webhooks call the Service
    in the namespace given, not the default one."""
    monkeypatch.chdir(tmp_path)
    assert run_cli(["certs", "--namespace", "ops", "--service", "hook", "--out", "certs"], monkeypatch) == 0
    step = next(line for line in capsys.readouterr().out.splitlines() if "skill-webhook ca-bundle" in line)
    argv = step.split("skill-webhook ", 1)[1].split(" |")[0].split()
    assert run_cli(argv, monkeypatch) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [d["kind"] for d in docs] == ["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"]
    for doc in docs:
        for webhook in doc["webhooks"]:
            assert webhook["clientConfig"]["service"]["namespace"] == "ops"
            assert webhook["clientConfig"]["service"]["name"] == "hook"
            assert base64.b64decode(webhook["clientConfig"]["caBundle"]) == (tmp_path / "certs" / "ca.crt").read_bytes()
    namespaces = docs[0]["webhooks"][0]["namespaceSelector"]["matchExpressions"][0]["values"]
    assert "ops" in namespaces and "skill-webhook" not in namespaces  # its own namespace is exempt


def test_certs_reuse_ca_keeps_the_registered_ca(tmp_path, monkeypatch, capsys):
    assert run_cli(["certs", "--out", str(tmp_path)], monkeypatch) == 0
    ca, leaf = (tmp_path / "ca.crt").read_bytes(), (tmp_path / "tls.crt").read_bytes()
    assert run_cli(["certs", "--out", str(tmp_path), "--reuse-ca"], monkeypatch) == 0
    assert (tmp_path / "ca.crt").read_bytes() == ca and (tmp_path / "tls.crt").read_bytes() != leaf
    assert "the registered caBundle stays valid" in capsys.readouterr().out


def test_certs_never_replaces_a_ca_silently(tmp_path, monkeypatch, capsys):
    assert run_cli(["certs", "--out", str(tmp_path)], monkeypatch) == 0
    ca, leaf = (tmp_path / "ca.crt").read_bytes(), (tmp_path / "tls.crt").read_bytes()
    capsys.readouterr()
    assert run_cli(["certs", "--out", str(tmp_path)], monkeypatch) == 1
    out, err = capsys.readouterr()
    assert out == "" and err == (
        f"skill-webhook certs: {tmp_path / 'ca.crt'} exists (a caBundle may hold it): pass --reuse-ca to sign "
        "with it, or --new-ca to replace it and register the new one with ca-bundle\n")
    assert (tmp_path / "ca.crt").read_bytes() == ca and (tmp_path / "tls.crt").read_bytes() == leaf
    for flag in ("--new-ca", "--force"):
        assert run_cli(["certs", "--out", str(tmp_path), flag], monkeypatch) == 0
        assert (tmp_path / "ca.crt").read_bytes() != ca
        ca = (tmp_path / "ca.crt").read_bytes()


def test_reuse_ca_refuses_what_it_cannot_reuse(tmp_path, monkeypatch, capsys):
    assert run_cli(["certs", "--out", str(tmp_path / "empty"), "--reuse-ca"], monkeypatch) == 1
    assert "--reuse-ca: no CA in" in capsys.readouterr().err
    assert not (tmp_path / "empty" / "ca.crt").exists()
    assert run_cli(["certs", "--out", str(tmp_path)], monkeypatch) == 0
    other = tmp_path / "other"
    assert run_cli(["certs", "--out", str(other)], monkeypatch) == 0
    (tmp_path / "ca.key").write_bytes((other / "ca.key").read_bytes())  # a key that is not the CA's
    ca = (tmp_path / "ca.crt").read_bytes()
    capsys.readouterr()
    assert run_cli(["certs", "--out", str(tmp_path), "--reuse-ca"], monkeypatch) == 1
    assert capsys.readouterr().err == (
        "skill-webhook certs: --reuse-ca: ca.key is not the key of ca.crt; pass --new-ca to make a new CA "
        "(and register it again)\n")
    assert (tmp_path / "ca.crt").read_bytes() == ca


def test_reuse_ca_and_new_ca_exclude_each_other(tmp_path, monkeypatch):
    with pytest.raises(SystemExit):
        run_cli(["certs", "--out", str(tmp_path), "--reuse-ca", "--new-ca"], monkeypatch)


def test_certs_rejects_a_bad_ip(tmp_path, monkeypatch, capsys):
    assert run_cli(["certs", "--out", str(tmp_path), "--ip", "not-an-ip"], monkeypatch) == 1
    assert "not-an-ip" in capsys.readouterr().err
    assert not (tmp_path / "tls.key").exists()


# -- ca-bundle ---------------------------------------------------------------------------------------


def test_ca_bundle_without_manifest_is_the_shipped_webhooks_filled_in(bundle, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # works outside the checkout: the configurations are generated
    assert run_cli(["ca-bundle", "--ca", str(bundle.ca_cert)], monkeypatch) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [d["kind"] for d in docs] == ["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"]
    shipped = list(yaml.safe_load_all((ROOT / "manifests" / "webhooks.yaml").read_text()))
    for doc in docs:
        kubernetes_validate.validate(doc, "1.33", strict=True)
        for webhook in doc["webhooks"]:
            assert base64.b64decode(webhook["clientConfig"].pop("caBundle")) == bundle.ca_cert.read_bytes()
    assert docs == shipped


def test_ca_bundle_generates_the_rossoctl_variant(bundle, monkeypatch, capsys):
    argv = ["ca-bundle", "--ca", str(bundle.ca_cert), "--domain", "rossoctl.io",
            "--agentruntime-api", "agent.rossoctl.dev/v1alpha1"]
    assert run_cli(argv, monkeypatch) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    for doc in docs:
        for webhook in doc["webhooks"]:
            webhook["clientConfig"].pop("caBundle")
    assert docs == list(yaml.safe_load_all((ROOT / "manifests" / "rossoctl" / "webhooks.yaml").read_text()))


def test_ca_bundle_refuses_a_manifest_calling_another_namespace_than_the_one_given(bundle, monkeypatch, capsys):
    argv = ["ca-bundle", "--ca", str(bundle.ca_cert), "--namespace", "ops", str(ROOT / "manifests" / "webhooks.yaml")]
    assert run_cli(argv, monkeypatch) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "calls Service skill-webhook/skill-webhook, not the --namespace/--service given" in captured.err


MIXED = """\
apiVersion: v1
kind: Namespace
metadata: {name: demo}
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {name: a}
webhooks:
  - name: a.example.com
    clientConfig: {caBundle: b2xk, service: {name: s, namespace: n}}
  - name: b.example.com
    clientConfig: {url: "https://example.com/hook"}
---
# an empty document is dropped
---
apiVersion: v1
kind: List
items:
  - apiVersion: admissionregistration.k8s.io/v1
    kind: MutatingWebhookConfiguration
    metadata: {name: in-a-list}
    webhooks: [{name: c.example.com, clientConfig: {service: {name: s, namespace: n}}}]
"""


def test_ca_bundle_passes_other_documents_through_and_reads_stdin(bundle, monkeypatch, capsys):
    assert run_cli(["ca-bundle", "--ca", str(bundle.ca_cert), "-"], monkeypatch, stdin=MIXED) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    expected = base64.b64encode(bundle.ca_cert.read_bytes()).decode()
    assert docs[0] == {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo"}}
    assert [w["clientConfig"]["caBundle"] for w in docs[1]["webhooks"]] == [expected, expected]
    assert docs[1]["webhooks"][1]["clientConfig"]["url"] == "https://example.com/hook"
    assert docs[2]["items"][0]["webhooks"][0]["clientConfig"]["caBundle"] == expected
    assert len(docs) == 3


def test_ca_bundle_reads_several_files_in_order(bundle, tmp_path, monkeypatch, capsys):
    first, second = tmp_path / "1.yaml", tmp_path / "2.yaml"
    first.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: first}\n")
    second.write_text((ROOT / "manifests" / "webhooks.yaml").read_text())
    assert run_cli(["ca-bundle", "--ca", str(bundle.ca_cert), str(first), str(second)], monkeypatch) == 0
    kinds = [d["kind"] for d in yaml.safe_load_all(capsys.readouterr().out)]
    assert kinds == ["ConfigMap", "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"]


@pytest.mark.parametrize(
    ("ca_choice", "manifest", "message"),
    [
        ("tls.crt", "webhooks", "not a CA"),
        ("ca.key", "webhooks", "not a PEM certificate"),
        ("cert+key", "webhooks", "private key"),
        ("missing", "webhooks", "absent.crt: no such file"),
        ("ca.crt", "no-webhooks", "no MutatingWebhookConfiguration"),
        ("ca.crt", "bad-yaml", "not valid YAML"),
        ("ca.crt", "python-tag", "not valid YAML"),
        ("ca.crt", "missing", "absent.yaml: no such file"),
    ],
)
def test_ca_bundle_errors_exit_1_with_a_reason(bundle, tmp_path, monkeypatch, capsys, ca_choice, manifest, message):
    ca_files = {
        "tls.crt": bundle.tls_cert,
        "ca.key": bundle.ca_key,
        "ca.crt": bundle.ca_cert,
        "missing": tmp_path / "absent.crt",
        "cert+key": tmp_path / "combined.pem",
    }
    ca_files["cert+key"].write_bytes(bundle.ca_cert.read_bytes() + bundle.ca_key.read_bytes())
    manifests = {
        "webhooks": ROOT / "manifests" / "webhooks.yaml",
        "no-webhooks": tmp_path / "cm.yaml",
        "bad-yaml": tmp_path / "bad.yaml",
        "python-tag": tmp_path / "tag.yaml",
        "missing": tmp_path / "absent.yaml",
    }
    manifests["no-webhooks"].write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    manifests["bad-yaml"].write_text("kind: [unclosed\n")
    manifests["python-tag"].write_text("kind: !!python/object/apply:os.system ['true']\n")
    argv = ["ca-bundle", "--ca", str(ca_files[ca_choice]), str(manifests[manifest])]
    assert run_cli(argv, monkeypatch) == 1
    captured = capsys.readouterr()
    assert message in captured.err and captured.out == ""
    assert len(captured.err.splitlines()) == 1 and "https://" not in captured.err  # no library FAQ links
