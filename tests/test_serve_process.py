"""The real `skill-webhook` process: `serve` over HTTPS and plain HTTP, hostile clients, startup
errors, shutdown, and the offline `mutate` command (docs/configuration.md "Service surface", "Commands and settings").

Every process is started with `sys.executable -m app.service.cli.main` (the console script's module), on
ports picked free on 127.0.0.1, with certificates made in tmp_path and SKILL_WEBHOOK_* variables of
the caller's environment removed (tests/serve_process.py).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import warnings
from contextlib import closing
from pathlib import Path
from typing import Iterator

import httpx
import jsonpatch
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from app.service.install.certs import load_cert, write_cert_bundle
from tests.serve_process import ROOT, SAMPLE_REVIEW_BYTES, SAMPLES, Served, cli_env, free_port, run_cli, serving

pytestmark = pytest.mark.process


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[Served]:
    with serving(tmp_path_factory.mktemp("serve")) as served:
        yield served


# -- serving -----------------------------------------------------------------------------------------


def test_mutate_over_https_verified_with_the_generated_ca(served):
    with httpx.Client(verify=served.verified_context(), timeout=10) as client:
        response = client.post(served.url + "/mutate", content=SAMPLE_REVIEW_BYTES,
                               headers={"content-type": "application/json"})
    assert response.status_code == 200 and response.http_version == "HTTP/1.1"
    body = response.json()["response"]
    assert body["uid"] == json.loads(SAMPLE_REVIEW_BYTES)["request"]["uid"] and body["allowed"] is True
    pod = json.loads(SAMPLE_REVIEW_BYTES)["request"]["object"]
    patched = jsonpatch.apply_patch(pod, json.loads(base64.b64decode(body["patch"])))
    assert [v["name"] for v in patched["spec"]["volumes"]] == ["skill-resume-reviewer", "skill-blog-writer"]
    assert "volumeMounts" not in patched["spec"]["containers"][0]


def test_readyz_and_metrics_on_the_plain_http_port(served):
    with httpx.Client(verify=served.verified_context(), timeout=10) as client:
        client.post(served.url + "/mutate", content=SAMPLE_REVIEW_BYTES)
    ready = httpx.get(served.metrics_url + "/readyz", timeout=5)
    assert ready.status_code == 200 and ready.json()["ready"] is True and ready.json()["agentRuntimes"] == 2
    assert httpx.get(served.metrics_url + "/healthz", timeout=5).status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(httpx.get(served.metrics_url + "/metrics").text)}
    injected = [s for s in families["skill_webhook_admissions"].samples
                if s.labels == {"endpoint": "mutate", "decision": "injected"} and s.name.endswith("_total")]
    assert injected and injected[0].value >= 1
    expiry = families["skill_webhook_certificate_expiry_timestamp_seconds"].samples[0].value
    # The notAfter of the certificate being served, read from its file here.
    assert expiry == load_cert(served.ca.parent / "tls.crt").not_valid_after_utc.timestamp()
    assert families["skill_webhook_cache_synced"].samples[0].value == 1


def test_plain_http_on_the_webhook_port_is_told_to_use_https(served):
    response = httpx.post(f"http://127.0.0.1:{served.port}/mutate", content=SAMPLE_REVIEW_BYTES, timeout=5)
    assert response.status_code == 400
    assert response.json() == {"error": "this port speaks HTTPS only: use https://", "code": 400}
    # ... and TLS on the plain-HTTP port: refused, without a warning per attempt in the log.
    with pytest.raises(httpx.TransportError):
        httpx.get(f"https://127.0.0.1:{served.metrics_port}/healthz", verify=False, timeout=5)
    # The listener still serves TLS clients afterwards.
    with httpx.Client(verify=served.verified_context(), timeout=10) as client:
        assert client.post(served.url + "/mutate", content=SAMPLE_REVIEW_BYTES).status_code == 200
    log = served.log.read_text()
    assert "Invalid HTTP request" not in log and "Traceback" not in log


def test_fastapi_own_errors_use_the_documented_json_shape(served):
    with httpx.Client(verify=served.verified_context(), timeout=10) as client:
        wrong_method = client.get(served.url + "/mutate")
        unknown = client.post(served.url + "/nothing", content=b"{}")
    assert (wrong_method.status_code, wrong_method.json()) == (
        405, {"error": "Method Not Allowed: GET /mutate", "code": 405})
    assert wrong_method.headers["allow"] == "POST"
    assert (unknown.status_code, unknown.json()) == (404, {"error": "Not Found: POST /nothing", "code": 404})
    health = httpx.post(served.metrics_url + "/healthz", timeout=5)
    assert (health.status_code, health.json()) == (405, {"error": "Method Not Allowed: POST /healthz", "code": 405})


def test_the_start_is_logged_once(served):
    lines = [json.loads(line) for line in served.log.read_text().splitlines()]
    messages = [line["msg"] for line in lines]
    assert messages.count("starting") == 1 and messages.count("ready") == 1
    assert not any("server process" in m for m in messages)  # uvicorn's, once per listener
    assert next(line for line in lines if line["msg"] == "starting")["pid"] == served.process.pid
    assert next(line for line in lines if line["msg"] == "ready")["listening"] == [served.url, served.metrics_url]


def test_log_format_text(tmp_path):
    with serving(tmp_path, "--log-format", "text") as served:
        pass
    lines = served.log.read_text().splitlines()
    ready = next(line for line in lines if " ready " in line)
    assert " INFO    skill_webhook.serve: ready listening=" in ready and not ready.startswith("{")


def test_declared_4_mib_body_gets_413_without_the_server_waiting_for_it(served):
    """Headers promise 4 MiB, 10 bytes follow: the answer must come at once, and the connection close."""
    with closing(socket.create_connection(("127.0.0.1", served.port), timeout=10)) as raw:
        conn = served.verified_context().wrap_socket(raw, server_hostname="localhost")
        started = time.monotonic()
        conn.sendall(b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 4194304\r\n\r\n{\"apiVers")
        conn.settimeout(5)
        received = b""
        while True:
            chunk = conn.recv(65536)
            if not chunk:  # the server closed the connection instead of waiting for the body
                break
            received += chunk
        elapsed = time.monotonic() - started
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), received[:300]
    assert json.loads(body) == {"error": "body larger than 3145728 bytes", "code": 413}
    assert elapsed < 2.0


def tls_client(version: ssl.TLSVersion) -> ssl.SSLContext:
    """A client that offers exactly `version`; SECLEVEL=0 so that OpenSSL's own policy cannot be what
    refuses an old version (the control test below shows this client does speak it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.minimum_version = context.maximum_version = version
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


def handshake(context: ssl.SSLContext, port: int) -> str:
    with closing(socket.create_connection(("127.0.0.1", port), timeout=10)) as raw:
        with context.wrap_socket(raw) as conn:
            return conn.version()


@pytest.mark.parametrize("old", ["TLSv1", "TLSv1_1"])
def test_tls_below_1_2_is_refused(served, old):
    with pytest.raises(ssl.SSLError):
        handshake(tls_client(getattr(ssl.TLSVersion, old)), served.port)
    assert handshake(tls_client(ssl.TLSVersion.TLSv1_2), served.port) == "TLSv1.2"
    assert handshake(tls_client(ssl.TLSVersion.TLSv1_3), served.port) == "TLSv1.3"


@pytest.mark.parametrize("old", ["TLSv1", "TLSv1_1"])
def test_control_the_old_tls_client_does_speak_its_version(served, old):
    """Against a permissive server with the same certificate the client above completes an old
    handshake, so the refusal in the test above is the webhook's doing."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.minimum_version = ssl.TLSVersion.TLSv1
    server.set_ciphers("DEFAULT:@SECLEVEL=0")
    certs = served.ca.parent
    server.load_cert_chain(certs / "tls.crt", certs / "tls.key")
    with closing(socket.create_server(("127.0.0.1", 0))) as listener:
        listener.settimeout(10)

        def accept() -> None:
            conn, _ = listener.accept()
            with closing(conn):
                try:
                    server.wrap_socket(conn, server_side=True).close()
                except (ssl.SSLError, OSError):
                    pass

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        expected = {"TLSv1": "TLSv1", "TLSv1_1": "TLSv1.1"}[old]
        assert handshake(tls_client(getattr(ssl.TLSVersion, old)), listener.getsockname()[1]) == expected
        thread.join(timeout=10)


def test_sigterm_stops_the_process_cleanly(serve_process):
    served = serve_process()
    with httpx.Client(verify=served.verified_context(), timeout=10) as client:
        assert client.post(served.url + "/mutate", content=SAMPLE_REVIEW_BYTES).status_code == 200
    started = time.monotonic()
    served.process.send_signal(signal.SIGTERM)
    assert served.process.wait(timeout=10) == 0
    assert time.monotonic() - started < 10
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", served.port), timeout=2).close()
    assert "Traceback" not in served.log.read_text()


# -- startup errors ------------------------------------------------------------------------------------


def unreachable_kubeconfig(path: Path) -> Path:
    """A well-formed kubeconfig for an API server on a closed loopback port: building the client works,
    and nothing may need to reach it before the TLS check fails."""
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "test", "cluster": {"server": f"https://127.0.0.1:{free_port()}"}}],
        "users": [{"name": "test", "user": {"token": "not-a-token"}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
    }
    path.write_text(yaml.safe_dump(config))
    return path


def test_kube_source_without_tls_files_is_a_clear_startup_error(tmp_path):
    kubeconfig = unreachable_kubeconfig(tmp_path / "kubeconfig")
    certs = tmp_path / "certs"
    for source in (["--source", "kube"], []):  # `auto` with a kubeconfig means the informer too
        result = run_cli("serve", *source, "--kubeconfig", str(kubeconfig), "--certs-dir", str(certs),
                         "--port", str(free_port()), "--metrics-port", str(free_port()), "--host", "127.0.0.1")
        assert result.returncode == 1, result.stderr
        assert "--tls-cert-file and --tls-key-file are required with the Kubernetes source" in result.stderr
        assert "Traceback" not in result.stderr
    assert not certs.exists()  # never a silent self-signed certificate in a cluster


def test_kube_source_with_a_missing_kubeconfig_is_a_clear_startup_error(tmp_path):
    result = run_cli("serve", "--source", "kube", "--kubeconfig", str(tmp_path / "missing"),
                     "--port", str(free_port()), "--metrics-port", str(free_port()))
    assert result.returncode == 1
    assert result.stderr == f"skill-webhook serve: --kubeconfig {tmp_path / 'missing'}: no such file\n"


def test_an_unreachable_api_server_is_one_clear_line(tmp_path):
    """No urllib3 "Retrying" warnings and no line per attempt of ours: what failed, once."""
    bundle = write_cert_bundle(tmp_path / "certs", "skill-webhook", "skill-webhook")
    kubeconfig = unreachable_kubeconfig(tmp_path / "kubeconfig")
    result = run_cli("serve", "--kubeconfig", str(kubeconfig), "--tls-cert-file", str(bundle.tls_cert),
                     "--tls-key-file", str(bundle.tls_key), "--host", "127.0.0.1", "--port", str(free_port()),
                     "--metrics-host", "127.0.0.1", "--metrics-port", str(free_port()), timeout=60)
    assert result.returncode == 1
    warnings_and_errors = [line for line in result.stderr.splitlines() if '"level":"info"' not in line]
    assert warnings_and_errors == [
        "skill-webhook serve: cannot read the API server's /version: connection refused; "
        "set --image-volumes on|off to start without it"
    ]


@pytest.mark.parametrize("busy", ["--port", "--metrics-port"])
def test_a_port_in_use_is_one_line_naming_it_and_nothing_is_ready(busy, tmp_path):
    with closing(socket.create_server(("127.0.0.1", 0))) as taken:
        ports = {"--port": free_port(), "--metrics-port": free_port()}
        ports[busy] = taken.getsockname()[1]
        result = run_cli("serve", "--source", "file", "--runtimes", str(SAMPLES), "--certs-dir", str(tmp_path / "c"),
                         "--host", "127.0.0.1", "--metrics-host", "127.0.0.1", "--port", str(ports["--port"]),
                         "--metrics-port", str(ports["--metrics-port"]), timeout=30)
    assert result.returncode == 1
    port = ports[busy]
    assert result.stderr == (f"skill-webhook serve: {busy} {port}: cannot listen on 127.0.0.1:{port}: "
                             "the address is already in use (another process listens there)\n")
    assert not (tmp_path / "c").exists()  # stopped before anything else started


def test_unusable_tls_files_are_named(tmp_path):
    bundle = write_cert_bundle(tmp_path / "certs", "skill-webhook", "skill-webhook")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    cases = [
        ((tmp_path / "absent.crt", bundle.tls_key), f"--tls-cert-file {tmp_path / 'absent.crt'}: no such file"),
        ((garbage, garbage), f"--tls-cert-file {garbage} / --tls-key-file {garbage}: not a PEM certificate and its private key"),
        ((bundle.tls_cert, bundle.ca_key),
         f"--tls-cert-file {bundle.tls_cert} / --tls-key-file {bundle.ca_key}: the key is not the certificate's"),
    ]
    for (cert, key), message in cases:
        result = run_cli("serve", "--source", "file", "--runtimes", str(SAMPLES), "--tls-cert-file", str(cert),
                         "--tls-key-file", str(key), "--host", "127.0.0.1", "--port", str(free_port()),
                         "--metrics-port", "0", timeout=30)
        assert result.returncode == 1
        assert result.stderr.splitlines()[-1] == f"skill-webhook serve: {message}"
        assert "_ssl.c" not in result.stderr


# -- offline mutate ------------------------------------------------------------------------------------


def test_offline_mutate_prints_the_patch_and_the_patched_pod():
    pod_file = SAMPLES / "pod.yaml"
    as_patch = run_cli("mutate", "--pod", str(pod_file), "--runtimes", str(SAMPLES), "--output", "patch")
    assert as_patch.returncode == 0, as_patch.stderr
    pod = yaml.safe_load(pod_file.read_text())
    expected = jsonpatch.apply_patch(pod, json.loads(as_patch.stdout))
    as_pod = run_cli("mutate", "--pod", str(pod_file), "--runtimes", str(SAMPLES), "--output", "pod")
    assert as_pod.returncode == 0, as_pod.stderr
    assert yaml.safe_load(as_pod.stdout) == expected
    assert [m["name"] for m in expected["spec"]["containers"][1]["volumeMounts"]] == [
        "skill-resume-reviewer", "skill-blog-writer"]
    # The same patch the webhook answers for the same pod.
    review = json.loads(SAMPLE_REVIEW_BYTES)
    assert expected["spec"]["volumes"] == jsonpatch.apply_patch(
        review["request"]["object"], json.loads(as_patch.stdout))["spec"]["volumes"]


def test_offline_mutate_denial_exits_1_with_the_reason(tmp_path):
    pod = yaml.safe_load((SAMPLES / "pod.yaml").read_text())
    pod["spec"]["volumes"] = [{"name": "skill-resume-reviewer", "emptyDir": {}}]
    pod_file = tmp_path / "pod.yaml"
    pod_file.write_text(yaml.safe_dump(pod))
    result = run_cli("mutate", "--pod", str(pod_file), "--runtimes", str(SAMPLES))
    assert result.returncode == 1 and result.stdout == ""
    assert "denied (409)" in result.stderr
    assert "resume-agent-runtime" in result.stderr and "skill-resume-reviewer" in result.stderr


def test_offline_mutate_reads_the_pod_from_stdin():
    result = run_cli("mutate", "--pod", "-", "--runtimes", str(SAMPLES), input=(SAMPLES / "pod.yaml").read_text())
    assert result.returncode == 0 and json.loads(result.stdout)


def test_offline_mutate_with_a_runtimes_file_that_does_not_parse_names_file_line_column(tmp_path):
    # A one-shot preview has no last good content to fall back on.
    runtimes = tmp_path / "runtimes"
    (runtimes / "team-a").mkdir(parents=True)
    (runtimes / "team-a" / "good.yaml").write_text((SAMPLES / "agentruntimes.yaml").read_text())
    broken = runtimes / "team-a" / "broken.yaml"
    broken.write_text("apiVersion: agent.kagenti.dev/v1alpha1\nkind: AgentRuntime\nmetadata: {name: a\nspec: {}\n")
    result = run_cli("mutate", "--pod", str(SAMPLES / "pod.yaml"), "--runtimes", str(runtimes))
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.splitlines() == [f"{broken}:4:5: did not find expected ',' or '}}' (while parsing a flow mapping)"]


def test_offline_mutate_into_a_closed_pipe_exits_quietly():
    # `skill-webhook mutate ... | head -0`: the reader is gone before anything is written.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "app.service.cli.main", "mutate", "--pod", str(SAMPLES / "pod.yaml"),
             "--runtimes", str(SAMPLES), "--output", "pod"],
            cwd=ROOT, env=cli_env(), stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60,
        )
    finally:
        os.close(write_end)
    assert result.returncode == 0
    assert result.stderr == ""  # no BrokenPipeError traceback, no "Exception ignored" note


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--source", "file", "--runtimes", "/nonexistent/runtimes"], "--runtimes /nonexistent/runtimes: no such file"),
        (["--source", "file", "--registry-allow", "ghcr.io, https://quay.io"], "--registry-allow: allow-list entry 'https://quay.io': 'https:' is not a valid host[:port]"),
        (["--source", "file", "--registry-allow", "ghcr.io/Org"], "'Org' is not a valid lower-case path component"),
    ],
)
def test_a_setting_that_cannot_work_stops_serve_at_start(flags, message, tmp_path):
    result = run_cli("serve", *flags, "--certs-dir", str(tmp_path / "certs"), "--host", "127.0.0.1",
                     "--port", str(free_port()), "--metrics-port", str(free_port()), timeout=30)
    assert result.returncode in (1, 2), result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
