"""`skill-webhook pull`: fetch skill images, verify every digest, unpack them safely (docs/delivery.md).

Two forms, one code path (app.sources.registry.pull):
- by hand: `pull IMAGE --into DIR [--path P]` unpacks beside DIR and renames into place when whole;
- the puller init container the mutation adds: `pull --skill NAME=REF [--skill-path NAME=PATH]...
  --skills-root ROOT` fills each mounted `ROOT/NAME` volume, emptied first and again on failure.

One JSON line per skill on stdout; on failure one line `skill-webhook pull: [skill NAME: ]REASON` on
stderr and exit 1 (2 for a usage mistake). It imports only what pulling needs, so that an init
container starts in a few tenths of a second.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

COMMAND = "pull"
PROG = f"skill-webhook {COMMAND}"
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_FILES = 10_000
DEFAULT_TIMEOUT = 30.0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        COMMAND,
        description=(
            "Fetch skill images, verify every digest and unpack them safely: by hand "
            "(IMAGE --into DIR [--path P]) or as the puller init container "
            "(--skill NAME=REF [--skill-path NAME=PATH]... --skills-root ROOT)."
        ),
    )
    parser.add_argument("image", nargs="?", metavar="IMAGE", help="image reference to unpack by hand (with --into)")
    parser.add_argument("--into", type=Path, metavar="DIR",
                        help="by hand: the directory to create (must not exist, or be empty)")
    parser.add_argument("--path", default="", metavar="P", help="by hand: check that P/SKILL.md exists in the image")
    parser.add_argument("--skill", action="append", default=[], metavar="NAME=REF",
                        help="a skill to fetch into ROOT/NAME (repeatable)")
    parser.add_argument("--skill-path", action="append", default=[], metavar="NAME=PATH",
                        help="the directory of skill NAME inside its image: PATH/SKILL.md must exist (repeatable)")
    parser.add_argument("--skills-root", type=Path, metavar="ROOT", help="where the skill volumes are mounted")
    parser.add_argument("--max-bytes", type=_positive, default=DEFAULT_MAX_BYTES, metavar="N",
                        help=f"most bytes of file content per skill, unpacked (default {DEFAULT_MAX_BYTES})")
    parser.add_argument("--max-files", type=_positive, default=DEFAULT_MAX_FILES, metavar="N",
                        help=f"most entries per skill, over all layers (default {DEFAULT_MAX_FILES})")
    parser.add_argument("--insecure-registry", action="append", default=[], metavar="HOST",
                        help="a registry (host[:port]) spoken to over plain HTTP (repeatable)")
    parser.add_argument("--registry-ca", type=Path, metavar="FILE",
                        help="extra CA certificates (PEM) for registries; a missing file means the system roots")
    parser.add_argument("--registry-auth", action="append", default=[], type=Path, metavar="PATH",
                        help="a docker config.json, or a directory of mounted pull secrets (*/.dockerconfigjson, "
                        "*/.dockercfg); repeatable; missing means anonymous")
    parser.add_argument("--platform", type=_platform, metavar="linux/ARCH",
                        help="the index entry to unpack (default: this machine's, else the first entry)")
    parser.add_argument("--timeout", type=_positive_float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                        help=f"bound on each registry request and each wait for bytes (default {DEFAULT_TIMEOUT:g})")
    parser.set_defaults(handler=run)
    return parser


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be a positive integer")
    return value


def _platform(text: str) -> str:
    if not re.fullmatch(r"[a-z0-9_]+/[a-z0-9_]+(/[a-z0-9_]+)?", text):
        raise argparse.ArgumentTypeError("expected OS/ARCH, e.g. linux/arm64")
    return text


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be a positive number")
    return value


class UsageError(Exception):
    pass


def run(args: argparse.Namespace) -> int:
    try:
        jobs = _jobs(args)
    except UsageError as exc:
        _fail(str(exc))
        return 2
    import asyncio
    import os

    os.umask(0o022)  # what is unpacked is read by the agent, another user
    try:
        return asyncio.run(_pull_all(args, jobs))
    except KeyboardInterrupt:
        _fail("interrupted")
    except Exception as exc:  # a bug or an unforeseen system error: still one line, never a traceback
        _fail(f"unexpected {type(exc).__name__}: {exc}")
    return 1


def _jobs(args: argparse.Namespace) -> list[tuple[str, str, str]]:
    """(skill name, reference, path) to pull; by hand, the name is DIR's."""
    if args.image is not None or args.into is not None:
        if args.skill or args.skill_path or args.skills_root is not None:
            raise UsageError("give either IMAGE --into DIR, or --skill NAME=REF ... --skills-root ROOT, not both")
        if args.image is None or args.into is None:
            raise UsageError("by hand, give both IMAGE and --into DIR")
        return [(args.into.name, args.image, args.path)]
    if not args.skill or args.skills_root is None:
        raise UsageError("give IMAGE --into DIR, or --skill NAME=REF ... --skills-root ROOT")
    if args.path:
        raise UsageError("--path is for IMAGE --into DIR; use --skill-path NAME=PATH with --skill")
    references = dict(_pairs("--skill", args.skill))
    paths = dict(_pairs("--skill-path", args.skill_path))
    for name in paths:
        if name not in references:
            raise UsageError(f"--skill-path {name}=...: no --skill {name}=...")
    return [(name, reference, paths.get(name, "")) for name, reference in references.items()]


def _pairs(flag: str, values: list[str]) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not name or not rest:
            raise UsageError(f"{flag} {value!r}: expected NAME=VALUE")
        if "/" in name or name in (".", ".."):
            raise UsageError(f"{flag} {value!r}: {name!r} cannot name a directory under the skills root")
        if any(name == seen for seen, _ in pairs):
            raise UsageError(f"{flag} {name}=... given twice")
        pairs.append((name, rest))
    return pairs


async def _pull_all(args: argparse.Namespace, jobs: list[tuple[str, str, str]]) -> int:
    from app.sources.registry.client import RegistryClient, RegistryError, StaticAuth
    from app.sources.registry.pull import PullError, load_credentials, pull_by_hand, pull_into_volume
    from app.sources.registry.unpack import Limits, UnpackError

    limits = Limits(max_bytes=args.max_bytes, max_files=args.max_files)
    credentials = load_credentials(args.registry_auth, warn=_warn)
    ca_file = args.registry_ca if args.registry_ca is not None and args.registry_ca.is_file() else None
    client = RegistryClient(credentials=StaticAuth(credentials), ca_file=ca_file,
                            insecure=args.insecure_registry, timeout=args.timeout)
    try:
        for name, reference, path in jobs:
            try:
                if args.into is not None:
                    pulled = await pull_by_hand(client, reference, args.into, path=path, limits=limits,
                                                platform=args.platform)
                else:
                    pulled = await pull_into_volume(client, reference, args.skills_root / name, path=path,
                                                    limits=limits, platform=args.platform)
            except (PullError, UnpackError, RegistryError, OSError) as exc:
                _fail(f"skill {name}: {exc}")
                return 1
            except Exception as exc:  # a bug: still one line, never a traceback in the pod's status
                _fail(f"skill {name}: unexpected {type(exc).__name__}: {exc}")
                return 1
            line = {"msg": "skill pulled", "skill": name, "reference": reference, "digest": pulled.digest,
                    "bytes": pulled.bytes, "files": pulled.files, "seconds": pulled.seconds}
            print(json.dumps(line), flush=True)
    finally:
        await client.aclose()
    return 0


def _fail(reason: str) -> None:
    print(f"{PROG}: {' '.join(reason.split())}", file=sys.stderr, flush=True)


def _warn(reason: str) -> None:
    print(f"{PROG}: warning: {reason}", file=sys.stderr, flush=True)
