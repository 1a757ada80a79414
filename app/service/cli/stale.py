"""`skill-webhook stale`: the running pods whose injected skills differ from their AgentRuntime's now.

For admins who roll by hand (docs/skill-changes.md). Lists the AgentRuntimes and the agent pods
once (no watch), judges every pod with the same function the reconciler uses, and prints what differs
(`blog-writer: ghcr.io/a:v1 -> ghcr.io/a:v2`) as a table or JSON, with the command that rolls each
workload. Exit 0 whatever it finds; 1 when the cluster cannot be read.

With `--pin-digests on` (as the webhook runs) a moved tag makes a pod stale too: the tags of the
skills of the AgentRuntimes listed are looked up in their registries (one lookup per reference, a
few at a time) and pods are judged against those digests, as the webhook's reconciler judges them
against its resolver's. A tag that cannot be looked up is judged by the digest its pods recorded.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any, Iterator

from app.core.decode import cached_runtime
from app.core.matching.index import AgentRuntimeIndex
from app.core.mutation.review import MutationOptions
from app.core.mutation.image_policy import ImagePolicy
from app.core.names import Domain
from app.core.staleness.pods import StalenessOptions, pod_staleness
from app.core.staleness.rollout import roll_hint  # the same hint the reconciler's Events give
from app.core.validation.agentruntime import ValidationOptions

from app.service.cli import options
from app.service.cli.options import split_list

COMMAND = "stale"
PAGE = 500
SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
# Registry lookups in flight at once (the webhook's --resolve-concurrency default).
LOOKUPS_AT_ONCE = 8


class ClusterUnreadable(Exception):
    """The cluster cannot be read; `str()` is the one line that says why."""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        COMMAND,
        description=(
            "Reads AgentRuntimes and agent pods from the cluster once and lists the pods whose injected "
            "skills differ from what the webhook would inject now, with what differs and how to roll them. "
            "Give it the webhook's settings (same flags and variables as serve) to judge as it does: with "
            "--pin-digests on, a moved tag makes pods stale too."
        ),
    )
    parser.add_argument("-n", "--namespace", default="", help="only this namespace (default: all)")
    options.add(
        parser, "kubeconfig", "agentruntime_api", "domain", "registry_allow", "pin_digests", "registry_auth",
        "registry_ca", "insecure_registries", "resolve_timeout",
        help={
            "kubeconfig": "kubeconfig (else $KUBECONFIG or ~/.kube/config; in a pod its service account)",
            "registry_allow": "the webhook's registry allow-list, so AgentRuntimes it would refuse are shown as such",
            "pin_digests": "as the webhook runs: on or required also look tags up, so a moved tag makes pods stale",
        },
    )
    parser.add_argument("-o", "--output", choices=("table", "json"), default="table", help="output format")
    parser.set_defaults(handler=run)
    return parser


@options.checked(COMMAND)
def run(args: argparse.Namespace) -> int:
    domain = Domain(args.domain)
    group, version = args.agentruntime_api.split("/")
    problem = options.registry_files_problem(args.registry_auth, args.registry_ca)
    if problem is not None:
        options.fail(COMMAND, problem)
        return 1
    try:
        api_client = _api_client(args.kubeconfig)
        runtimes = list(_agentruntimes(api_client, group, version, args.namespace))
        pods = list(_pods(api_client, domain, args.namespace))
    except ClusterUnreadable as err:
        options.fail(COMMAND, err)
        return 1
    validation = ValidationOptions(
        registry_allow=split_list(args.registry_allow), agentruntime_api=args.agentruntime_api, domain=domain,
    )
    index = AgentRuntimeIndex()
    index.replace_all(r for r in (cached_runtime(o, validation) for o in runtimes) if r is not None)
    index.synced.set()
    judge = _judge(args, index, domain)
    rows = []
    for pod in pods:
        verdict = pod_staleness(pod, index, judge)
        if verdict.stale and not (pod.get("metadata") or {}).get("deletionTimestamp"):
            rows.append(_row(verdict))
    rows.sort(key=lambda r: (r["namespace"], r["agentRuntime"], r["pod"]))
    if args.output == "json":
        print(json.dumps({"checked": len(pods), "stale": rows}, indent=2))
    else:
        _table(rows, len(pods))
    return 0


def _judge(args: argparse.Namespace, index: AgentRuntimeIndex, domain: Domain) -> StalenessOptions:
    """How the webhook judges pods: with digest pinning, against what the registries say now."""
    if args.pin_digests == "off":
        # No registry is asked: a recorded `<image>@<digest>` is taken as the current injection.
        return StalenessOptions(domain=domain, trust_recorded_digests=True)
    references = sorted({s.image for r in index.all() for s in r.spec.skills if "@" not in s.image})
    facts = {f.reference: f for f in asyncio.run(_look_up(references, args))}
    for reference in references:
        if facts[reference].error or not facts[reference].digest:
            print(f"{reference}: not looked up ({facts[reference].error or 'no digest'}): its pods are judged "
                  "by the digest they recorded", file=sys.stderr)
    policy = ImagePolicy(lambda image: facts.get(image), args.pin_digests)
    # The reconciler's own options (StalenessOptions.from_mutation); a tag that could not be looked up
    # (no digest) is judged by the pods' records rather than taken as moved.
    return dataclasses.replace(
        StalenessOptions.from_mutation(MutationOptions(domain=domain, image_policy=policy)), trust_recorded_digests=True
    )


async def _look_up(references: list[str], args: argparse.Namespace) -> list[Any]:
    from app.sources.registry.client import RegistryClient
    from app.sources.registry.lookup import resolve_many

    client = RegistryClient(auth_file=args.registry_auth, ca_file=args.registry_ca,
                            insecure=split_list(args.insecure_registries), timeout=args.resolve_timeout)
    try:
        return await resolve_many(client, references, concurrency=LOOKUPS_AT_ONCE)
    finally:
        await client.aclose()


def _row(verdict: Any) -> dict[str, Any]:
    runtime = verdict.runtime
    return {
        "namespace": verdict.namespace,
        "pod": verdict.pod,
        "agentRuntime": verdict.agent_runtime,
        "reason": verdict.reason,
        "differences": list(verdict.differences),
        "roll": roll_hint(runtime) if runtime is not None and not verdict.problems else None,
    }


def _table(rows: list[dict[str, Any]], checked: int) -> None:
    if not rows:
        print(f"no stale pods ({checked} agent pod(s) checked)")
        return
    headers = ("NAMESPACE", "POD", "AGENTRUNTIME", "WHAT DIFFERS")
    widths = [max(len(headers[i]), *(len(str(r[k])) for r in rows)) for i, k in
              enumerate(("namespace", "pod", "agentRuntime"))]
    line = "  ".join(f"{{:<{w}}}" for w in widths) + "  {}"
    print(line.format(*headers))
    for row in rows:
        first, *rest = row["differences"] or [""]
        print(line.format(row["namespace"], row["pod"], row["agentRuntime"], first))
        for more in rest:
            print(line.format("", "", "", more))
    hints = sorted({r["roll"] for r in rows if r["roll"]})
    print(f"\n{len(rows)} stale pod(s) of {checked} checked. To roll them:")
    for hint in hints:
        print(f"  {hint}")


def _kubeconfig(given: Path | None) -> tuple[str, Path | None]:
    """Where the credentials come from: ("file", path) (None: kubernetes' own $KUBECONFIG handling)
    or ("in-cluster", None); ClusterUnreadable with the documented wording when there are none."""
    if given is not None:
        problem = options.missing_file("--kubeconfig", given)
        if problem is not None:
            raise ClusterUnreadable(problem)
        return "file", given
    listed = os.environ.get("KUBECONFIG", "")
    if listed:
        if not any(Path(p).expanduser().is_file() for p in listed.split(os.pathsep) if p):
            raise ClusterUnreadable(f"KUBECONFIG {listed}: no such file")
        return "file", None
    if SERVICE_ACCOUNT_TOKEN.exists():
        return "in-cluster", None
    default = Path("~/.kube/config").expanduser()
    if not default.is_file():
        raise ClusterUnreadable(f"no kubeconfig: {default}: no such file (pass --kubeconfig or set KUBECONFIG)")
    return "file", default


def _api_client(kubeconfig: Path | None) -> Any:
    import kubernetes.client
    import kubernetes.config

    kind, path = _kubeconfig(kubeconfig)
    configuration = kubernetes.client.Configuration()
    try:
        if kind == "in-cluster":
            kubernetes.config.load_incluster_config(client_configuration=configuration)
        else:
            kubernetes.config.load_kube_config(
                config_file=str(path) if path is not None else None, client_configuration=configuration,
                persist_config=False,  # refreshed credentials are not written back
            )
    except (kubernetes.config.ConfigException, OSError, ValueError) as err:
        where = path or os.environ.get("KUBECONFIG") or "the service account"
        raise ClusterUnreadable(f"kubeconfig {where}: not usable: {err}") from None
    # One attempt per request: this command reports once, it does not wait out an outage, and urllib3's
    # retries would only repeat the same refusal.
    configuration.retries = False
    return kubernetes.client.ApiClient(configuration)


def _agentruntimes(api_client: Any, group: str, version: str, namespace: str) -> Iterator[dict[str, Any]]:
    import kubernetes.client

    api = kubernetes.client.CustomObjectsApi(api_client)
    token = None
    while True:
        common = dict(limit=PAGE, _continue=token, _request_timeout=(10, 60))
        page = _ask(api_client, lambda: (
            api.list_namespaced_custom_object(group, version, namespace, "agentruntimes", **common)
            if namespace else api.list_cluster_custom_object(group, version, "agentruntimes", **common)))
        yield from page.get("items") or []
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            return


def _pods(api_client: Any, domain: Domain, namespace: str) -> Iterator[dict[str, Any]]:
    import kubernetes.client

    api = kubernetes.client.CoreV1Api(api_client)
    selector = f"{domain.type_label} in (agent,tool)"  # as the mutating webhook's objectSelector
    token = None
    while True:
        common = dict(label_selector=selector, limit=PAGE, _continue=token, _preload_content=False,
                      _request_timeout=(10, 60))
        response = _ask(api_client, lambda: (api.list_namespaced_pod(namespace, **common) if namespace
                                             else api.list_pod_for_all_namespaces(**common)))
        page = json.loads(response.data)
        yield from page.get("items") or []
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            return


def _ask(api_client: Any, call: Any) -> Any:
    """`call()`, with any failure to reach or be answered by the API server as one clear line."""
    try:
        return call()
    except Exception as err:  # noqa: BLE001 - API errors, connection errors and TLS errors alike
        server = api_client.configuration.host
        raise ClusterUnreadable(f"cannot read the cluster at {server}: {options.network_problem(err)}") from None
