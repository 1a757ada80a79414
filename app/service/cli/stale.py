"""`skill-webhook stale`: the running pods whose injected skills differ from their AgentRuntime's now.

For admins who roll by hand (README "When skills change"). Lists the AgentRuntimes and the agent pods
once (no watch), judges every pod with the same function the reconciler uses, and prints what differs
(`blog-writer: ghcr.io/a:v1 -> ghcr.io/a:v2`) as a table or JSON, with the command that rolls each
workload. Exit 0 whatever it finds; 1 when the cluster cannot be read.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Iterator

from app.core.decode import cached_runtime
from app.core.matching.index import AgentRuntimeIndex
from app.core.model import DEFAULT_AGENTRUNTIME_API
from app.core.names import DEFAULT_DOMAIN_PREFIX, Domain, check_domain
from app.core.staleness.rollout import roll_hint  # the same hint the reconciler's Events give
from app.core.staleness.pods import StalenessOptions, pod_staleness
from app.core.validation import ValidationOptions

PAGE = 500


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "stale",
        help="list running pods whose injected skills differ from their AgentRuntime's now",
        description=(
            "Reads AgentRuntimes and agent pods from the cluster once and lists the pods whose injected "
            "skills differ from what the webhook would inject now, with what differs and how to roll them."
        ),
    )
    parser.add_argument("-n", "--namespace", default="", help="only this namespace (default: all)")
    parser.add_argument(
        "--kubeconfig", type=Path, default=_env_path("SKILL_WEBHOOK_KUBECONFIG"),
        help="kubeconfig (default: $KUBECONFIG or ~/.kube/config, in a pod its service account)",
    )
    parser.add_argument(
        "--agentruntime-api", default=os.environ.get("SKILL_WEBHOOK_AGENTRUNTIME_API", DEFAULT_AGENTRUNTIME_API),
        help="group/version of AgentRuntime (env SKILL_WEBHOOK_AGENTRUNTIME_API; default %(default)s)",
    )
    parser.add_argument(
        "--domain", default=os.environ.get("SKILL_WEBHOOK_DOMAIN", DEFAULT_DOMAIN_PREFIX),
        help="prefix of the labels and annotations (env SKILL_WEBHOOK_DOMAIN; default %(default)s)",
    )
    parser.add_argument(
        "--registry-allow", default=os.environ.get("SKILL_WEBHOOK_REGISTRY_ALLOW", ""),
        help="the webhook's registry allow-list, so AgentRuntimes it would refuse are shown as such",
    )
    parser.add_argument("-o", "--output", choices=("table", "json"), default="table", help="output format")
    parser.set_defaults(handler=run)
    return parser


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


def run(args: argparse.Namespace) -> int:
    try:
        domain = Domain(check_domain(args.domain))
        group, version = _group_version(args.agentruntime_api)
    except ValueError as err:
        print(f"skill-webhook stale: {err}", file=sys.stderr)
        return 2
    try:
        api_client = _api_client(args.kubeconfig)
        runtimes = list(_agentruntimes(api_client, group, version, args.namespace))
        pods = list(_pods(api_client, domain, args.namespace))
    except Exception as err:  # noqa: BLE001 - config errors, API errors and connection errors alike
        print(f"skill-webhook stale: cannot read the cluster: {_describe(err)}", file=sys.stderr)
        return 1
    options = ValidationOptions(
        registry_allow=tuple(r.strip() for r in args.registry_allow.split(",") if r.strip()),
        agentruntime_api=args.agentruntime_api, domain=domain,
    )
    index = AgentRuntimeIndex()
    index.replace_all(r for r in (cached_runtime(o, options) for o in runtimes) if r is not None)
    index.synced.set()
    judge = StalenessOptions(domain=domain, trust_recorded_digests=True)
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


def _group_version(api: str) -> tuple[str, str]:
    group, sep, version = api.partition("/")
    if not sep or not group or not version or "/" in version:
        raise ValueError(f'--agentruntime-api "{api}" must be "<group>/<version>"')
    return group, version


def _api_client(kubeconfig: Path | None) -> Any:
    import kubernetes.config

    from app.sources.kube.agentruntimes import make_api_client

    if kubeconfig is not None or os.path.exists("/var/run/secrets/kubernetes.io/serviceaccount/token"):
        return make_api_client(kubeconfig)
    return kubernetes.config.new_client_from_config(persist_config=False)


def _agentruntimes(api_client: Any, group: str, version: str, namespace: str) -> Iterator[dict[str, Any]]:
    import kubernetes.client

    api = kubernetes.client.CustomObjectsApi(api_client)
    token = None
    while True:
        common = dict(limit=PAGE, _continue=token, _request_timeout=(10, 60))
        page = (api.list_namespaced_custom_object(group, version, namespace, "agentruntimes", **common)
                if namespace else api.list_cluster_custom_object(group, version, "agentruntimes", **common))
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
        response = (api.list_namespaced_pod(namespace, **common) if namespace
                    else api.list_pod_for_all_namespaces(**common))
        page = json.loads(response.data)
        yield from page.get("items") or []
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            return


def _describe(err: Exception) -> str:
    from app.sources.kube.reflector import describe

    return describe(err)
