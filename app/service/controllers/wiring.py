"""`serve`'s stale-pod reconciler, wired: the Pod informer, the Lease election and the reconciler's
worker, with the handlers that feed its queue (docs/skill-changes.md). Imported only when
`--reconcile` is not off."""

from __future__ import annotations

import logging
import socket
import uuid
from typing import Any

import kubernetes.client

from app.core.staleness.pods import StalenessOptions
from app.sources.kube.agentruntimes import make_api_client
from app.sources.kube.leader import LeaderElector, LeaseLock
from app.sources.kube.pods import PodInformer
from app.sources.kube.reflector import InformerMetrics

from app.service.metrics import WebhookMetrics
from app.service.controllers.reconciler import Reconciler, ReconcilerConfig

log = logging.getLogger("skill_webhook.reconciler")

SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
DEFAULT_LEASE_NAMESPACE = "skill-webhook"


class ReconcilerService:
    """The Pod informer, the leader election and the reconciler, started and stopped together."""

    def __init__(self, informer: Any, elector: Any, reconciler: Reconciler) -> None:
        self.informer = informer
        self.elector = elector
        self.reconciler = reconciler

    def start(self) -> None:
        self.informer.start()
        self.elector.start()
        self.reconciler.start()

    def stop(self) -> None:
        # The reconciler first, so that nothing is evicted after the Lease is released.
        self.reconciler.stop()
        self.elector.stop()
        self.informer.stop()


def lease_namespace(settings: Any) -> str:
    """--leader-election-namespace, else the pod's own namespace, else skill-webhook."""
    if settings.leader_election_namespace:
        return settings.leader_election_namespace
    try:
        with open(SERVICE_ACCOUNT_NAMESPACE, encoding="utf-8") as handle:
            return handle.read().strip() or DEFAULT_LEASE_NAMESPACE
    except OSError:
        return DEFAULT_LEASE_NAMESPACE


def replica_identity(settings: Any) -> str:
    """--leader-election-identity, else hostname_<random>, as client-go does: two processes on one host
    (or a restarted pod with the old one still terminating) must never share an identity."""
    return settings.leader_election_identity or f"{socket.gethostname()}_{uuid.uuid4().hex[:12]}"


def build_reconciler(settings: Any, state: Any) -> ReconcilerService | None:
    """The reconciler of `serve`, or None with `--reconcile off`. Has its own ApiClient (connection
    pool), so that its calls never queue behind the informers' watches."""
    mode = settings.resolved_reconcile()
    if mode == "off":
        return None
    if settings.resolved_source() != "kube":
        raise ValueError(f"--reconcile {mode} needs the Kubernetes source (there are no pods to watch in files)")
    api_client = make_api_client(settings.kubeconfig)
    metrics: WebhookMetrics = state.metrics
    domain = settings.names
    identity = replica_identity(settings)
    informer = PodInformer(
        api_client, domain,
        metrics=InformerMetrics(on_restart=lambda reason: metrics.pod_watch_restarts.labels(reason).inc()),
    )
    metrics.leader.set(0)

    def started() -> None:
        metrics.leader.set(1)
        reconciler.resync()  # a new leader reports and rolls what it sees
        log.info("reconciler leading as %s: %s", identity,
                 "writing Events and rolling opted-in workloads" if mode == "evict" else "writing Events")

    def stopped() -> None:
        metrics.leader.set(0)

    def new_leader(holder: str) -> None:
        metrics.leader_changes.inc()
        log.info("reconciler leader is %s", holder, extra={"fields": {"leader": holder, "self": identity}})

    lock = LeaseLock(api_client, lease_namespace(settings), settings.leader_election_lease_name, identity)
    elector = LeaderElector(
        lock, lease_duration=settings.lease_duration, renew_deadline=settings.renew_deadline,
        retry_period=settings.retry_period, on_started_leading=started, on_stopped_leading=stopped,
        on_new_leader=new_leader,
    )
    reconciler = Reconciler(
        ReconcilerConfig(mode=mode, domain=domain, event_interval=settings.event_interval,
                         rollout_timeout=settings.rollout_timeout, identity=identity),
        state.index,
        informer.store,
        core_api=kubernetes.client.CoreV1Api(api_client),
        metrics=metrics,
        # Read at each sync: the pods are judged as the mutation injects them now (domain, image
        # volumes, digest pinning), one definition of both.
        staleness=lambda: StalenessOptions.from_mutation(state.mutation),
        is_leader=lambda: elector.is_leader,
    )
    informer.add_listener(reconciler.pod_changed)
    state.index.add_listener(reconciler.runtime_changed)
    log.info("reconciler %s: Lease %s as %s", mode, lock.describe(), identity,
             extra={"fields": {"mode": mode, "lease": lock.describe(), "identity": identity}})
    return ReconcilerService(informer, elector, reconciler)
