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
from typing import Any

from app.core.matching.index import AgentRuntimeIndex
from app.core.model import AGENTRUNTIME_KIND, api_group
from app.core.mutation.puller import DEFAULT_PULLER_IMAGE, PullerConfig
from app.core.mutation.review import MutationOptions, mutate_pod
from app.core.names import Domain
from app.core.parsing.documents import DocumentError, load_documents, open_lists
from app.core.validation.agentruntime import ValidationOptions
from app.sources.files.source import FileSource, RuntimesFileError, document_files

from app.service.cli import options
from app.service.cli.options import split_list

COMMAND = "mutate"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        COMMAND,
        description="Reads a Pod (YAML/JSON, '-' for stdin) and AgentRuntimes (file or directory) and prints "
        "the JSON patch /mutate would answer, or the patched Pod. Exit 1 with the reason on a denial.",
    )
    parser.add_argument("--pod", required=True, help="Pod manifest (YAML or JSON), '-' for stdin")
    parser.add_argument("--runtimes", required=True, type=Path, help="AgentRuntime file or directory")
    parser.add_argument("--output", choices=("patch", "pod"), default="patch", help="what to print (default: patch)")
    parser.add_argument("--namespace", default="", help="namespace of the pod (default: its metadata.namespace)")
    parser.add_argument("--image-volumes", choices=("on", "off"), default="on", help="as the cluster would decide")
    parser.add_argument(
        "--delivery", choices=("auto", "image", "extract"), default="auto",
        help="how skills reach the pod: image volumes, extraction by an init container, or auto (as serve decides; "
        "offline, no image is known to be an artifact) (default: auto)",
    )
    parser.add_argument("--puller-image", default=DEFAULT_PULLER_IMAGE,
                        help="image of the puller init container (default: %(default)s)")
    options.add(parser, "sidecar_names", "agentruntime_api", "domain", "registry_allow")
    parser.set_defaults(handler=run)


@options.checked(COMMAND)
def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except BrokenPipeError:
        # The reader went away (`| head`): nothing left to say. Point stdout at /dev/null so that the
        # interpreter's final flush does not fail (and print a traceback) again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _run(args: argparse.Namespace) -> int:
    pod = _read_pod(args.pod)
    if isinstance(pod, str):
        print(pod, file=sys.stderr)
        return 1
    if not args.runtimes.exists():
        print(f"--runtimes {args.runtimes}: no such file", file=sys.stderr)
        return 1
    domain = Domain(args.domain)
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
    mutation = MutationOptions(
        frozenset(split_list(args.sidecar_names)),
        image_volumes=args.image_volumes == "on",
        image_volumes_reason="--image-volumes off",
        domain=domain,
        delivery=args.delivery,
        puller=PullerConfig(image=args.puller_image),
    )
    metadata = pod.get("metadata") if isinstance(pod.get("metadata"), dict) else {}
    decision = mutate_pod(pod, args.namespace or str(metadata.get("namespace") or "default"), index, mutation)
    if decision.outcome == "no-match":
        # Nothing matched: if the runtimes are of another API group (rossoctl's), that is why.
        for api_version, count in _other_groups(args.runtimes, args.agentruntime_api).items():
            print(f"{args.runtimes}: {count} AgentRuntime(s) of {api_version} skipped: not of "
                  f"{args.agentruntime_api}; to read them, pass {options.agentruntime_api_hint(api_version)}",
                  file=sys.stderr)
    for warning in decision.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if not decision.allowed:
        print(f"denied ({decision.code}): {decision.message}", file=sys.stderr)
        return 1
    patch = decision.patch or []
    if args.output == "patch":
        print(json.dumps(patch, indent=2))
    else:
        import jsonpatch
        import yaml

        patched = jsonpatch.apply_patch(pod, patch)
        print(yaml.safe_dump(patched, sort_keys=False), end="")
    sys.stdout.flush()  # a closed pipe shows here, inside the handler above, not at exit
    return 0


def _read_pod(source: str) -> dict[str, Any] | str:
    """The one Pod of `source` ('-': stdin), or the line that says why there is none."""
    label = "<stdin>" if source == "-" else source
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
        documents = load_documents(text)
    except OSError as err:
        return options.os_problem(label, err)
    except UnicodeDecodeError:
        return f"{label}: not valid UTF-8"
    except DocumentError as err:
        where = f"{label}:{err.line}:{err.column}" if err.line is not None else label
        return f"{where}: {err.message}"
    documents = [d for _, d in open_lists(("", d) for d in documents)]
    pods = [d for d in documents if isinstance(d, dict) and d.get("kind", "Pod") == "Pod"]
    if len(pods) > 1:
        return f"{label}: found {len(pods)} Pods, expected exactly one"
    if not pods:
        found = ", ".join(_kind(d) for d in documents) or "no document"
        return f"{label}: found {found}, expected a Pod"
    pod = pods[0]
    spec = pod.get("spec")
    if not isinstance(spec, dict):
        return f"{label}: the Pod has no spec (spec.containers is what the webhook changes)"
    if not isinstance(spec.get("containers"), list) or not spec["containers"]:
        return f"{label}: the Pod has no spec.containers"
    return pod


def _kind(document: Any) -> str:
    kind = document.get("kind") if isinstance(document, dict) else None
    if not isinstance(kind, str) or not kind:
        return "a document without kind"
    return f"{'an' if kind[0] in 'AEIOU' else 'a'} {kind}"


def _other_groups(path: Path, configured: str) -> dict[str, int]:
    """apiVersion -> how many AgentRuntimes of another API group than `configured` the runtimes hold."""
    found: dict[str, int] = {}
    for file in document_files(path):
        try:
            documents = load_documents(file.read_bytes())
        except (OSError, DocumentError):
            continue  # already read once without error; a file changed since is not this hint's business
        for _, document in open_lists(("", d) for d in documents):
            if not isinstance(document, dict) or document.get("kind") != AGENTRUNTIME_KIND:
                continue
            api_version = document.get("apiVersion")
            if isinstance(api_version, str) and "/" in api_version and api_group(api_version) != api_group(configured):
                found[api_version] = found.get(api_version, 0) + 1
    return found
