"""The CA and serving certificates: they verify (with OpenSSL through `ssl`, and with cryptography)
for every name the API server or a developer uses, files are private and atomically written, and the
dev bundle is reused only while it is good."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID

from app.service.install.certs import (
    CertBundlePaths,
    atomic_write,
    cert_pem,
    ensure_dev_certs,
    generate_ca,
    generate_serving_cert,
    key_pem,
    load_cert,
    load_key,
    serving_cert_usable,
    write_cert_bundle,
)
from app.service.http.tls import ReloadingTLSContext, new_server_context

UTC = dt.timezone.utc
SERVICE, NAMESPACE = "skill-webhook", "skill-webhook"
SAN_NAMES = [
    "skill-webhook.skill-webhook.svc",
    "skill-webhook.skill-webhook.svc.cluster.local",
    "localhost",
    "127.0.0.1",
]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> CertBundlePaths:
    return write_cert_bundle(
        tmp_path_factory.mktemp("bundle"), SERVICE, NAMESPACE, extra_dns=["webhook.example.com"], extra_ips=["10.0.0.7"]
    )


def handshake(paths: CertBundlePaths, server_hostname: str) -> None:
    """A full TLS handshake in memory: OpenSSL verifies chain, name/IP and key usage as a client would."""
    server_ctx = new_server_context()
    server_ctx.load_cert_chain(paths.tls_cert, paths.tls_key)
    client_ctx = ssl.create_default_context(cafile=str(paths.ca_cert))
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=server_hostname)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(10):
        for name, side, outgoing, peer_in in (("client", client, c_out, s_in), ("server", server, s_out, c_in)):
            if not done[name]:
                try:
                    side.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
            peer_in.write(outgoing.read())
        if all(done.values()):
            return
    raise AssertionError("handshake did not complete")


@pytest.mark.parametrize("name", [*SAN_NAMES, "webhook.example.com", "10.0.0.7"])
def test_serving_cert_verifies_for_every_san_with_openssl(bundle, name):
    handshake(bundle, name)


@pytest.mark.parametrize("name", ["skill-webhook.other.svc", "skill-webhook", "example.com", "127.0.0.2"])
def test_serving_cert_is_refused_for_other_names(bundle, name):
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(bundle, name)


def test_serving_cert_verifies_with_cryptography_under_the_web_pki_profile(bundle):
    now = dt.datetime.now(UTC)
    assert serving_cert_usable(bundle, now, [n for n in SAN_NAMES if n != "127.0.0.1"])
    assert not serving_cert_usable(bundle, now, ["skill-webhook.default.svc"])
    assert not serving_cert_usable(bundle, now + dt.timedelta(days=366), ["localhost"])


def test_certificate_profile(bundle):
    ca, leaf = load_cert(bundle.ca_cert), load_cert(bundle.tls_cert)
    ca_bc = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert ca_bc.critical and ca_bc.value.ca and ca_bc.value.path_length == 0
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.SERVER_AUTH]
    )
    assert leaf.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
    ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    assert leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier == ca_ski
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [
        "skill-webhook.skill-webhook.svc",
        "skill-webhook.skill-webhook.svc.cluster.local",
        "localhost",
        "webhook.example.com",
    ]
    ips = san.get_values_for_type(x509.IPAddress)
    assert ips == [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("10.0.0.7")]
    now = dt.datetime.now(UTC)
    assert dt.timedelta(days=364) < leaf.not_valid_after_utc - now <= dt.timedelta(days=365)
    assert dt.timedelta(days=3649) < ca.not_valid_after_utc - now <= dt.timedelta(days=3650)
    assert leaf.not_valid_before_utc < now and ca.not_valid_before_utc < now


def test_serving_cert_never_outlives_its_ca():
    ca_key, ca_cert = generate_ca("short-ca", validity=dt.timedelta(days=30))
    _, leaf = generate_serving_cert(ca_key, ca_cert, SERVICE, NAMESPACE)
    assert leaf.not_valid_after_utc == ca_cert.not_valid_after_utc


def test_bundle_files_and_modes(bundle):
    assert sorted(p.name for p in bundle.ca_cert.parent.iterdir()) == ["ca.crt", "ca.key", "tls.crt", "tls.key"]
    for key in (bundle.ca_key, bundle.tls_key):
        assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    for cert in (bundle.ca_cert, bundle.tls_cert):
        assert stat.S_IMODE(os.stat(cert).st_mode) == 0o644


def test_serving_certificate_expires_after_its_validity_and_not_after_its_ca(bundle):
    leaf, ca = load_cert(bundle.tls_cert), load_cert(bundle.ca_cert)
    expiry = leaf.not_valid_after_utc
    assert expiry.utcoffset() == dt.timedelta(0)
    # Made moments ago with the default validity: about a year, and never outliving the CA.
    assert dt.timedelta(days=360) < expiry - dt.datetime.now(UTC) <= dt.timedelta(days=366)
    assert expiry <= ca.not_valid_after_utc


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "tls.key"
    atomic_write(target, b"old", 0o600)
    with pytest.raises(TypeError):
        atomic_write(target, "not bytes", 0o600)  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["tls.key"]


def test_write_cert_bundle_makes_a_new_ca_unless_asked_to_reuse_it(tmp_path):
    first = write_cert_bundle(tmp_path, SERVICE, NAMESPACE)
    ca_pem, leaf_pem = first.ca_cert.read_bytes(), first.tls_cert.read_bytes()
    reused = write_cert_bundle(tmp_path, SERVICE, NAMESPACE, reuse_ca=True)
    assert reused.ca_cert.read_bytes() == ca_pem and reused.tls_cert.read_bytes() != leaf_pem
    handshake(reused, "localhost")
    fresh = write_cert_bundle(tmp_path, SERVICE, NAMESPACE)
    assert fresh.ca_cert.read_bytes() != ca_pem
    handshake(fresh, "localhost")


def _snapshot(paths: CertBundlePaths) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (paths.ca_cert, paths.ca_key, paths.tls_cert, paths.tls_key)}


def test_ensure_dev_certs_creates_then_reuses(tmp_path):
    certs_dir = tmp_path / "nested" / "certs"
    paths = ensure_dev_certs(certs_dir)
    handshake(paths, "localhost")
    handshake(paths, "127.0.0.1")
    before = _snapshot(paths)
    assert _snapshot(ensure_dev_certs(certs_dir)) == before


def test_ensure_dev_certs_reissues_a_serving_cert_expiring_within_a_day_from_the_same_ca(tmp_path):
    paths = ensure_dev_certs(tmp_path)
    ca_key = paths.ca_key.read_bytes()
    key, leaf = generate_serving_cert(
        load_key(paths.ca_key), load_cert(paths.ca_cert), SERVICE, NAMESPACE, validity=dt.timedelta(hours=12)
    )
    atomic_write(paths.tls_cert, cert_pem(leaf), 0o644)
    atomic_write(paths.tls_key, key_pem(key), 0o600)
    ensure_dev_certs(tmp_path)
    assert paths.ca_key.read_bytes() == ca_key
    assert load_cert(paths.tls_cert).not_valid_after_utc - dt.datetime.now(UTC) > dt.timedelta(days=300)
    handshake(paths, "localhost")


def write_leaf_without_localhost(paths: CertBundlePaths) -> None:
    """A leaf from the right CA for the right service, but missing the names a developer dials."""
    ca_key, ca_cert = load_key(paths.ca_key), load_cert(paths.ca_cert)
    key, leaf = generate_serving_cert(ca_key, ca_cert, SERVICE, NAMESPACE)
    builder = (
        x509.CertificateBuilder()
        .subject_name(leaf.subject)
        .issuer_name(leaf.issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(leaf.not_valid_before_utc)
        .not_valid_after(leaf.not_valid_after_utc)
    )
    for ext in leaf.extensions:
        value = ext.value
        if isinstance(value, x509.SubjectAlternativeName):
            value = x509.SubjectAlternativeName([x509.DNSName("skill-webhook.skill-webhook.svc")])
        builder = builder.add_extension(value, ext.critical)
    paths.tls_cert.write_bytes(cert_pem(builder.sign(ca_key, hashes.SHA256())))
    paths.tls_key.write_bytes(key_pem(key))


@pytest.mark.parametrize("damage", ["foreign_leaf", "mismatched_key", "garbage_ca", "missing_key", "no_localhost"])
def test_ensure_dev_certs_replaces_what_it_cannot_use(tmp_path, damage):
    paths = ensure_dev_certs(tmp_path)
    other = write_cert_bundle(tmp_path / "other", SERVICE, NAMESPACE)
    if damage == "foreign_leaf":
        paths.tls_cert.write_bytes(other.tls_cert.read_bytes())
        paths.tls_key.write_bytes(other.tls_key.read_bytes())
    elif damage == "mismatched_key":
        paths.tls_key.write_bytes(other.tls_key.read_bytes())
    elif damage == "garbage_ca":
        paths.ca_cert.write_bytes(b"garbage")
    elif damage == "missing_key":
        paths.tls_key.unlink()
    else:
        write_leaf_without_localhost(paths)
        with pytest.raises(ssl.SSLCertVerificationError):
            handshake(paths, "localhost")
    broken = _snapshot(paths) if paths.tls_key.exists() else {}
    ensure_dev_certs(tmp_path)
    assert _snapshot(paths) != broken
    handshake(paths, "localhost")
    handshake(paths, "127.0.0.1")
    assert stat.S_IMODE(os.stat(paths.tls_key).st_mode) == 0o600


def test_dev_bundle_is_usable_by_the_reloading_server_context(tmp_path):
    paths = ensure_dev_certs(Path(tmp_path))
    tls = ReloadingTLSContext(paths.tls_cert, paths.tls_key)
    assert tls.loaded and tls.not_after == load_cert(paths.tls_cert).not_valid_after_utc
