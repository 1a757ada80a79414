"""`skill-webhook manifests`: print (or write) the install manifests, as `linkerd install` does.

Prints the install set as one YAML stream, in the order to apply it (webhook configurations last).
`--crd` prints only the AgentRuntime CRD and `--cert-manager` only the cert-manager objects: each is
its own step (docs/installing.md). `-o DIR` writes the same set as files into DIR, with a
kustomization.yaml; for the install set also reconciler/ and reconciler-evict/ (the reconciler's
RBAC, listed by DIR/kustomization.yaml only when --reconcile asks for it). Other files in DIR are
left alone.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from app.service.cli import options
from app.service.install.certs import DEFAULT_NAMESPACE
from app.service.install.manifests import (
    DEFAULT_IMAGE,
    RECONCILE_MODES,
    InstallOptions,
    ManifestOptionError,
    Selection,
    layout,
    printed,
)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "manifests",
        description=(
            "Print the install set (namespace, service account, read-only RBAC, Deployment, "
            "PodDisruptionBudget, Service, webhook configurations) as YAML, in the order to apply it. "
            "Register the webhook configurations only after the serving Secret exists and the "
            "Deployment is ready, with caBundle filled in by `skill-webhook ca-bundle`."
        ),
    )
    options.add(parser, "domain", "agentruntime_api", help={
        "domain": "label/annotation prefix for the webhook selectors and the server (rossoctl.io for rossoctl)",
        "agentruntime_api": "group/version of AgentRuntime: RBAC, validating webhook, server, CRD "
        "(agent.rossoctl.dev/v1alpha1 for rossoctl)",
    })
    parser.add_argument("--namespace", default=DEFAULT_NAMESPACE, help="namespace of the webhook (default: %(default)s)")
    parser.add_argument("--image", default=DEFAULT_IMAGE, help="webhook image (default: %(default)s)")
    parser.add_argument(
        "--reconcile", choices=RECONCILE_MODES, default="off",
        help="stale-pod reconciler mode of the Deployment; report and evict add their RBAC (default: %(default)s)",
    )
    selection = parser.add_mutually_exclusive_group()
    selection.add_argument(
        "--crd", action="store_true",
        help="print only the AgentRuntime CRD, for clusters that have none (never over the operator's)",
    )
    selection.add_argument(
        "--cert-manager", action="store_true",
        help="print only the cert-manager Issuers and Certificates of the serving Secret",
    )
    parser.add_argument("-o", "--output-dir", type=Path, metavar="DIR", help="write the files into DIR instead")
    parser.set_defaults(handler=run)
    return parser


@options.checked("manifests")
def run(args: argparse.Namespace) -> int:
    try:
        install = InstallOptions(
            domain=args.domain,
            agentruntime_api=args.agentruntime_api,
            namespace=args.namespace,
            image=args.image,
            reconcile=args.reconcile,
        )
    except ManifestOptionError as exc:
        print(f"skill-webhook manifests: {exc}", file=sys.stderr)
        return 2
    selection: Selection = "crd" if args.crd else "cert-manager" if args.cert_manager else "install"
    if args.output_dir is None:
        sys.stdout.write(printed(install, selection))
        return 0
    try:
        for relative, text in layout(install, selection).items():
            path = args.output_dir / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}", file=sys.stderr)
    except OSError as exc:
        print(f"skill-webhook manifests: cannot write {args.output_dir}: {exc}", file=sys.stderr)
        return 1
    return 0
