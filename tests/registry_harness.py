"""Real registries for the supply-chain tests, and the skill images pushed into them.

- `docker-registry` (Debian's build of the CNCF distribution server) on a free loopback port, its
  own config and storage under a temp directory: once with TLS (a test CA) and htpasswd basic auth,
  once over plain HTTP without auth. Never the packaged system service or its port 5000.
- OCI image layouts built here in Python (tar layers, sha256 digests, index.json, oci-layout) and
  pushed with `skopeo copy --preserve-digests`, so manifests and annotations arrive as built.
- cosign key-format signatures made with `cryptography` (ECDSA P-256): a `sha256-<hex>.sig`
  manifest whose layer is the simple-signing payload, signature in the layer annotation.
- Stand-ins for broken registries: an HTTP server answering a fixed status (or a bearer-token
  flow), and a TCP server that accepts and never answers.

Started once per test process (`shared_registries()`), stopped at exit.
"""

from __future__ import annotations

import atexit
import base64
import functools
import gzip
import hashlib
import http.server
import io
import json
import shutil
import socket
import ssl
import subprocess
import tarfile
import tempfile
import threading
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from app.core import registry_facts as supply
from app.service.install.certs import cert_pem, generate_ca, generate_serving_cert, key_pem
from tests.polling import wait_until

REGISTRY_BIN = shutil.which("docker-registry") or "/usr/bin/docker-registry"
SKOPEO_BIN = shutil.which("skopeo") or "/usr/bin/skopeo"
USER, PASSWORD = "skills", "s3cret-pass"
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar+gzip"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# -- registry processes ---------------------------------------------------------------------------


@dataclass
class Registry:
    """One docker-registry process. `host` is what image references use (127.0.0.1:PORT)."""

    root: Path
    tls: bool
    auth: bool
    port: int = 0
    process: subprocess.Popen | None = None
    ca_file: Path | None = None
    cert_dir: Path | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    def start(self) -> "Registry":
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = free_port()
        lines = [
            "version: 0.1",
            "log: {level: error, accesslog: {disabled: true}}",
            f"storage: {{filesystem: {{rootdirectory: {self.root / 'data'}}}, delete: {{enabled: true}}}}",
            "http:",
            f"  addr: 127.0.0.1:{self.port}",
            "  secret: test-only-secret",
        ]
        if self.tls:
            self._make_tls()
            lines += ["  tls:", f"    certificate: {self.root / 'tls.crt'}", f"    key: {self.root / 'tls.key'}"]
        if self.auth:
            hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=5)).decode()
            (self.root / "htpasswd").write_text(f"{USER}:{hashed}\n")
            lines += ["auth:", "  htpasswd:", "    realm: skill-tests", f"    path: {self.root / 'htpasswd'}"]
        (self.root / "config.yml").write_text("\n".join(lines) + "\n")
        self.process = subprocess.Popen(
            [REGISTRY_BIN, "serve", str(self.root / "config.yml")],
            stdout=open(self.root / "registry.log", "ab"), stderr=subprocess.STDOUT,
        )
        self._wait_ready()
        return self

    def _make_tls(self) -> None:
        ca_key, ca_cert = generate_ca("skill-tests registry CA")
        key, cert = generate_serving_cert(ca_key, ca_cert, "registry", "tests")
        (self.root / "tls.crt").write_bytes(cert_pem(cert))
        (self.root / "tls.key").write_bytes(key_pem(key))
        self.ca_file = self.root / "ca.crt"
        self.ca_file.write_bytes(cert_pem(ca_cert))
        # skopeo reads CA certificates as *.crt from a directory.
        self.cert_dir = self.root / "certs.d"
        self.cert_dir.mkdir(exist_ok=True)
        (self.cert_dir / "ca.crt").write_bytes(cert_pem(ca_cert))

    def _wait_ready(self, timeout: float = 20.0) -> None:
        verify = ssl.create_default_context(cafile=str(self.ca_file)) if self.ca_file else True

        def answers() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"docker-registry exited: {(self.root / 'registry.log').read_text()[-2000:]}")
            try:
                return httpx.get(f"{self.url}/v2/", verify=verify, timeout=1.0).status_code in (200, 401)
            except httpx.HTTPError:
                return False

        wait_until(answers, timeout, f"docker-registry on {self.url} to answer /v2/", interval=0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None

    def restart(self) -> None:
        """Stop and start again on the same port, storage and certificates."""
        self.stop()
        lines_exist = (self.root / "config.yml").exists()
        assert lines_exist
        self.process = subprocess.Popen(
            [REGISTRY_BIN, "serve", str(self.root / "config.yml")],
            stdout=open(self.root / "registry.log", "ab"), stderr=subprocess.STDOUT,
        )
        self._wait_ready()

    def docker_config(self, path: Path, password: str = PASSWORD) -> Path:
        token = base64.b64encode(f"{USER}:{password}".encode()).decode()
        path.write_text(json.dumps({"auths": {self.host: {"auth": token}}}))
        return path

    def push(self, layout: "Layout", tag: str, repository: str, dest_tag: str | None = None) -> None:
        """skopeo copy oci:LAYOUT:TAG docker://HOST/REPOSITORY:DEST_TAG, digests preserved."""
        command = [SKOPEO_BIN, "--insecure-policy", "copy", "--quiet", "--all", "--preserve-digests"]
        if self.tls:
            command += ["--dest-cert-dir", str(self.cert_dir), "--dest-tls-verify=true"]
        else:
            command += ["--dest-tls-verify=false"]
        if self.auth:
            command += ["--dest-creds", f"{USER}:{PASSWORD}"]
        command += [f"oci:{layout.path}:{tag}", f"docker://{self.host}/{repository}:{dest_tag or tag}"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"skopeo failed: {done.stderr}")


@dataclass
class Registries:
    secure: Registry  # TLS + htpasswd
    plain: Registry  # plain HTTP, no auth
    work: Path
    pushed: dict[str, str] = field(default_factory=dict)  # image name -> digest


@functools.cache
def shared_registries() -> Registries:
    work = Path(tempfile.mkdtemp(prefix="skill-registry-"))
    secure = Registry(work / "secure", tls=True, auth=True).start()
    plain = Registry(work / "plain", tls=False, auth=False)
    try:
        plain.start()
    except Exception:
        secure.stop()
        raise

    def stop() -> None:
        secure.stop()
        plain.stop()
        shutil.rmtree(work, ignore_errors=True)

    atexit.register(stop)
    return Registries(secure, plain, work)


# -- OCI layouts ----------------------------------------------------------------------------------


def tar_gz(files: dict[str, bytes]) -> bytes:
    """A reproducible gzip'd tar of `files` (path -> content); parent directories included."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = sorted({str(Path(p).parent) for p in files if str(Path(p).parent) != "."})
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(info)
        for name, content in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(content), 0o644, 0
            tar.addfile(info, io.BytesIO(content))
    return gzip.compress(raw.getvalue(), mtime=0)


class Layout:
    """An OCI image layout directory being built: blobs, then manifests tagged in index.json."""

    def __init__(self, path: Path) -> None:
        self.path = path
        (path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (path / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
        self.refs: list[dict[str, Any]] = []

    def blob(self, data: bytes, media_type: str, **extra: Any) -> dict[str, Any]:
        digest = sha256(data)
        (self.path / "blobs" / "sha256" / digest.split(":")[1]).write_bytes(data)
        return {"mediaType": media_type, "digest": digest, "size": len(data), **extra}

    def manifest(self, document: dict[str, Any], **extra: Any) -> dict[str, Any]:
        return self.blob(json.dumps(document, sort_keys=True).encode(), document["mediaType"], **extra)

    def tag(self, descriptor: dict[str, Any], tag: str) -> str:
        entry = dict(descriptor)
        entry["annotations"] = {**entry.get("annotations", {}), "org.opencontainers.image.ref.name": tag}
        self.refs = [r for r in self.refs if r["annotations"]["org.opencontainers.image.ref.name"] != tag]
        self.refs.append(entry)
        (self.path / "index.json").write_text(json.dumps(
            {"schemaVersion": 2, "mediaType": supply.OCI_INDEX, "manifests": self.refs}
        ))
        return descriptor["digest"]

    def image(
        self, files: dict[str, bytes], annotations: dict[str, str] | None = None, *,
        config_media_type: str = supply.OCI_CONFIG, config: bytes | None = None,
        architecture: str = "amd64", artifact_type: str | None = None,
    ) -> dict[str, Any]:
        layer = tar_gz(files)
        layer_desc = self.blob(layer, LAYER_TAR)
        if config is None:
            diff_id = sha256(gzip.decompress(layer))
            config = json.dumps({
                "architecture": architecture, "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": [diff_id]}, "config": {},
            }, sort_keys=True).encode()
        document: dict[str, Any] = {
            "schemaVersion": 2, "mediaType": supply.OCI_MANIFEST,
            "config": self.blob(config, config_media_type), "layers": [layer_desc],
        }
        if annotations:
            document["annotations"] = annotations
        if artifact_type:
            document["artifactType"] = artifact_type
        return self.manifest(document)


def skillimage_files(name: str, version: str) -> dict[str, bytes]:
    card = f"apiVersion: skillimage.io/v1alpha1\nkind: SkillCard\nmetadata:\n  name: {name}\n  version: {version}\n"
    return {"skill.yaml": card.encode(), "SKILL.md": f"---\nname: {name}\n---\n# {name}\n".encode()}


def skillimage(layout: Layout, name: str, version: str, status: str = "published", description: str = "") -> dict[str, Any]:
    return layout.image(skillimage_files(name, version), {
        supply.TITLE: name, supply.DESCRIPTION: description or f"The {name} skill",
        supply.VERSION: version, supply.SKILLIMAGE_STATUS: status,
    })


def agentskills_image(layout: Layout, name: str) -> dict[str, Any]:
    files = {f"{name}/SKILL.md": f"---\nname: {name}\ndescription: agentskills layout\n---\n".encode()}
    return layout.image(files, {supply.AGENTSKILLS_NAME: name})


def empty_config_artifact(layout: Layout, name: str) -> dict[str, Any]:
    return layout.image(skillimage_files(name, "1.0.0"), {supply.TITLE: name},
                        config_media_type=supply.OCI_EMPTY, config=b"{}")


def multi_arch_index(layout: Layout, name: str, version: str) -> dict[str, Any]:
    """An index with arm64 first and amd64 second (the resolver must pick amd64)."""
    entries = []
    for arch in ("arm64", "amd64"):
        desc = layout.image(skillimage_files(name, version) | {"ARCH": arch.encode()},
                            {supply.TITLE: f"{name} ({arch})", supply.VERSION: version}, architecture=arch)
        entries.append({**desc, "platform": {"os": "linux", "architecture": arch}})
    return layout.manifest({
        "schemaVersion": 2, "mediaType": supply.OCI_INDEX, "manifests": entries,
        "annotations": {supply.DESCRIPTION: f"{name}, multi-arch"},
    })


# -- cosign key-format signatures ---------------------------------------------------------------


def new_cosign_key(directory: Path, name: str) -> tuple[ec.EllipticCurvePrivateKey, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    path = directory / f"{name}.pub"
    path.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return key, path


def simple_signing_payload(reference: str, digest: str) -> bytes:
    return json.dumps({
        "critical": {
            "identity": {"docker-reference": reference},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature",
        },
        "optional": None,
    }).encode()


def signature_manifest(layout: Layout, key: ec.EllipticCurvePrivateKey, reference: str, digest: str) -> dict[str, Any]:
    payload = simple_signing_payload(reference, digest)
    signature = base64.b64encode(key.sign(payload, ec.ECDSA(hashes.SHA256()))).decode()
    layer = layout.blob(payload, supply.COSIGN_SIMPLESIGNING,
                        annotations={supply.COSIGN_SIGNATURE_ANNOTATION: signature})
    config = json.dumps({"architecture": "", "os": "", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": [sha256(payload)]}}).encode()
    return layout.manifest({
        "schemaVersion": 2, "mediaType": supply.OCI_MANIFEST,
        "config": layout.blob(config, supply.OCI_CONFIG), "layers": [layer],
    })


# -- broken registries ----------------------------------------------------------------------------


class StandInRegistry:
    """A tiny HTTP server: `status` answers every request with that status; or, with `bearer`,
    a token flow (401 + WWW-Authenticate Bearer, a token endpoint checking basic credentials)
    in front of `manifests` (path -> (media type, body))."""

    def __init__(self, status: int = 500, *, bearer: bool = False,
                 manifests: dict[str, tuple[str, bytes]] | None = None) -> None:
        self.status, self.bearer = status, bearer
        self.manifests = manifests or {}
        self.requests: list[str] = []
        self.token_requests: list[dict[str, str]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return None

            def do_HEAD(self) -> None:
                self.do_GET()

            def do_GET(self) -> None:
                outer.requests.append(self.path)
                if outer.bearer:
                    outer.serve_bearer(self)
                    return
                self._send(outer.status, b'{"errors":[{"code":"UNKNOWN"}]}', "application/json")

            def _send(self, status: int, body: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        # serve_forever looks for shutdown() every poll_interval (0.5 s unless told): each test would wait it out
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    TOKEN = "tok-123"

    def serve_bearer(self, handler: Any) -> None:
        path, _, query = handler.path.partition("?")
        if path == "/token":
            params = dict(urllib.parse.parse_qsl(query))
            self.token_requests.append(params)
            expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
            if handler.headers.get("Authorization") != expected:
                handler._send(401, b"{}", "application/json")
                return
            handler._send(200, json.dumps({"token": self.TOKEN, "expires_in": 300}).encode(), "application/json")
            return
        if handler.headers.get("Authorization") != f"Bearer {self.TOKEN}":
            challenge = (f'Bearer realm="http://{self.host}/token",service="standin",'
                         f'scope="repository:{path[len("/v2/"):].rsplit("/", 2)[0]}:pull"')
            handler._send(401, b"{}", "application/json", {"WWW-Authenticate": challenge})
            return
        if path in self.manifests:
            media_type, body = self.manifests[path]
            handler._send(200, body, media_type, {"Docker-Content-Digest": sha256(body)})
            return
        handler._send(404, b"{}", "application/json")

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class StallingServer:
    """Accepts TCP connections and never answers (a registry that hangs)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.host = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted.append(conn)

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(2)
        for conn in self.accepted:
            conn.close()
        self.sock.close()


