"""A small CA and serving certificates for the webhook: `skill-webhook certs` and the embedded dev default.

The API server reaches the webhook as `https://<service>.<namespace>.svc`, so that name (and its
`.cluster.local` form) must be in the serving certificate; `localhost` and `127.0.0.1` are added so the
same files serve `curl` on a laptop. ECDSA P-256 keys: small, fast to make and fast to handshake.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import DNSName, IPAddress, PolicyBuilder, Store, VerificationError

CA_VALIDITY = dt.timedelta(days=3650)
SERVING_VALIDITY = dt.timedelta(days=365)
# Certificates are back-dated a little so a node whose clock runs slightly behind still accepts them.
CLOCK_SKEW = dt.timedelta(minutes=5)
# ensure_dev_certs replaces anything that would expire before the next working day is over.
REUSE_MARGIN = dt.timedelta(days=1)

DEFAULT_SERVICE = "skill-webhook"
DEFAULT_NAMESPACE = "skill-webhook"
LOCAL_DNS_NAMES = ("localhost",)
LOCAL_IPS = ("127.0.0.1",)

KEY_FILE_MODE = 0o600
CERT_FILE_MODE = 0o644

PrivateKey = ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class CertBundlePaths:
    """Where a bundle lives; file names follow the kubernetes.io/tls Secret keys plus the CA pair."""

    ca_cert: Path
    ca_key: Path
    tls_cert: Path
    tls_key: Path

    @classmethod
    def in_dir(cls, directory: str | os.PathLike[str]) -> "CertBundlePaths":
        d = Path(directory)
        return cls(d / "ca.crt", d / "ca.key", d / "tls.crt", d / "tls.key")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _new_key() -> PrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def service_dns_names(service: str, namespace: str) -> tuple[str, ...]:
    """The names the API server may use for the Service (it dials `<service>.<namespace>.svc`)."""
    return (f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.cluster.local")


def generate_ca(common_name: str, *, validity: dt.timedelta = CA_VALIDITY) -> tuple[PrivateKey, x509.Certificate]:
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + validity)
        # path_length=0: this CA signs serving certificates only, never another CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def generate_serving_cert(
    ca_key: PrivateKey,
    ca_cert: x509.Certificate,
    service: str,
    namespace: str,
    extra_dns: Iterable[str] = (),
    extra_ips: Iterable[str] = (),
    *,
    validity: dt.timedelta = SERVING_VALIDITY,
) -> tuple[PrivateKey, x509.Certificate]:
    key = _new_key()
    dns_names = list(dict.fromkeys([*service_dns_names(service, namespace), *LOCAL_DNS_NAMES, *extra_dns]))
    ips = [ipaddress.ip_address(ip) for ip in dict.fromkeys([*LOCAL_IPS, *extra_ips])]
    now = _now()
    not_after = min(now + validity, ca_cert.not_valid_after_utc)
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                # key_encipherment is for RSA key transport; an ECDSA key only signs.
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName(
                [*(x509.DNSName(n) for n in dns_names), *(x509.IPAddress(ip) for ip in ips)]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def atomic_write(path: str | os.PathLike[str], data: bytes, mode: int) -> None:
    """Write via a temp file in the same directory and rename, so a reader (the TLS reloader, a
    kubelet) never sees half a file, and a key is never readable by others even for a moment."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_cert(path: str | os.PathLike[str]) -> x509.Certificate:
    """The first certificate of a PEM file (the leaf, for a chain)."""
    return x509.load_pem_x509_certificates(Path(path).read_bytes())[0]


def load_key(path: str | os.PathLike[str]) -> PrivateKey:
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path}: expected an EC private key, got {type(key).__name__}")
    return key


def _same_public_key(key: PrivateKey, cert: x509.Certificate) -> bool:
    return key.public_key() == cert.public_key()


def _usable_ca(paths: CertBundlePaths, at: dt.datetime) -> tuple[PrivateKey, x509.Certificate] | None:
    """The CA in `paths` if it is readable, matches its key and is still valid at `at`."""
    try:
        ca_cert, ca_key = load_cert(paths.ca_cert), load_key(paths.ca_key)
    except (OSError, ValueError):
        return None
    if not _same_public_key(ca_key, ca_cert) or not ca_cert.not_valid_before_utc <= at < ca_cert.not_valid_after_utc:
        return None
    return ca_key, ca_cert


def ca_reuse_problem(out_dir: str | os.PathLike[str]) -> str | None:
    """Why the CA in `out_dir` cannot sign a new serving certificate, in a few words (None: it can).
    `write_cert_bundle(reuse_ca=True)` quietly makes a new CA instead; a command that promised to keep
    the CA (`certs --reuse-ca`) asks first."""
    paths = CertBundlePaths.in_dir(out_dir)
    try:
        ca_cert, ca_key = load_cert(paths.ca_cert), load_key(paths.ca_key)
    except FileNotFoundError as exc:
        return f"{exc.filename}: no such file"
    except OSError as exc:
        return f"{exc.filename}: {exc.strerror}"
    except ValueError:
        return f"{paths.ca_cert.name} and {paths.ca_key.name} are not a PEM certificate and its EC key"
    if not _same_public_key(ca_key, ca_cert):
        return f"{paths.ca_key.name} is not the key of {paths.ca_cert.name}"
    at = _now() + REUSE_MARGIN
    if not ca_cert.not_valid_before_utc <= at < ca_cert.not_valid_after_utc:
        return f"it is valid only from {ca_cert.not_valid_before_utc:%Y-%m-%d} to {ca_cert.not_valid_after_utc:%Y-%m-%d}"
    return None


def serving_cert_usable(paths: CertBundlePaths, at: dt.datetime, dns_names: Iterable[str] = LOCAL_DNS_NAMES) -> bool:
    """True when tls.crt chains to ca.crt, is valid at `at` for every name (and 127.0.0.1) under the
    RFC 5280 web PKI profile, and tls.key is its key. cryptography's verifier does the chain work."""
    try:
        ca_cert, leaf, key = load_cert(paths.ca_cert), load_cert(paths.tls_cert), load_key(paths.tls_key)
    except (OSError, ValueError):
        return False
    if not _same_public_key(key, leaf):
        return False
    builder = PolicyBuilder().store(Store([ca_cert])).time(at)
    subjects = [DNSName(n) for n in dns_names] + [IPAddress(ipaddress.ip_address(ip)) for ip in LOCAL_IPS]
    try:
        for subject in subjects:
            builder.build_server_verifier(subject).verify(leaf, [])
    except VerificationError:
        return False
    return True


def _write_bundle(
    paths: CertBundlePaths,
    ca: tuple[PrivateKey, x509.Certificate],
    service: str,
    namespace: str,
    extra_dns: Iterable[str],
    extra_ips: Iterable[str],
    write_ca: bool,
) -> CertBundlePaths:
    ca_key, ca_cert = ca
    tls_key, tls_cert = generate_serving_cert(ca_key, ca_cert, service, namespace, extra_dns, extra_ips)
    paths.tls_cert.parent.mkdir(parents=True, exist_ok=True)
    if write_ca:
        atomic_write(paths.ca_key, key_pem(ca_key), KEY_FILE_MODE)
        atomic_write(paths.ca_cert, cert_pem(ca_cert), CERT_FILE_MODE)
    atomic_write(paths.tls_key, key_pem(tls_key), KEY_FILE_MODE)
    atomic_write(paths.tls_cert, cert_pem(tls_cert), CERT_FILE_MODE)
    return paths


def write_cert_bundle(
    out_dir: str | os.PathLike[str],
    service: str,
    namespace: str,
    *,
    extra_dns: Iterable[str] = (),
    extra_ips: Iterable[str] = (),
    reuse_ca: bool = False,
) -> CertBundlePaths:
    """Write ca.crt, ca.key, tls.crt, tls.key into `out_dir` (keys 0600). With `reuse_ca`, a valid
    CA already there signs the new serving certificate, so the caBundle registered in the webhook
    configurations stays right across a rotation."""
    paths = CertBundlePaths.in_dir(out_dir)
    existing = _usable_ca(paths, _now() + REUSE_MARGIN) if reuse_ca else None
    ca = existing or generate_ca(f"{service}-ca")
    return _write_bundle(paths, ca, service, namespace, extra_dns, extra_ips, write_ca=existing is None)


def ensure_dev_certs(
    certs_dir: str | os.PathLike[str],
    service: str = DEFAULT_SERVICE,
    namespace: str = DEFAULT_NAMESPACE,
) -> CertBundlePaths:
    """The embedded default of `serve`: reuse the bundle in `certs_dir` when it is valid for
    localhost and not expiring within a day; otherwise re-issue the serving certificate (from the
    existing CA when that is still good, so a CA the user already trusts keeps working)."""
    paths = CertBundlePaths.in_dir(certs_dir)
    soon = _now() + REUSE_MARGIN
    if _usable_ca(paths, soon) is not None and serving_cert_usable(paths, soon):
        return paths
    return write_cert_bundle(certs_dir, service, namespace, reuse_ca=True)
