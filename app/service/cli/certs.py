"""`skill-webhook certs` and `skill-webhook ca-bundle`: make the TLS material and register its CA.

`certs` never replaces a CA silently: a caBundle registered with the old one would stop matching and
every matching pod would be refused. With a CA already in --out it asks for `--reuse-ca` (sign with
it: rotation) or `--new-ca` (replace it, then register it again).

`ca-bundle` without MANIFEST prints the two webhook configurations of the install set for the given
--namespace, --service, --domain and --agentruntime-api (the same generator as `skill-webhook
manifests`), so it works from any directory. Given MANIFESTs, it passes every other document through
unchanged (order kept), so a whole install can be piped through it: `kubectl kustomize manifests |
skill-webhook ca-bundle --ca certs/ca.crt - | kubectl apply -f -`.
"""

from __future__ import annotations

import argparse
import base64
import sys
from pathlib import Path
from typing import Any, Iterable, TextIO

import yaml

from app.core.model import DEFAULT_AGENTRUNTIME_API
from app.core.names import DEFAULT_DOMAIN_PREFIX
from app.core.parsing.documents import open_lists
from app.service.cli import options
from app.service.install.certs import DEFAULT_NAMESPACE, DEFAULT_SERVICE, CertBundlePaths

WEBHOOK_CONFIGURATION_KINDS = frozenset({"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"})
WEBHOOK_API_GROUP = "admissionregistration.k8s.io"
TLS_SECRET_NAME = "skill-webhook-tls"  # the Secret the generated Deployment mounts
DEPLOYMENT_NAME = DEFAULT_SERVICE  # the generated Deployment's (and Service's) name
INSTALL_DIR = "skill-webhook-install"


class CertCommandError(Exception):
    """A problem the user must fix (unreadable CA, no webhook configuration); exit code 1."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Registers `certs` and `ca-bundle`; `run(args)` dispatches between them."""
    certs = subparsers.add_parser(
        "certs",
        description="Writes ca.crt, ca.key, tls.crt and tls.key (keys mode 0600) for "
        "<service>.<namespace>.svc, <service>.<namespace>.svc.cluster.local, localhost and 127.0.0.1, "
        "and prints the install steps that follow, in their order.",
    )
    certs.add_argument("--service", default=DEFAULT_SERVICE, help="Service name (default: %(default)s)")
    certs.add_argument("--namespace", default=DEFAULT_NAMESPACE, help="Service namespace (default: %(default)s)")
    certs.add_argument("--out", type=Path, default=Path("certs"), help="output directory (default: %(default)s)")
    certs.add_argument("--dns", action="append", default=[], metavar="NAME", help="extra DNS name (repeatable)")
    certs.add_argument("--ip", action="append", default=[], metavar="ADDRESS", help="extra IP address (repeatable)")
    ca = certs.add_mutually_exclusive_group()
    ca.add_argument(
        "--reuse-ca", action="store_true",
        help="sign with the CA already in --out, so registered caBundles stay right (rotation)",
    )
    ca.add_argument(
        "--new-ca", "--force", dest="new_ca", action="store_true",
        help="replace the CA in --out with a new one (register it again with ca-bundle afterwards)",
    )
    options.add(certs, "domain", "agentruntime_api", help={
        "domain": "label/annotation prefix, for the install commands printed (rossoctl.io for rossoctl)",
        "agentruntime_api": "AgentRuntime group/version, for the install commands printed",
    })
    certs.set_defaults(cert_command="certs")

    bundle = subparsers.add_parser(
        "ca-bundle",
        description="Prints the webhook configurations with webhooks[].clientConfig.caBundle set to the base64 "
        "of the CA PEM. Without MANIFEST: the install set's two configurations for --namespace, --service, "
        "--domain and --agentruntime-api. With MANIFESTs: every Mutating/ValidatingWebhookConfiguration in "
        "them filled in, other documents passed through unchanged.",
    )
    bundle.add_argument("--ca", type=Path, required=True, help="CA certificate (PEM), e.g. certs/ca.crt")
    bundle.add_argument("--namespace", help=f"namespace of the webhook's Service (default: {DEFAULT_NAMESPACE})")
    bundle.add_argument("--service", help=f"name of the webhook's Service (default: {DEFAULT_SERVICE})")
    options.add(bundle, "domain", "agentruntime_api", help={
        "domain": "label prefix of the generated webhooks' selectors (rossoctl.io for rossoctl)",
        "agentruntime_api": "AgentRuntime group/version the generated validating webhook checks",
    })
    bundle.add_argument(
        "manifests", nargs="*", metavar="MANIFEST",
        help="YAML files, '-' for stdin (default: the install set's webhook configurations, generated)",
    )
    bundle.set_defaults(cert_command="ca-bundle")


def run(args: argparse.Namespace) -> int:
    try:
        options.resolve(args)
    except options.UsageError as err:
        options.fail(args.cert_command, err)
        return options.USAGE_ERROR
    try:
        if args.cert_command == "certs":
            return run_certs(args, sys.stdout)
        return run_ca_bundle(args, sys.stdout, sys.stdin)
    except CertCommandError as exc:
        options.fail(args.cert_command, exc)
        return 1


def run_certs(args: argparse.Namespace, out: TextIO) -> int:
    from app.service.install.certs import ca_reuse_problem, write_cert_bundle

    existing = CertBundlePaths.in_dir(args.out)
    has_ca = existing.ca_cert.exists() or existing.ca_key.exists()
    if has_ca and not (args.reuse_ca or args.new_ca):
        raise CertCommandError(
            f"{existing.ca_cert} exists (a caBundle may hold it): pass --reuse-ca to sign with it, or --new-ca "
            "to replace it and register the new one with ca-bundle"
        )
    if args.reuse_ca:
        problem = ca_reuse_problem(args.out) if has_ca else f"no CA in {args.out} (ca.crt, ca.key)"
        if problem is not None:
            raise CertCommandError(f"--reuse-ca: {problem}; pass --new-ca to make a new CA (and register it again)")
    try:
        paths = write_cert_bundle(
            args.out, args.service, args.namespace, extra_dns=args.dns, extra_ips=args.ip, reuse_ca=args.reuse_ca
        )
    except ValueError as exc:  # e.g. an --ip that is not an address
        raise CertCommandError(str(exc)) from exc
    except OSError as exc:
        raise CertCommandError(options.os_problem(args.out, exc)) from exc
    print(f"wrote {paths.ca_cert}, {paths.ca_key}, {paths.tls_cert}, {paths.tls_key}", file=out)
    for line in next_steps(args, paths):
        print(line, file=out)
    return 0


def next_steps(args: argparse.Namespace, paths: CertBundlePaths) -> list[str]:
    """What to run next, in the order that never leaves a Fail webhook without a Ready server."""
    ns = args.namespace
    secret = (f"kubectl -n {ns} create secret tls {TLS_SECRET_NAME} --cert={paths.tls_cert} "
              f"--key={paths.tls_key} --dry-run=client -o yaml | kubectl apply -f -")
    if args.reuse_ca:
        return ["next: update the serving Secret; the webhook reloads it, and the registered caBundle stays valid:",
                f"  {secret}"]
    variant = ""
    if args.domain != DEFAULT_DOMAIN_PREFIX or args.agentruntime_api != DEFAULT_AGENTRUNTIME_API:
        variant = f" --domain {args.domain} --agentruntime-api {args.agentruntime_api}"
    service = f" --service {args.service}" if args.service != DEFAULT_SERVICE else ""
    steps = [
        "next, in this order (the webhooks last: a Fail webhook that cannot be called blocks every pod it matches):",
        f"  1. kubectl create namespace {ns} --dry-run=client -o yaml | kubectl apply -f -",
        f"  2. {secret}",
        f"  3. skill-webhook manifests --namespace {ns}{variant} -o {INSTALL_DIR} && kubectl apply -k {INSTALL_DIR}",
        f"  4. kubectl -n {ns} rollout status deployment/{DEPLOYMENT_NAME} --timeout=180s",
        f"  5. skill-webhook ca-bundle --ca {paths.ca_cert} --namespace {ns}{service}{variant} | kubectl apply -f -",
    ]
    if service:
        steps.append(f"  (the generated manifests name the Service {DEPLOYMENT_NAME}; the certificate and step 5 "
                     f"are for Service {args.service} in {ns})")
    return steps


def run_ca_bundle(args: argparse.Namespace, out: TextIO, stdin: TextIO) -> int:
    ca_bundle = read_ca_bundle(args.ca)
    if args.manifests:
        documents = []
        for source in args.manifests:
            documents.extend(_read_documents(source, stdin))
        _check_service(documents, args)
    else:
        documents = generated_webhooks(args)
    filled = fill_ca_bundle(documents, ca_bundle)
    if filled == 0:
        raise CertCommandError("no MutatingWebhookConfiguration or ValidatingWebhookConfiguration in the input")
    yaml.safe_dump_all(documents, out, sort_keys=False, explicit_start=True)
    return 0


def generated_webhooks(args: argparse.Namespace) -> list[Any]:
    """The install set's webhook configurations, calling `--service` in `--namespace`."""
    from app.service.install.manifests import InstallOptions, ManifestOptionError, webhooks

    try:
        install = InstallOptions(domain=args.domain, agentruntime_api=args.agentruntime_api,
                                 namespace=args.namespace or DEFAULT_NAMESPACE)
    except ManifestOptionError as exc:
        raise CertCommandError(str(exc)) from None
    documents = [document.body for document in webhooks(install)]
    for _, webhook in _webhooks(documents):
        webhook["clientConfig"]["service"]["name"] = args.service or DEFAULT_SERVICE
    return documents


def _check_service(documents: list[Any], args: argparse.Namespace) -> None:
    """With --namespace or --service given, the MANIFESTs' webhooks must call that Service: a webhook
    registered for another namespace cannot be called, and blocks every pod it matches."""
    if args.namespace is None and args.service is None:
        return
    for name, webhook in _webhooks(documents):
        service = (webhook.get("clientConfig") or {}).get("service")
        if not isinstance(service, dict):
            continue
        for key, wanted in (("namespace", args.namespace), ("name", args.service)):
            if wanted is not None and service.get(key) != wanted:
                raise CertCommandError(
                    f"webhook {name} calls Service {service.get('namespace')}/{service.get('name')}, not the "
                    f"--namespace/--service given; leave out MANIFEST to generate the configurations for them"
                )


def _webhooks(documents: Iterable[Any]) -> Iterable[tuple[str, dict[str, Any]]]:
    for _, doc in open_lists(("", d) for d in documents):
        if is_webhook_configuration(doc):
            for webhook in doc.get("webhooks") or []:
                if isinstance(webhook, dict):
                    yield str(webhook.get("name", "")), webhook


def read_ca_bundle(path: Path) -> str:
    """base64 of the CA file's PEM, as `caBundle` wants it; the file must hold certificates only."""
    from cryptography import x509

    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise CertCommandError(f"--ca {options.os_problem(path, exc)}") from exc
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError:
        # cryptography's own text points at its FAQ; what the user needs is which file, and what it is not.
        raise CertCommandError(f"--ca {path}: not a PEM certificate") from None
    if b"PRIVATE KEY" in pem:
        # Sending a key into a cluster-wide object would leak it to everyone who can read webhooks.
        raise CertCommandError(f"{path} contains a private key; pass the CA certificate (ca.crt) only")
    if not all(_is_ca(c) for c in certs):
        raise CertCommandError(f"{path} holds a certificate that is not a CA (did you pass tls.crt?)")
    return base64.b64encode(pem).decode("ascii")


def _is_ca(cert: Any) -> bool:
    from cryptography import x509

    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _read_documents(source: str, stdin: TextIO) -> list[Any]:
    try:
        text = stdin.read() if source == "-" else Path(source).read_text()
    except OSError as exc:
        raise CertCommandError(options.os_problem(source, exc)) from exc
    try:
        # safe_load: a manifest is data; no YAML tag may construct an object.
        return [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as exc:
        raise CertCommandError(f"{source} is not valid YAML: {' '.join(str(exc).split())}") from exc


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
