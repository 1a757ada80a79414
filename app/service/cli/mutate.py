"""`skill-webhook mutate`: offline preview of what /mutate would do to a pod.

A one-shot preview has no last good content to fall back on, so a runtimes file that does not parse
is an error (`FILE:LINE:COLUMN: problem`, exit 1), where `serve` would log it and keep going. Output
cut short by its reader (`| head`) ends the command quietly.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import jsonpatch
import yaml

from app.core.parsing.documents import DocumentError, load_documents
from app.core.matching.index import AgentRuntimeIndex
from app.core.model import DEFAULT_AGENTRUNTIME_API, DEFAULT_SIDECAR_NAMES
from app.core.mutation.puller import DEFAULT_PULLER_IMAGE, PullerConfig
from app.core.mutation.review import MutationOptions, mutate_pod
from app.core.names import DEFAULT_DOMAIN_PREFIX, Domain
from app.core.validation import ValidationOptions
from app.sources.files.source import FileSource, RuntimesFileError

from app.service.settings import split_list


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "mutate",
        help="preview what the mutating webhook would do to a Pod (offline)",
        description="Reads a Pod (YAML/JSON, '-' for stdin) and AgentRuntimes (file or directory) and prints "
        "the JSON patch /mutate would answer, or the patched Pod. Exit 1 with the reason on a denial.",
    )
    parser.add_argument("--pod", required=True, help="Pod manifest (YAML or JSON), '-' for stdin")
    parser.add_argument("--runtimes", required=True, type=Path, help="AgentRuntime file or directory")
    parser.add_argument("--output", choices=("patch", "pod"), default="patch", help="what to print (default: patch)")
    parser.add_argument("--namespace", default="", help="namespace of the pod (default: its metadata.namespace)")
    parser.add_argument("--sidecar-names", default=",".join(DEFAULT_SIDECAR_NAMES), help="never the agent container")
    parser.add_argument("--image-volumes", choices=("on", "off"), default="on", help="as the cluster would decide")
    parser.add_argument(
        "--delivery", choices=("auto", "image", "extract"), default="auto",
        help="how skills reach the pod: image volumes, extraction by an init container, or auto (as serve decides; "
        "offline, no image is known to be an artifact) (default: auto)",
    )
    parser.add_argument("--puller-image", default=DEFAULT_PULLER_IMAGE,
                        help="image of the puller init container (default: %(default)s)")
    parser.add_argument("--agentruntime-api", default=DEFAULT_AGENTRUNTIME_API, help="AgentRuntime group/version")
    parser.add_argument("--domain", default=DEFAULT_DOMAIN_PREFIX, help="prefix of the labels and annotations")
    parser.add_argument("--registry-allow", default="", help="comma-separated registry/prefix allow-list")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except BrokenPipeError:
        # The reader went away (`| head`): nothing left to say. Point stdout at /dev/null so that the
        # interpreter's final flush does not fail (and print a traceback) again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _run(args: argparse.Namespace) -> int:
    try:
        text = sys.stdin.read() if args.pod == "-" else Path(args.pod).read_text(encoding="utf-8")
        documents = load_documents(text)
    except (OSError, UnicodeDecodeError, DocumentError) as err:
        print(f"{args.pod}: {err}", file=sys.stderr)
        return 1
    pods = [d for d in documents if isinstance(d, dict) and d.get("kind", "Pod") == "Pod"]
    if len(pods) != 1:
        print(f"{args.pod}: expected exactly one Pod, found {len(pods)}", file=sys.stderr)
        return 1
    pod = pods[0]
    if not args.runtimes.exists():
        print(f"{args.runtimes}: no such file or directory", file=sys.stderr)
        return 1
    try:
        domain = Domain(args.domain)
    except ValueError as err:
        print(f"--domain: {err}", file=sys.stderr)
        return 2
    index = AgentRuntimeIndex()
    validation = ValidationOptions(
        registry_allow=split_list(args.registry_allow), agentruntime_api=args.agentruntime_api, domain=domain
    )
    try:
        FileSource(index, args.runtimes, options=validation).reload(strict=True)
    except RuntimesFileError as err:
        print(err, file=sys.stderr)
        return 1
    index.synced.set()
    options = MutationOptions(
        frozenset(split_list(args.sidecar_names)),
        image_volumes=args.image_volumes == "on",
        image_volumes_reason="--image-volumes off",
        domain=domain,
        delivery=args.delivery,
        puller=PullerConfig(image=args.puller_image),
    )
    metadata = pod.get("metadata") if isinstance(pod.get("metadata"), dict) else {}
    decision = mutate_pod(pod, args.namespace or str(metadata.get("namespace") or "default"), index, options)
    for warning in decision.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if not decision.allowed:
        print(f"denied ({decision.code}): {decision.message}", file=sys.stderr)
        return 1
    patch = decision.patch or []
    if args.output == "patch":
        print(json.dumps(patch, indent=2))
    else:
        patched = jsonpatch.apply_patch(pod, patch)
        print(yaml.safe_dump(patched, sort_keys=False), end="")
    sys.stdout.flush()  # a closed pipe shows here, inside the handler above, not at exit
    return 0
