"""The real `skill-webhook serve` process, started one way for every test that needs it.

`serving(directory, *flags)` starts `serve` with the file source on the sample AgentRuntimes (later
flags win, so `--source kube ...` or `--runtimes DIR` replace them), on ports picked free on
127.0.0.1, with certificates made in `directory`, and the caller's SKILL_WEBHOOK_* variables removed;
it yields once /readyz answers 200 and stops the process with SIGTERM (killed only if that fails, so
a hang shows as a failure of the test that looks for it). Tests take it through the `serve_process`
fixture of tests/conftest.py; module-scoped fixtures and harnesses use `serving` directly.
`kube_flags` gives the flags for `--source kube` against an API server URL (the stand-in's).
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx

from app.service.install.certs import write_cert_bundle
from tests.polling import wait_until

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "manifests" / "samples"
SAMPLE_REVIEW_BYTES = (SAMPLES / "admission-review.json").read_bytes()
START_TIMEOUT = 30.0  # generous: two shared cores

# A kubeconfig for an API server at {url} with a token, as `serve --kubeconfig` reads it.
KUBECONFIG = """
apiVersion: v1
kind: Config
clusters: [{{name: standin, cluster: {{server: "{url}"}}}}]
users: [{{name: tester, user: {{token: not-a-secret}}}}]
contexts: [{{name: standin, context: {{cluster: standin, user: tester}}}}]
current-context: standin
"""


def free_port() -> int:
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cli_env() -> dict[str, str]:
    """The environment without our settings, except the resolver's off switch of tests/conftest.py
    (the sample AgentRuntimes name public registries that tests must not contact)."""
    return {
        k: v for k, v in os.environ.items()
        if not k.startswith("SKILL_WEBHOOK_") or k == "SKILL_WEBHOOK_RESOLVE_INTERVAL"
    }


def run_cli(*args: str, timeout: float = 60.0, input: str | None = None) -> subprocess.CompletedProcess:
    """One `skill-webhook` command (the console script's module) to its end."""
    return subprocess.run(
        [sys.executable, "-m", "app.service.cli.main", *args], cwd=ROOT, env=cli_env(), capture_output=True,
        text=True, timeout=timeout, input=input,
    )


@dataclass
class Served:
    process: subprocess.Popen
    port: int
    metrics_port: int
    ca: Path
    log: Path

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}"

    def verified_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))

    def ready(self) -> bool:
        """/readyz answers 200; AssertionError with the log once the process has exited."""
        if self.process.poll() is not None:
            raise AssertionError(f"serve exited with {self.process.returncode}:\n{self.log.read_text()}")
        try:
            return httpx.get(self.metrics_url + "/readyz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False


def kube_flags(directory: Path, api_url: str) -> tuple[str, ...]:
    """`--source kube` against `api_url`: a kubeconfig, and serving certificate files where `serving`
    looks for the CA (the Kubernetes source never makes its own certificates); `directory` is the one
    given to `serving`."""
    directory.mkdir(parents=True, exist_ok=True)
    certs = write_cert_bundle(directory / "certs", "skill-webhook", "skill-webhook")
    kubeconfig = directory / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG.format(url=api_url))
    return ("--source", "kube", "--kubeconfig", str(kubeconfig),
            "--tls-cert-file", str(certs.tls_cert), "--tls-key-file", str(certs.tls_key))


@contextmanager
def serving(directory: Path, *extra: str) -> Iterator[Served]:
    """`skill-webhook serve` as the module docstring says, ready; stopped with SIGTERM at the end."""
    directory.mkdir(parents=True, exist_ok=True)
    port, metrics_port = free_port(), free_port()
    log = directory / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "app.service.cli.main", "serve", "--source", "file", "--runtimes", str(SAMPLES),
             "--certs-dir", str(directory / "certs"), "--host", "127.0.0.1", "--port", str(port),
             "--metrics-host", "127.0.0.1", "--metrics-port", str(metrics_port), *extra],
            cwd=ROOT, env=cli_env(), stdout=out, stderr=subprocess.STDOUT,
        )
    served = Served(process, port, metrics_port, directory / "certs" / "ca.crt", log)
    try:
        wait_until(served.ready, START_TIMEOUT, "serve /readyz", interval=0.1,
                   explain=lambda: "\n" + log.read_text(errors="replace"))
        yield served
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
