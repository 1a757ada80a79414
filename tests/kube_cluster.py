"""A real Kubernetes control plane for tests, in the spirit of controller-runtime's envtest.

`etcd`, `kube-apiserver` and (on request) `kube-controller-manager` from `$KUBEBUILDER_ASSETS`, on free
loopback ports, in a temporary directory, with certificates and kubeconfigs made here with
`cryptography`; stopped by PID (SIGKILL: nothing they hold outlives the session). Beyond envtest it can
start a second API server on the same etcd with other flags (another `--etcd-prefix`), SIGKILL and
restart an API server on its port, and compact etcd through its v3 JSON gateway.

Also here, shared by the `tests/test_real_*.py` modules (which import the fixture names):

- `wait_until(predicate, timeout, what)` (from tests/polling.py): poll for a condition with a deadline;
- fixtures `kube_cluster` (session), `kube_controllers` (session: the controller manager started),
  `kube_namespace` (a fresh namespace per test);
- `serving(...)`: the real `skill-webhook serve` process against the cluster, and `registered(...)`:
  the product's own webhook configurations pointed at it by URL, limited to one namespace.

Every test that needs the binaries is marked `kube` and skips when KUBEBUILDER_ASSETS is unset.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import datetime
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.polling import wait_until

ROOT = Path(__file__).resolve().parent.parent
ASSETS_ENV = "KUBEBUILDER_ASSETS"
START_TIMEOUT = 60.0  # etcd / an API server ready; generous: two shared cores
SERVE_START_TIMEOUT = 30.0
SERVICE_RANGE = "10.0.0.0/24"

kube = pytest.mark.kube


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def assets_dir() -> Path:
    """The KUBEBUILDER_ASSETS directory, or skip the test with the reason."""
    value = os.environ.get(ASSETS_ENV)
    if not value:
        pytest.skip(f"{ASSETS_ENV} is unset: no etcd / kube-apiserver binaries for the real control plane tests")
    path = Path(value)
    missing = [b for b in ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl") if not (path / b).is_file()]
    if missing:
        pytest.skip(f"{ASSETS_ENV}={value} lacks {', '.join(missing)}")
    return path


def process_env() -> dict[str, str]:
    """The environment for the control plane and for `serve`: no proxy may intercept loopback calls."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


# -- certificates --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyPair:
    cert: Path
    key: Path


def _pem_key(key: Any) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o600)
    return path


class CertificateAuthority:
    """One CA that signs the API server's serving certificate and every client certificate."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "skill-webhook-test-ca")])
        now = datetime.datetime.now(datetime.timezone.utc)
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self.pair = KeyPair(
            _write(directory / "ca.crt", self._cert.public_bytes(serialization.Encoding.PEM)),
            _write(directory / "ca.key", _pem_key(self._key)),
        )

    def issue(self, stem: str, common_name: str, organizations: tuple[str, ...] = (), *, server: bool = False) -> KeyPair:
        key = ec.generate_private_key(ec.SECP256R1())
        attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
        now = datetime.datetime.now(datetime.timezone.utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attributes))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
                    x509.DNSName("localhost"),
                    x509.DNSName("kubernetes.default.svc"),
                ]),
                critical=False,
            )
        cert = builder.sign(self._key, hashes.SHA256())
        return KeyPair(
            _write(self.directory / f"{stem}.crt", cert.public_bytes(serialization.Encoding.PEM)),
            _write(self.directory / f"{stem}.key", _pem_key(key)),
        )


def _service_account_keys(directory: Path) -> KeyPair:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return KeyPair(_write(directory / "sa.pub", public), _write(directory / "sa.key", _pem_key(key)))


def write_kubeconfig(path: Path, url: str, ca: Path, client: KeyPair, user: str) -> Path:
    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": {"server": url, "certificate-authority-data": b64(ca)}}],
        "users": [{"name": user, "user": {"client-certificate-data": b64(client.cert), "client-key-data": b64(client.key)}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": user}}],
        "current-context": "test",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


# -- processes -----------------------------------------------------------------------------------------


@dataclass
class Process:
    name: str
    argv: list[str]
    log: Path
    popen: subprocess.Popen | None = None
    cwd: Path | None = None

    def start(self) -> "Process":
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, env=process_env(),
                                          stdin=subprocess.DEVNULL, start_new_session=True, cwd=self.cwd)
        return self

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL by PID and reap."""
        if self.popen is not None and self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=30)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def check_alive(self) -> None:
        if self.popen is not None and self.popen.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.popen.returncode}:\n{self.tail()}")


@dataclass
class ApiServer:
    """One kube-apiserver: its port, flags and process; `url`, `kubeconfig` (admin) and `http()`."""

    name: str
    port: int
    argv: list[str]
    kubeconfig: Path
    cluster: "KubeCluster"
    process: Process = field(init=False)

    def __post_init__(self) -> None:
        self.process = Process(self.name, self.argv, self.cluster.directory / f"{self.name}.log")

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def http(self, timeout: float = 10.0) -> httpx.Client:
        """An httpx client authenticated as the admin (system:masters)."""
        admin = self.cluster.admin
        context = ssl.create_default_context(cafile=str(self.cluster.ca.pair.cert))
        context.load_cert_chain(str(admin.cert), str(admin.key))
        return httpx.Client(base_url=self.url, verify=context, timeout=timeout, trust_env=False)

    def ready(self) -> bool:
        try:
            with self.http(timeout=2) as client:
                return client.get("/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    def start(self, timeout: float = START_TIMEOUT) -> "ApiServer":
        self.process.start()

        def up() -> bool:
            self.process.check_alive()
            return self.ready()

        wait_until(up, timeout, f"{self.name} /readyz", interval=0.2)
        return self

    def kill(self) -> None:
        self.process.kill()

    def restart(self, timeout: float = START_TIMEOUT) -> "ApiServer":
        """SIGKILL (if running) and start again with the same flags on the same port."""
        self.kill()
        return self.start(timeout)


class KubeCluster:
    """etcd + kube-apiserver (+ kube-controller-manager) in `directory`, all on 127.0.0.1."""

    def __init__(self, assets: Path, directory: Path) -> None:
        self.assets = assets
        self.directory = directory
        self.pki = directory / "pki"
        self.pki.mkdir(parents=True, exist_ok=True)
        self.ca = CertificateAuthority(self.pki)
        self.admin = self.ca.issue("admin", "admin", ("system:masters",))
        self.serving = self.ca.issue("apiserver", "kube-apiserver", server=True)
        self.kcm_client = self.ca.issue("kcm", "system:kube-controller-manager")
        self.sa = _service_account_keys(self.pki)
        self.etcd_port, self.etcd_peer_port = free_port(), free_port()
        self.etcd = Process("etcd", [
            str(assets / "etcd"), f"--data-dir={directory / 'etcd'}", "--name=default",
            f"--listen-client-urls=http://127.0.0.1:{self.etcd_port}",
            f"--advertise-client-urls=http://127.0.0.1:{self.etcd_port}",
            f"--listen-peer-urls=http://127.0.0.1:{self.etcd_peer_port}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{self.etcd_peer_port}",
            f"--initial-cluster=default=http://127.0.0.1:{self.etcd_peer_port}",
            "--unsafe-no-fsync",
        ], directory / "etcd.log")
        self.apiservers: list[ApiServer] = []
        self.controller_manager: Process | None = None
        self.api: ApiServer | None = None

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.etcd_port}"

    @property
    def kubeconfig(self) -> Path:
        assert self.api is not None
        return self.api.kubeconfig

    # -- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> "KubeCluster":
        self.etcd.start()

        def etcd_healthy() -> bool:
            self.etcd.check_alive()
            return httpx.get(self.etcd_url + "/health", timeout=2, trust_env=False).json().get("health") == "true"

        wait_until(etcd_healthy, START_TIMEOUT, "etcd /health", interval=0.1)
        self.api = self.start_apiserver("kube-apiserver")
        return self

    def start_apiserver(self, name: str, *extra_flags: str, etcd_prefix: str = "/registry") -> ApiServer:
        """Another kube-apiserver on the same etcd (its own `--etcd-prefix` keeps its objects apart)."""
        port = free_port()
        argv = [
            str(self.assets / "kube-apiserver"),
            f"--etcd-servers={self.etcd_url}", f"--etcd-prefix={etcd_prefix}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={port}",
            f"--cert-dir={self.directory / (name + '-certs')}",
            f"--tls-cert-file={self.serving.cert}", f"--tls-private-key-file={self.serving.key}",
            f"--client-ca-file={self.ca.pair.cert}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={self.sa.cert}", f"--service-account-signing-key-file={self.sa.key}",
            f"--service-cluster-ip-range={SERVICE_RANGE}", "--authorization-mode=Node,RBAC",
            "--allow-privileged=true", "--endpoint-reconciler-type=none",
            *extra_flags,
        ]
        kubeconfig = write_kubeconfig(self.directory / f"{name}.kubeconfig", f"https://127.0.0.1:{port}",
                                      self.ca.pair.cert, self.admin, "admin")
        server = ApiServer(name, port, argv, kubeconfig, self)
        self.apiservers.append(server)
        return server.start()

    def start_controller_manager(self) -> Process:
        """kube-controller-manager against the main API server (idempotent); Deployments then make Pods."""
        if self.controller_manager is not None and self.controller_manager.running():
            return self.controller_manager
        assert self.api is not None and self.api.ready(), "start the controller manager after /readyz"
        kubeconfig = write_kubeconfig(self.directory / "kcm.kubeconfig", self.api.url, self.ca.pair.cert,
                                      self.kcm_client, "system:kube-controller-manager")
        self.controller_manager = Process("kube-controller-manager", [
            str(self.assets / "kube-controller-manager"), f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}", f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1", f"--secure-port={free_port()}", "--leader-elect=false",
            "--use-service-account-credentials=true",
            "--controllers=*,-service-ca-certificate-publisher-controller",
            f"--service-account-private-key-file={self.sa.key}", f"--root-ca-file={self.ca.pair.cert}",
            f"--cluster-signing-cert-file={self.ca.pair.cert}", f"--cluster-signing-key-file={self.ca.pair.key}",
            f"--service-cluster-ip-range={SERVICE_RANGE}",
        ], self.directory / "kube-controller-manager.log").start()
        return self.controller_manager

    def stop(self) -> None:
        """SIGKILL everything this cluster started, by PID."""
        if self.controller_manager is not None:
            self.controller_manager.kill()
        for server in self.apiservers:
            server.kill()
        self.etcd.kill()

    # -- etcd --------------------------------------------------------------------------------------------

    def etcd_revision(self) -> int:
        """The current revision, from the header of a v3 range request (JSON gateway)."""
        key = base64.b64encode(b"/skill-webhook-test/revision-probe").decode()
        answer = httpx.post(self.etcd_url + "/v3/kv/range", json={"key": key}, timeout=10, trust_env=False)
        answer.raise_for_status()
        return int(answer.json()["header"]["revision"])

    def compact_etcd(self) -> int:
        """Compact etcd up to its current revision (physically): every older resourceVersion is gone, so a
        watch resumed from one answers 410 Gone. Returns the revision compacted to."""
        revision = self.etcd_revision()
        answer = httpx.post(self.etcd_url + "/v3/kv/compaction", json={"revision": revision, "physical": True},
                            timeout=30, trust_env=False)
        answer.raise_for_status()
        return revision

    # -- kubectl -----------------------------------------------------------------------------------------

    def kubectl(self, *args: str, input: str | None = None, check: bool = True, server: ApiServer | None = None,
                binary: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
        """kubectl (1.35 from the assets unless `binary`) against `server` (the main one by default)."""
        target = server or self.api
        assert target is not None
        result = subprocess.run(
            [binary or str(self.assets / "kubectl"), f"--kubeconfig={target.kubeconfig}", *args],
            input=input, capture_output=True, text=True, env=process_env(), timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} exited {result.returncode}:\n{result.stderr}{result.stdout}")
        return result

    def apply(self, documents: Any, *args: str) -> subprocess.CompletedProcess:
        """`kubectl apply -f -` of a dict, a list of dicts (as JSON: no YAML 1.1 surprises such as `n`
        read as a boolean) or YAML text."""
        if isinstance(documents, list):
            documents = {"apiVersion": "v1", "kind": "List", "items": documents}
        text = documents if isinstance(documents, str) else json.dumps(documents)
        return self.kubectl("apply", "-f", "-", *args, input=text)

    def get(self, path: str) -> dict:
        assert self.api is not None
        with self.api.http() as client:
            response = client.get(path)
        response.raise_for_status()
        return response.json()


# -- fixtures ------------------------------------------------------------------------------------------


# Each test module imports these fixtures, which gives every module its own definition of them (and
# pytest would start one control plane per module): they all hand out the one cluster made here.
_SHARED: dict[str, Any] = {}


def shared_cluster() -> KubeCluster:
    """The session's one control plane, started on first use (a failed start is not retried)."""
    if "error" in _SHARED:
        raise AssertionError(f"the test control plane did not start: {_SHARED['error']}")
    if "cluster" not in _SHARED:
        assets = assets_dir()
        cluster = KubeCluster(assets, Path(tempfile.mkdtemp(prefix="skill-webhook-kube-")))
        _SHARED["cluster"] = cluster
        atexit.register(stop_shared_cluster)
        try:
            cluster.start()
        except BaseException as exc:
            _SHARED["error"] = exc
            raise
    return _SHARED["cluster"]


def stop_shared_cluster() -> None:
    """SIGKILL the shared control plane and remove its directory (idempotent)."""
    cluster = _SHARED.pop("cluster", None)
    if cluster is not None:
        cluster.stop()
        shutil.rmtree(cluster.directory, ignore_errors=True)


@pytest.fixture(scope="session")
def kube_cluster() -> Iterator[KubeCluster]:
    """One control plane per test session (etcd + kube-apiserver; see `kube_controllers`)."""
    yield shared_cluster()
    stop_shared_cluster()  # at the end of the session (the first of the modules' copies does it)


@pytest.fixture(scope="session")
def kube_controllers(kube_cluster: KubeCluster) -> KubeCluster:
    """The session's cluster with kube-controller-manager running (Deployments -> ReplicaSets -> Pods)."""
    kube_cluster.start_controller_manager()
    return kube_cluster


@pytest.fixture(scope="session")
def agentruntime_crd(kube_cluster: KubeCluster) -> str:
    """The project's AgentRuntime CRD (manifests/crd.yaml), applied and Established."""
    name = "agentruntimes.agent.kagenti.dev"
    if _SHARED.get("crd") is not kube_cluster:
        kube_cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "manifests" / "crd.yaml"))
        kube_cluster.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")
        _SHARED["crd"] = kube_cluster
    return name


def _namespace_name(request: pytest.FixtureRequest) -> str:
    base = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower().removeprefix("test_"))[:40].strip("-")
    return f"{base}-{uuid.uuid4().hex[:5]}"


@pytest.fixture
def kube_namespace(kube_cluster: KubeCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test; deleted (without waiting) afterwards."""
    name = _namespace_name(request)
    kube_cluster.kubectl("create", "namespace", name)
    yield name
    kube_cluster.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)


# -- the product: `skill-webhook serve` and its webhook configurations ---------------------------------------


def skill_webhook(*args: str, check: bool = True, cwd: Path | None = None, input: str | None = None) -> subprocess.CompletedProcess:
    """The `skill-webhook` command line (the console script installed next to this Python)."""
    executable = Path(sys.executable).with_name("skill-webhook")
    argv = [str(executable)] if executable.exists() else [sys.executable, "-c", "from app.service.cli import main; main()"]
    result = subprocess.run([*argv, *args], capture_output=True, text=True, env=process_env(), cwd=cwd or ROOT,
                            input=input, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"skill-webhook {' '.join(args)} exited {result.returncode}:\n{result.stderr}{result.stdout}")
    return result


@dataclass
class Served:
    process: Process
    port: int
    metrics_port: int
    ca: Path

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}"

    def log(self) -> str:
        return self.process.log.read_text(errors="replace")

    def https(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, verify=ssl.create_default_context(cafile=str(self.ca)), timeout=10,
                            trust_env=False)

    def ready(self) -> bool:
        try:
            return httpx.get(self.metrics_url + "/readyz", timeout=2, trust_env=False).status_code == 200
        except httpx.HTTPError:
            return False

    def metric(self, name: str, **labels: str) -> float | None:
        """One sample of /metrics (None when absent)."""
        text = httpx.get(self.metrics_url + "/metrics", timeout=5, trust_env=False).text
        wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in text.splitlines():
            if line.startswith("#"):
                continue
            series, _, value = line.rpartition(" ")
            metric, _, label_text = series.partition("{")
            if metric != name:
                continue
            present = ",".join(sorted(label_text.rstrip("}").split(","))) if label_text else ""
            if all(part in present.split(",") for part in wanted.split(",") if part) or not wanted:
                return float(value)
        return None


def make_certs(directory: Path) -> Path:
    """`skill-webhook certs` into `directory` (its certificate covers 127.0.0.1); returns the directory."""
    skill_webhook("certs", "--out", str(directory))
    return directory


@contextlib.contextmanager
def serving(directory: Path, kubeconfig: Path, *extra: str, name: str = "serve",
            wait_ready: bool = True) -> Iterator[Served]:
    """The real `skill-webhook serve --source kube --kubeconfig K` on loopback ports, ready; SIGKILLed after."""
    certs = directory / "certs"
    if not (certs / "tls.crt").exists():
        make_certs(certs)
    port, metrics_port = free_port(), free_port()
    executable = Path(sys.executable).with_name("skill-webhook")
    argv = [str(executable)] if executable.exists() else [sys.executable, "-c", "from app.service.cli import main; main()"]
    argv += ["serve", "--source", "kube", "--kubeconfig", str(kubeconfig),
             "--tls-cert-file", str(certs / "tls.crt"), "--tls-key-file", str(certs / "tls.key"),
             "--host", "127.0.0.1", "--port", str(port), "--metrics-host", "127.0.0.1",
             "--metrics-port", str(metrics_port), "--resolve-interval", "0"]
    if not any(arg.startswith("--reconcile") for arg in extra):
        argv += ["--reconcile", "off"]
    process = Process(name, [*argv, *extra], directory / f"{name}.log", cwd=ROOT).start()
    served = Served(process, port, metrics_port, certs / "ca.crt")
    try:
        if wait_ready:
            def up() -> bool:
                process.check_alive()
                return served.ready()

            wait_until(up, SERVE_START_TIMEOUT, f"{name} /readyz", interval=0.1)
        yield served
    finally:
        process.kill()


def webhook_configurations(served: Served, namespace: str, *, domain: str = "kagenti.io",
                           api: str = "agent.kagenti.dev/v1alpha1") -> list[dict]:
    """The product's own webhook configurations (`skill-webhook manifests`), pointed at `served` by URL
    with its CA bundle, named after `namespace` and limited to it (tests share one cluster)."""
    text = skill_webhook("manifests", "--domain", domain, "--agentruntime-api", api).stdout
    documents = [d for d in yaml.safe_load_all(text) if d and d["kind"].endswith("WebhookConfiguration")]
    assert {d["kind"] for d in documents} == {"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"}
    bundle = base64.b64encode(served.ca.read_bytes()).decode()
    for document in documents:
        document["metadata"]["name"] = f"skill-webhook-{namespace}"
        for webhook in document["webhooks"]:
            path = webhook["clientConfig"]["service"]["path"]
            webhook["clientConfig"] = {"url": f"{served.url}{path}", "caBundle": bundle}
            selector = webhook.setdefault("namespaceSelector", {}).setdefault("matchExpressions", [])
            selector.append({"key": "kubernetes.io/metadata.name", "operator": "In", "values": [namespace]})
    return documents


@contextlib.contextmanager
def registered(cluster: KubeCluster, served: Served, namespace: str, **options: str) -> Iterator[list[dict]]:
    """Register the webhook configurations for `namespace`; delete them afterwards."""
    documents = webhook_configurations(served, namespace, **options)
    cluster.apply(documents)
    try:
        yield documents
    finally:
        for document in documents:
            cluster.kubectl("delete", document["kind"].lower(), document["metadata"]["name"], "--ignore-not-found",
                            "--wait=false", check=False)


# -- objects -------------------------------------------------------------------------------------------------


def agentruntime(name: str, namespace: str, target: str, skills: list[dict] | None = None, *,
                 api: str = "agent.kagenti.dev/v1alpha1", kind: str = "Deployment",
                 annotations: dict[str, str] | None = None, spec_extra: dict | None = None) -> dict:
    spec: dict[str, Any] = {"type": "agent", "targetRef": {"apiVersion": "apps/v1", "kind": kind, "name": target}}
    if skills is not None:
        spec["skills"] = skills
    spec.update(spec_extra or {})
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if annotations:
        metadata["annotations"] = annotations
    return {"apiVersion": api, "kind": "AgentRuntime", "metadata": metadata, "spec": spec}


def skill(name: str, image: str | None = None, mount: str | None = None) -> dict:
    entry = {"name": name, "image": image or f"ghcr.io/example/{name}:v1"}
    if mount:
        entry["mountPath"] = mount
    return entry


def deployment(name: str, namespace: str, replicas: int = 1, *, domain: str = "kagenti.io",
               labels: dict[str, str] | None = None) -> dict:
    pod_labels = {"app": name, f"{domain}/type": "agent", **(labels or {})}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {"containers": [{"name": "agent", "image": "registry.example/agent:v1"}]},
            },
        },
    }


def pods(cluster: KubeCluster, namespace: str, selector: str = "") -> list[dict]:
    path = f"/api/v1/namespaces/{namespace}/pods" + (f"?labelSelector={selector}" if selector else "")
    return cluster.get(path)["items"]


def skill_volumes(pod: dict) -> dict[str, str]:
    """name -> image reference of the pod's image volumes."""
    return {v["name"]: v["image"]["reference"] for v in pod["spec"].get("volumes", []) if "image" in v}


def mark_ready(cluster: KubeCluster, pod: dict) -> None:
    """No kubelet here: report the pod Running and Ready through the status subresource."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    status = {"status": {
        "phase": "Running",
        "conditions": [{"type": t, "status": "True", "lastTransitionTime": now}
                       for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")],
        "containerStatuses": [{"name": c["name"], "image": c["image"], "imageID": "", "ready": True, "restartCount": 0,
                               "started": True, "state": {"running": {"startedAt": now}}}
                              for c in pod["spec"]["containers"]],
    }}
    meta = pod["metadata"]
    assert cluster.api is not None
    with cluster.api.http() as client:
        response = client.patch(f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status",
                                content=json.dumps(status), headers={"content-type": "application/merge-patch+json"})
    response.raise_for_status()


def admission_review(namespace: str, deployment_name: str, *, domain: str = "kagenti.io") -> dict:
    """A Pod CREATE AdmissionReview as the ReplicaSet controller of Deployment `deployment_name` sends it."""
    template_hash = "5d4f8c7b9"
    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "generateName": f"{deployment_name}-{template_hash}-", "namespace": namespace,
            "labels": {"app": deployment_name, f"{domain}/type": "agent", "pod-template-hash": template_hash},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": f"{deployment_name}-{template_hash}",
                                 "uid": str(uuid.uuid4()), "controller": True, "blockOwnerDeletion": True}],
        },
        "spec": {"containers": [{"name": "agent", "image": "registry.example/agent:v1"}]},
    }
    gvk = {"group": "", "version": "v1", "kind": "Pod"}
    gvr = {"group": "", "version": "v1", "resource": "pods"}
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": str(uuid.uuid4()), "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr,
        "namespace": namespace, "operation": "CREATE",
        "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
        "object": pod, "oldObject": None, "dryRun": False,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}}}


def mutate(served: Served, review: dict) -> dict:
    """POST the review to /mutate; returns the AdmissionReview response."""
    with served.https() as client:
        response = client.post("/mutate", json=review)
    assert response.status_code == 200, response.text
    return response.json()["response"]


def injected_images(answer: dict) -> list[str]:
    """The image references of the skill volumes a /mutate answer adds (empty: no patch)."""
    patch = json.loads(base64.b64decode(answer["patch"])) if answer.get("patch") else []
    images = []
    for op in patch:
        if op["path"] == "/spec/volumes":
            images += [v["image"]["reference"] for v in op["value"] if "image" in v]
        elif op["path"].startswith("/spec/volumes/") and isinstance(op.get("value"), dict) and "image" in op["value"]:
            images.append(op["value"]["image"]["reference"])
    return images
