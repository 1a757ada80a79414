"""`skill-webhook inspect IMAGE...`: what the resolver would learn about skill images, for humans and CI.

Prints, per image, the digest, media types, whether image volumes can mount it, the skill metadata
from its annotations (skillimage and agentskills layouts) and the signature verdict (checked only
when --cosign-key is given). Exits 1 when an image cannot be resolved or is not mountable, or a
registry file (--registry-auth, --registry-ca) is missing or unusable; 2 on a usage problem (a bad
option value, an unusable key file). Registry settings read the same variables as `serve`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from app.service.cli import options
from app.service.cli.options import split_list

if TYPE_CHECKING:
    from app.core.registry_facts import ImageFacts

COMMAND = "inspect"
_ENV = options.ENV_PREFIX


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        COMMAND,
        description=(
            "Resolve skill images through the OCI distribution API, as the webhook's resolver does, and "
            "print digest, media types, whether image volumes can mount it, skill metadata and the "
            "signature verdict. Exits 1 when an image is missing or not mountable."
        ),
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image reference, e.g. ghcr.io/org/skill:v1")
    parser.add_argument("-o", "--output", choices=("table", "json"), default="table", help="output format (default: table)")
    options.add(parser, "registry_auth", "registry_ca", "insecure_registries", "resolve_timeout",
                resolve_timeout="--timeout")
    parser.add_argument(
        "--cosign-key", action="append", default=None, metavar="FILE",
        help=f"PEM public key to verify cosign signatures with (repeatable or comma-separated; env {_ENV}COSIGN_KEY); "
        "without one, signatures are not checked",
    )
    parser.set_defaults(handler=run)
    return parser


@options.checked(COMMAND)
def run(args: argparse.Namespace) -> int:
    from app.sources.registry.client import RegistryClient
    from app.sources.registry.cosign import CosignKeyError, load_keys
    from app.sources.registry.lookup import resolve_many

    problem = options.registry_files_problem(args.registry_auth, args.registry_ca)
    if problem is not None:
        options.fail(COMMAND, problem)
        return 1
    key_entries = args.cosign_key if args.cosign_key is not None else [os.environ.get(f"{_ENV}COSIGN_KEY", "")]
    key_paths = [Path(p) for entry in key_entries for p in split_list(entry)]
    try:
        keys = load_keys(key_paths)
    except CosignKeyError as exc:
        options.fail(COMMAND, exc)
        return 2

    async def resolve() -> list[ImageFacts]:
        client = RegistryClient(auth_file=args.registry_auth, ca_file=args.registry_ca,
                                insecure=split_list(args.insecure_registries), timeout=args.resolve_timeout)
        try:
            return await resolve_many(client, args.images, verify=bool(keys), keys=keys)
        finally:
            await client.aclose()

    results = asyncio.run(resolve())
    if args.output == "json":
        print(json.dumps([f.to_json() for f in results], indent=2))
    else:
        print_table(results, sys.stdout)
    return 1 if any(f.error or f.mountable is not True for f in results) else 0


def print_table(results: Sequence[ImageFacts], out: Any) -> None:
    header = ("IMAGE", "DIGEST", "MOUNTABLE", "SKILL", "VERSION", "STATUS", "SIGNATURE")
    rows = [header]
    for f in results:
        rows.append((
            f.reference, f.digest or "-", _yes_no(f.mountable), f.title or f.agentskills_name or "-",
            f.version or "-", f.status or "-", f.signature,
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip(), file=out)
    notes = []
    for f in results:
        if f.error:
            notes.append(f"{f.reference}: error: {f.error}")
        if f.media_type:
            notes.append(f"{f.reference}: media type {f.media_type}, config {f.config_media_type or '-'}")
        if f.mountable is False:
            notes.append(f"{f.reference}: not mountable: {f.mount_reason} (an image volume of it is an empty "
                         "directory; --delivery auto extracts it)")
        if f.agentskills_artifact:
            notes.append(f"{f.reference}: agentskills artifact: its skill is the directory {f.agentskills_name}/ "
                         "(the default path)")
        if f.bundle_skills is not None:
            notes.append(f"{f.reference}: bundle of {len(f.bundle_skills)} skill(s): "
                         f"{', '.join(f.bundle_skills) or 'none listed'} (choose one with path)")
        if f.deprecated:
            notes.append(f"{f.reference}: deprecated (io.skillimage.status)")
        if f.description:
            notes.append(f"{f.reference}: description: {f.description}")
        if f.signature_reason:
            notes.append(f"{f.reference}: signature {f.signature}: {f.signature_reason}")
    if notes:
        print(file=out)
        for line in notes:
            print(line, file=out)


def _yes_no(value: bool | None) -> str:
    return "unknown" if value is None else ("yes" if value else "no")
