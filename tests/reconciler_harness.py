"""A stand-in cluster for the reconciler and `skill-webhook stale` tests: the stand-in API server, the
real AgentRuntime and Pod informers on it, and an `on_pod_create` hook that runs the real mutation
against the informer's cache, so every pod (and every replacement made after an eviction) carries the
record the webhook would have written at that moment. Everything goes through the real kubernetes client.

`run(reconciler)` is what the worker would do once the caches caught up: every workload synced once (a
resync) and every key that is due; time is a FakeClock the test steps."""

from __future__ import annotations

import contextlib
import copy
import json
from typing import Any, Iterator

import kubernetes.client

from app.core.matching.index import AgentRuntimeIndex
from app.core.mutation.review import MutationOptions, mutate_pod
from app.core.names import DEFAULT_DOMAIN
from app.service.metrics import WebhookMetrics
from app.core.staleness.pods import Staleness
from app.service.controllers.reconciler import Reconciler, ReconcilerConfig
from app.sources.kube.agentruntimes import KubeInformerSource
from app.sources.kube.pods import PodInformer
from tests.apiserver_standin import StandInApiServer, agentruntime, pod
from tests.builders import apply_patch
from tests.fake_clock import FakeClock
from tests.informer_harness import api_client_for
from tests.polling import wait_until

NS = "team-a"
SELECTOR = f"{DEFAULT_DOMAIN.type_label} in (agent,tool)"
WORKLOAD_PLURALS = ("deployments", "statefulsets", "daemonsets", "replicasets", "jobs")
V1 = {"name": "blog-writer", "image": "ghcr.io/a/blog-writer:v1", "mountPath": "/skills/blog"}
V2 = {**V1, "image": "ghcr.io/a/blog-writer:v2"}
EVICT = {DEFAULT_DOMAIN.skills_rollout: "evict"}


class Harness:
    def __init__(self, server: StandInApiServer) -> None:
        self.server = server
        self.index = AgentRuntimeIndex()
        self.informer = KubeInformerSource(self.index, api_client=api_client_for(server), backoff_initial=0.05,
                                           backoff_max=0.5)
        self.api = api_client_for(server)
        self.pods = PodInformer(self.api, DEFAULT_DOMAIN, backoff_initial=0.05, backoff_max=0.5)
        self.core = kubernetes.client.CoreV1Api(self.api)
        self.metrics = WebhookMetrics()
        server.on_pod_create = self._mutate

    def _mutate(self, obj: dict[str, Any]) -> dict[str, Any]:
        namespace = obj["metadata"].get("namespace", "")
        decision = mutate_pod(copy.deepcopy(obj), namespace, self.index, MutationOptions())
        assert decision.allowed, decision.message
        return apply_patch(obj, decision)

    def listed_pods(self) -> list[dict[str, Any]]:
        response = self.core.list_pod_for_all_namespaces(label_selector=SELECTOR, _preload_content=False)
        return json.loads(response.data)["items"]

    def reconciler(self, mode: str = "report", *, clock: Any = None, is_leader: Any = lambda: True,
                   **config: Any) -> Reconciler:
        """A reconciler on this cluster's caches, its handlers on both informers, as serve wires it."""
        self.watch_pods()
        config.setdefault("retry_initial", 0.5)
        config.setdefault("retry_max", 2.0)
        reconciler = Reconciler(
            ReconcilerConfig(mode=mode, identity="test-replica", **config), self.index, self.pods.store,
            core_api=self.core, metrics=self.metrics, is_leader=is_leader,
            clock=clock if clock is not None else FakeClock(),
        )
        self.pods.add_listener(reconciler.pod_changed)
        self.index.add_listener(reconciler.runtime_changed)
        return reconciler

    def watch_pods(self) -> None:
        """Start the Pod informer (only tests of the reconciler: `--reconcile off` must list no pods)."""
        if self.pods.reflector.thread is None:
            self.pods.start()
            assert self.pods.synced.wait(5)

    def settle(self) -> None:
        """Wait until the Pod informer's cache holds what the server holds."""
        self.watch_pods()
        def cached() -> dict[tuple[str, str], str]:
            return {p.key: p.resource_version for p in self.pods.store.all()}

        def listed() -> dict[tuple[str, str], str]:
            return {(p["metadata"]["namespace"], p["metadata"]["name"]): p["metadata"]["resourceVersion"]
                    for p in self.listed_pods()}

        assert wait_until(lambda: cached() == listed()), "the Pod informer did not catch up"

    def run(self, reconciler: Reconciler) -> list[Staleness]:
        """Once the caches caught up: every workload, and every key due, synced; the stale verdicts."""
        self.settle()
        reconciler.resync()
        while len(reconciler.queue):
            reconciler.process_next()
        return list(reconciler.verdicts.stale())

    # -- the cluster ---------------------------------------------------------------------------------

    def runtime(self, name: str, target: str, skills: list[dict[str, Any]], *, kind: str = "Deployment",
                annotations: dict[str, str] | None = None) -> None:
        obj = agentruntime(name, NS, target=target, target_kind=kind, skills=skills,
                           target_api_version={"Pod": "v1", "Job": "batch/v1"}.get(kind, "apps/v1"))
        if annotations:
            obj["metadata"]["annotations"] = dict(annotations)
        current = self.server.get(NS, name)
        if current is None:
            self.server.create(obj)
        else:
            obj["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            self.server.update(obj)
        assert wait_until(lambda: (r := self.index.get(NS, name)) is not None
                          and [s.image for s in r.spec.skills] == [s["image"] for s in skills])

    def pods_of(self, replica_set: str, count: int, template_hash: str) -> None:
        for i in range(count):
            self.server.create_pod(pod(f"{replica_set}-p{i}", NS, owner=("ReplicaSet", replica_set),
                                       labels={"pod-template-hash": template_hash, DEFAULT_DOMAIN.type_label: "agent"}))

    def gauge(self, runtime: str, namespace: str = NS) -> float | None:
        return self.metrics.registry.get_sample_value(
            "skill_webhook_stale_pods", {"namespace": namespace, "agentruntime": runtime})

    def evictions(self, result: str) -> float:
        return self.metrics.registry.get_sample_value("skill_webhook_evictions_total", {"result": result}) or 0.0

    def events(self, reason: str) -> list[dict[str, Any]]:
        return [e for e in self.server.events() if e.get("reason") == reason]

    def assert_no_workload_writes(self) -> None:
        assert self.server.writes_to(*WORKLOAD_PLURALS) == []
        allowed = ("/events", "/eviction")
        assert [w.path for w in self.server.writes if not any(a in w.path for a in allowed)] == []


@contextlib.contextmanager
def standin_cluster(**server_options: Any) -> Iterator[Harness]:
    server_options.setdefault("replacement_ready_after", 0.3)
    server = StandInApiServer(**server_options).start()
    harness = Harness(server)
    harness.informer.start()
    try:
        assert harness.index.synced.wait(5)
        yield harness
    finally:
        harness.pods.stop()
        harness.informer.stop()
        server.close()
