"""Certificate rotation against a real uvicorn HTTPS server on 127.0.0.1 (docs/installing.md "TLS and certificate reload").

The server runs with the production context factory and uvicorn's default loop; clients verify the
chain against the CA, read the peer certificate, and count every failure.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from app.service.install.certs import atomic_write, cert_pem, generate_ca, generate_serving_cert, key_pem
from app.service.http.tls import ReloadingTLSContext
from tests.polling import wait_until

ROTATIONS = 10
SERVE_NEW_CERT_WITHIN = 5.0


async def echo_client_port(scope, receive, send):
    """Answers with the client's TCP port, so a keep-alive client can prove it kept one connection."""
    assert scope["type"] == "http"
    body = json.dumps({"client_port": scope["client"][1]}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    ca_key, ca_cert = generate_ca("test-ca")
    ca_file = tmp_path_factory.mktemp("ca") / "ca.crt"
    ca_file.write_bytes(cert_pem(ca_cert))
    return ca_key, ca_cert, ca_file


@dataclass
class Pair:
    key_pem: bytes
    cert_pem: bytes
    der: bytes


def new_pair(ca) -> Pair:
    ca_key, ca_cert, _ = ca
    key, cert = generate_serving_cert(ca_key, ca_cert, "skill-webhook", "skill-webhook")
    return Pair(key_pem(key), cert_pem(cert), cert.public_bytes(serialization.Encoding.DER))


# -- the ways certificate files get replaced in practice --------------------------------------------


def write_kubelet_style(directory: Path, pair: Pair, generation: int) -> None:
    """What the kubelet does for a Secret volume: a new timestamped directory, then an atomic flip of
    the `..data` symlink that tls.crt and tls.key point through."""
    data_dir = directory / f"..gen{generation}"
    data_dir.mkdir()
    (data_dir / "tls.crt").write_bytes(pair.cert_pem)
    (data_dir / "tls.key").write_bytes(pair.key_pem)
    previous = os.readlink(directory / "..data") if (directory / "..data").is_symlink() else None
    os.symlink(data_dir.name, directory / "..data_tmp")
    os.replace(directory / "..data_tmp", directory / "..data")
    for name in ("tls.crt", "tls.key"):
        if not (directory / name).is_symlink():
            os.symlink(f"..data/{name}", directory / name)
    if previous is not None:
        shutil.rmtree(directory / previous)


def write_by_rename(directory: Path, pair: Pair, generation: int) -> None:
    """Each file renamed over the old one, certificate first: for a moment cert and key disagree."""
    atomic_write(directory / "tls.crt", pair.cert_pem, 0o644)
    time.sleep(0.05)
    atomic_write(directory / "tls.key", pair.key_pem, 0o600)


def write_in_place(directory: Path, pair: Pair, generation: int) -> None:
    """Truncate and rewrite in two halves: a poll may see a half-written PEM."""
    for name, data in (("tls.crt", pair.cert_pem), ("tls.key", pair.key_pem)):
        with open(directory / name, "wb") as f:
            f.write(data[: len(data) // 2])
            f.flush()
            time.sleep(0.05)
            f.write(data[len(data) // 2 :])


Writer = Callable[[Path, Pair, int], None]


# -- server and clients ------------------------------------------------------------------------------


@contextmanager
def running_server(tls: ReloadingTLSContext, loop: str = "auto") -> Iterator[int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        echo_client_port, ssl_context_factory=tls.uvicorn_factory, loop=loop, lifespan="off", log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()

    def started() -> bool:
        assert thread.is_alive(), "uvicorn stopped before it started"
        return server.started

    wait_until(started, 10, "uvicorn to start")
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def client_context(ca_file: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file))


def fetch(port: int, ctx: ssl.SSLContext, server_hostname: str = "127.0.0.1") -> tuple[int, bytes]:
    """One request on a new connection; returns the HTTP status and the peer certificate (DER).
    With "127.0.0.1" the client sends no SNI, with "localhost" it does: both must be served."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=server_hostname) as conn:
            der = conn.getpeercert(binary_form=True)
            conn.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            response = b""
            while chunk := conn.recv(65536):
                response += chunk
    return int(response.split(b" ", 2)[1]), der


def wait_until_served(port: int, ctx: ssl.SSLContext, der: bytes, timeout: float) -> float:
    """Seconds until a new connection is served `der`; a request that fails meanwhile fails the test."""
    start = time.monotonic()

    def served() -> bool:
        try:
            return fetch(port, ctx)[1] == der
        except Exception as exc:  # failing here, not "not yet": the rotation must fail no request
            raise AssertionError(f"a request failed during the rotation: {exc!r}") from exc

    wait_until(served, timeout, "the new certificate to be served", interval=0.05)
    return time.monotonic() - start


@dataclass
class LoadReport:
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    client_ports: set[int] = field(default_factory=set)


@contextmanager
def background_load(port: int, ca_file: Path) -> Iterator[tuple[LoadReport, LoadReport]]:
    """Two clients until the block ends: one opening a new connection per request (with and without
    SNI), one reusing a single keep-alive connection."""
    stop = threading.Event()
    fresh, keepalive = LoadReport(), LoadReport()
    ctx = client_context(ca_file)

    def new_connections() -> None:
        names = ("127.0.0.1", "localhost")
        while not stop.is_set():
            try:
                status, _ = fetch(port, ctx, names[fresh.ok % 2])
                assert status == 200, status
                fresh.ok += 1
            except Exception as exc:  # every failure is collected and asserted on
                fresh.failures.append(repr(exc))

    def one_keepalive_connection() -> None:
        with httpx.Client(verify=ctx, timeout=5) as client:
            while not stop.is_set():
                try:
                    response = client.get(f"https://127.0.0.1:{port}/")
                    assert response.status_code == 200, response.status_code
                    keepalive.client_ports.add(response.json()["client_port"])
                    keepalive.ok += 1
                except Exception as exc:
                    keepalive.failures.append(repr(exc))

    threads = [threading.Thread(target=t, daemon=True) for t in (new_connections, one_keepalive_connection)]
    for t in threads:
        t.start()
    try:
        yield fresh, keepalive
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)


def kubelet_dir(tmp_path: Path, pair: Pair) -> Path:
    directory = tmp_path / "tls"
    directory.mkdir()
    write_kubelet_style(directory, pair, 0)
    return directory


# -- tests -------------------------------------------------------------------------------------------


@pytest.mark.slow  # ten rotations, each waiting for the file poll
@pytest.mark.parametrize("writer", [write_kubelet_style, write_by_rename, write_in_place], ids=lambda w: w.__name__)
def test_rotation_under_load_fails_no_request_and_serves_new_cert_within_5s(tmp_path, ca, writer: Writer):
    directory = kubelet_dir(tmp_path, new_pair(ca)) if writer is write_kubelet_style else tmp_path
    if writer is not write_kubelet_style:
        write_by_rename(directory, new_pair(ca), 0)
    ctx = client_context(ca[2])
    with ReloadingTLSContext(directory / "tls.crt", directory / "tls.key") as tls:
        with running_server(tls) as port, background_load(port, ca[2]) as (fresh, keepalive):
            delays = []
            for generation in range(1, ROTATIONS + 1):
                pair = new_pair(ca)
                writer(directory, pair, generation)
                delays.append(wait_until_served(port, ctx, pair.der, SERVE_NEW_CERT_WITHIN))
            done = fresh.ok, keepalive.ok
            wait_until(lambda: fresh.ok > done[0] + 2 and keepalive.ok > done[1] + 2, 10,
                       "both clients to finish a few requests on the last certificate")
        assert tls.reloads == ROTATIONS + 1
    assert fresh.failures == [] and keepalive.failures == []
    assert fresh.ok > ROTATIONS and keepalive.ok > ROTATIONS
    # The keep-alive connection outlived every rotation: one TCP connection throughout.
    assert len(keepalive.client_ports) == 1
    assert max(delays) < SERVE_NEW_CERT_WITHIN


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_rotation_works_on_both_event_loops(tmp_path, ca, loop):
    directory = kubelet_dir(tmp_path, first := new_pair(ca))
    ctx = client_context(ca[2])
    with ReloadingTLSContext(directory / "tls.crt", directory / "tls.key", poll_interval=0.1) as tls:
        with running_server(tls, loop=loop) as port:
            assert fetch(port, ctx, "localhost") == (200, first.der)
            second = new_pair(ca)
            write_kubelet_style(directory, second, 1)
            wait_until_served(port, ctx, second.der, SERVE_NEW_CERT_WITHIN)
            assert fetch(port, ctx, "localhost") == (200, second.der)


def test_broken_or_mismatched_files_keep_the_previous_certificate(tmp_path, ca):
    good = new_pair(ca)
    write_by_rename(tmp_path, good, 0)
    tls = ReloadingTLSContext(tmp_path / "tls.crt", tmp_path / "tls.key")  # polled by hand: deterministic
    ctx = client_context(ca[2])
    with running_server(tls) as port:
        (tmp_path / "tls.crt").write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64\n")
        assert tls.reload_if_changed() is False
        assert tls.loaded and tls.last_error and tls.reload_failures == 1
        assert fetch(port, ctx) == (200, good.der)
        # An unchanged broken file is not retried (or logged) at every poll.
        assert tls.reload_if_changed() is False and tls.reload_failures == 1

        other, another = new_pair(ca), new_pair(ca)
        write_by_rename(tmp_path, Pair(another.key_pem, other.cert_pem, other.der), 1)
        assert tls.reload_if_changed() is False and tls.reload_failures == 2
        assert fetch(port, ctx) == (200, good.der)

        (tmp_path / "tls.key").unlink()
        assert tls.reload_if_changed() is False
        assert fetch(port, ctx) == (200, good.der)

        fixed = new_pair(ca)
        write_by_rename(tmp_path, fixed, 2)
        assert tls.reload_if_changed() is True
        assert tls.last_error is None
        assert fetch(port, ctx) == (200, fixed.der)


def test_missing_files_at_start_raise_unless_waiting_is_asked_for(tmp_path, ca):
    cert_file, key_file = tmp_path / "tls.crt", tmp_path / "tls.key"
    with pytest.raises(OSError):
        ReloadingTLSContext(cert_file, key_file)

    seen = []
    tls = ReloadingTLSContext(cert_file, key_file, require_initial=False, on_reload=seen.append)
    assert not tls.loaded and tls.not_after is None
    ctx = client_context(ca[2])
    with running_server(tls) as port:
        with pytest.raises(ssl.SSLError):
            fetch(port, ctx)
        pair = new_pair(ca)
        write_by_rename(tmp_path, pair, 1)
        assert tls.reload_if_changed() is True
        assert fetch(port, ctx) == (200, pair.der)
    assert tls.loaded and seen == [tls]
    assert tls.not_after == x509.load_der_x509_certificate(pair.der).not_valid_after_utc


def legacy_client_context(max_version: ssl.TLSVersion) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    # Security level 0 lets this client actually offer TLS 1.0/1.1, so a refusal is the server's doing.
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.maximum_version = max_version
    return ctx


@contextmanager
def permissive_tls_server(cert_file: Path, key_file: Path) -> Iterator[int]:
    """A control server that does accept TLS 1.0 and 1.1, proving the legacy client can speak them."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.load_cert_chain(cert_file, key_file)
    listener = socket.create_server(("127.0.0.1", 0))

    def accept_one_per_client() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            try:
                with ctx.wrap_socket(conn, server_side=True) as tls_conn:
                    tls_conn.recv(1)
            except (OSError, ssl.SSLError):
                pass

    thread = threading.Thread(target=accept_one_per_client, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


def negotiated_version(port: int, ctx: ssl.SSLContext) -> str | None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw) as conn:
            return conn.version()


# The legacy versions are deprecated in the ssl module precisely because we must refuse them.
@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
@pytest.mark.parametrize("legacy", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1], ids=["TLSv1.0", "TLSv1.1"])
def test_tls_below_1_2_is_refused(tmp_path, ca, legacy):
    write_by_rename(tmp_path, new_pair(ca), 0)
    client = legacy_client_context(legacy)
    with permissive_tls_server(tmp_path / "tls.crt", tmp_path / "tls.key") as control_port:
        assert negotiated_version(control_port, client) == {"TLSv1": "TLSv1", "TLSv1_1": "TLSv1.1"}[legacy.name]
    tls = ReloadingTLSContext(tmp_path / "tls.crt", tmp_path / "tls.key")
    assert tls.ssl_context.minimum_version == ssl.TLSVersion.TLSv1_2
    with running_server(tls) as port:
        with pytest.raises(ssl.SSLError):
            negotiated_version(port, client)
        assert negotiated_version(port, legacy_client_context(ssl.TLSVersion.TLSv1_2)) == "TLSv1.2"


def test_alpn_offers_http_1_1_only(tmp_path, ca):
    write_by_rename(tmp_path, new_pair(ca), 0)
    tls = ReloadingTLSContext(tmp_path / "tls.crt", tmp_path / "tls.key")
    ctx = client_context(ca[2])
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    with running_server(tls) as port:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as conn:
                assert conn.selected_alpn_protocol() == "http/1.1"
