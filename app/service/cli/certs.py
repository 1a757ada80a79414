"""`skill-webhook certs` and `skill-webhook ca-bundle`: make the TLS material and register its CA.

`ca-bundle` passes every other document through unchanged (order kept), so a whole install can be
piped through it: `kubectl kustomize manifests | skill-webhook ca-bundle --ca certs/ca.crt - |
kubectl apply -f -`. With no MANIFEST it reads manifests/webhooks.yaml.
"""

from __future__ import annotations

import argparse
import base64
import sys
from pathlib import Path
from typing import Any, Iterable, TextIO

import yaml
from cryptography import x509

from app.core.parsing.documents import open_lists
from app.service.install.certs import DEFAULT_NAMESPACE, DEFAULT_SERVICE, write_cert_bundle

DEFAULT_WEBHOOKS_MANIFEST = Path("manifests/webhooks.yaml")
WEBHOOK_CONFIGURATION_KINDS = frozenset({"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"})
WEBHOOK_API_GROUP = "admissionregistration.k8s.io"
TLS_SECRET_NAME = "skill-webhook-tls"


class CertCommandError(Exception):
    """A problem the user must fix (unreadable CA, no webhook configuration); exit code 1."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Registers `certs` and `ca-bundle`; `run(args)` dispatches between them."""
    certs = subparsers.add_parser(
        "certs",
        help="write a CA and a serving certificate for <service>.<namespace>.svc",
        description="Writes ca.crt, ca.key, tls.crt and tls.key (keys mode 0600) for "
        "<service>.<namespace>.svc, <service>.<namespace>.svc.cluster.local, localhost and 127.0.0.1.",
    )
    certs.add_argument("--service", default=DEFAULT_SERVICE, help="Service name (default: %(default)s)")
    certs.add_argument("--namespace", default=DEFAULT_NAMESPACE, help="Service namespace (default: %(default)s)")
    certs.add_argument("--out", type=Path, default=Path("certs"), help="output directory (default: %(default)s)")
    certs.add_argument("--dns", action="append", default=[], metavar="NAME", help="extra DNS name (repeatable)")
    certs.add_argument("--ip", action="append", default=[], metavar="ADDRESS", help="extra IP address (repeatable)")
    certs.add_argument(
        "--reuse-ca",
        action="store_true",
        help="sign with the CA already in --out when it is valid, so registered caBundles stay right (rotation)",
    )
    certs.set_defaults(cert_command="certs")

    bundle = subparsers.add_parser(
        "ca-bundle",
        help="print the webhook configurations with caBundle filled in",
        description="Prints MANIFEST documents with webhooks[].clientConfig.caBundle set to the base64 of "
        "the CA PEM in every Mutating/ValidatingWebhookConfiguration; other documents pass through unchanged.",
    )
    bundle.add_argument("--ca", type=Path, required=True, help="CA certificate (PEM), e.g. certs/ca.crt")
    bundle.add_argument(
        "manifests",
        nargs="*",
        metavar="MANIFEST",
        help=f"YAML files, '-' for stdin (default: {DEFAULT_WEBHOOKS_MANIFEST})",
    )
    bundle.set_defaults(cert_command="ca-bundle")


def run(args: argparse.Namespace) -> int:
    try:
        if args.cert_command == "certs":
            return run_certs(args, sys.stdout)
        return run_ca_bundle(args, sys.stdout, sys.stdin)
    except CertCommandError as exc:
        print(f"skill-webhook {args.cert_command}: {exc}", file=sys.stderr)
        return 1


def run_certs(args: argparse.Namespace, out: TextIO) -> int:
    try:
        paths = write_cert_bundle(
            args.out, args.service, args.namespace, extra_dns=args.dns, extra_ips=args.ip, reuse_ca=args.reuse_ca
        )
    except ValueError as exc:  # e.g. an --ip that is not an address
        raise CertCommandError(str(exc)) from exc
    except OSError as exc:
        raise CertCommandError(f"cannot write {args.out}: {exc}") from exc
    print(f"wrote {paths.ca_cert}, {paths.ca_key}, {paths.tls_cert}, {paths.tls_key}", file=out)
    print("next:", file=out)
    print(
        f"  kubectl -n {args.namespace} create secret tls {TLS_SECRET_NAME} "
        f"--cert={paths.tls_cert} --key={paths.tls_key} --dry-run=client -o yaml | kubectl apply -f -",
        file=out,
    )
    print(f"  skill-webhook ca-bundle --ca {paths.ca_cert} | kubectl apply -f -", file=out)
    return 0


def run_ca_bundle(args: argparse.Namespace, out: TextIO, stdin: TextIO) -> int:
    ca_bundle = read_ca_bundle(args.ca)
    documents = []
    for source in args.manifests or [str(DEFAULT_WEBHOOKS_MANIFEST)]:
        documents.extend(_read_documents(source, stdin))
    filled = fill_ca_bundle(documents, ca_bundle)
    if filled == 0:
        raise CertCommandError("no MutatingWebhookConfiguration or ValidatingWebhookConfiguration in the input")
    yaml.safe_dump_all(documents, out, sort_keys=False, explicit_start=True)
    return 0


def read_ca_bundle(path: Path) -> str:
    """base64 of the CA file's PEM, as `caBundle` wants it; the file must hold certificates only."""
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise CertCommandError(f"cannot read CA {path}: {exc}") from exc
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise CertCommandError(f"{path} is not a PEM certificate: {exc}") from exc
    if b"PRIVATE KEY" in pem:
        # Sending a key into a cluster-wide object would leak it to everyone who can read webhooks.
        raise CertCommandError(f"{path} contains a private key; pass the CA certificate (ca.crt) only")
    if not all(_is_ca(c) for c in certs):
        raise CertCommandError(f"{path} holds a certificate that is not a CA (did you pass tls.crt?)")
    return base64.b64encode(pem).decode("ascii")


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _read_documents(source: str, stdin: TextIO) -> list[Any]:
    try:
        text = stdin.read() if source == "-" else Path(source).read_text()
    except OSError as exc:
        raise CertCommandError(f"cannot read {source}: {exc}") from exc
    try:
        # safe_load: a manifest is data; no YAML tag may construct an object.
        return [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as exc:
        raise CertCommandError(f"{source} is not valid YAML: {exc}") from exc


def is_webhook_configuration(doc: Any) -> bool:
    return (
        isinstance(doc, dict)
        and doc.get("kind") in WEBHOOK_CONFIGURATION_KINDS
        and str(doc.get("apiVersion", "")).split("/")[0] == WEBHOOK_API_GROUP
    )


def fill_ca_bundle(documents: Iterable[Any], ca_bundle: str) -> int:
    """Sets caBundle in every webhook of every webhook configuration (in place, also inside a `List`);
    returns how many configurations were filled."""
    filled = 0
    for _, doc in open_lists(("", d) for d in documents):
        if is_webhook_configuration(doc):
            for webhook in doc.get("webhooks") or []:
                if isinstance(webhook, dict):
                    client_config = webhook.setdefault("clientConfig", {})
                    if isinstance(client_config, dict):
                        client_config["caBundle"] = ca_bundle
            filled += 1
    return filled
