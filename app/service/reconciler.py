"""The stale-pod reconciler of `serve --reconcile report|evict` (README "When skills change").

Pods get skills only when they are created; after an AgentRuntime changes, its running pods keep the old
set. This thread finds them (`app.core.staleness`), publishes `skill_webhook_stale_pods`, tells the
AgentRuntime's owners with one Kubernetes Event per `event_interval`, and, in evict mode and for
AgentRuntimes annotated `<domain>/skills-rollout: evict`, rolls the pods through the Eviction API, one
pod per workload at a time. It never writes a workload object: rewriting a Deployment's template is
what made GitOps tools report drift.

Cost: the thread wakes every `debounce` seconds, not per pod event, and re-judges only pods whose record
changed or whose namespace's AgentRuntimes changed (identity comparisons), in chunks between which it
yields the GIL, so a churn of 50 pod events/s among 10,000 pods costs the admission threads little.
Every `full_every` seconds it re-judges everything, which also picks up digests the resolver moved.
Events and evictions are the leader's alone; every replica keeps its gauge.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Literal, NamedTuple

from kubernetes.client.exceptions import ApiException

from app.core.index import AgentRuntimeIndex
from app.core.model import AgentRuntime, api_group
from app.core.names import DEFAULT_DOMAIN, Domain
from app.core.staleness import FingerprintMemo, Staleness, StalenessOptions, pod_staleness
from app.core.workload import controller_owner

from .metrics import WebhookMetrics

log = logging.getLogger("skill_webhook.reconciler")

COMPONENT = "skill-webhook"
REASON_CHANGED = "SkillsChanged"
REASON_BLOCKED = "RolloutBlocked"
ROLLOUT_EVICT = "evict"
# Controllers that bring an evicted pod back. A pod without one would be gone for good, a Job's pod
# would lose its batch work (and count against its backoff limit), a Sandbox pod holds one agent's state.
EVICTABLE_CONTROLLERS = frozenset({("apps", "ReplicaSet"), ("apps", "StatefulSet"), ("apps", "DaemonSet")})
# `kubectl rollout restart` works on these; the hint for the others is to delete the pods.
_RESTARTABLE = {"Deployment": "deployment", "StatefulSet": "statefulset", "DaemonSet": "daemonset"}

# skill_webhook_evictions_total{result}
EVICTED, BLOCKED, GONE, FAILED = "evicted", "blocked", "gone", "error"


@dataclass(frozen=True)
class ReconcilerConfig:
    mode: Literal["report", "evict"] = "report"
    domain: Domain = DEFAULT_DOMAIN
    event_interval: float = 600.0
    rollout_timeout: float = 300.0
    # Name of this replica in the Events it writes (reportingInstance).
    identity: str = ""
    debounce: float = 0.5
    full_every: float = 30.0
    chunk: int = 500
    # After a refused (429) or failed eviction the workload's rollout waits this long, doubling up to
    # retry_max: a disruption budget stays unhappy for a while, asking every second changes nothing.
    retry_initial: float = 10.0
    retry_max: float = 300.0


class PodFacts(NamedTuple):
    namespace: str
    name: str
    uid: str
    ready: bool
    deleting: bool
    controller: dict[str, Any] | None


def pod_facts(pod: Any) -> PodFacts:
    """What the reconciler reads of a pod: a pod dict, or a compact informer record (`as_pod()`, with
    `ready` and `deleting` attributes)."""
    obj = pod if isinstance(pod, dict) else pod.as_pod()
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    ready = getattr(pod, "ready", None)
    if ready is None:
        conditions = (obj.get("status") or {}).get("conditions") or []
        ready = any(isinstance(c, dict) and c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    deleting = getattr(pod, "deleting", None)
    if deleting is None:
        deleting = bool(metadata.get("deletionTimestamp"))
    owner = controller_owner(obj)
    return PodFacts(str(metadata.get("namespace") or ""), str(metadata.get("name") or ""),
                    str(metadata.get("uid") or ""), bool(ready), bool(deleting),
                    owner if owner is not None and owner.get("controller") is True else None)


def _pod_key(pod: Any) -> tuple[str, str, str]:
    """(namespace, name, uid) without building the pod dict of a compact record."""
    if isinstance(pod, dict):
        metadata = pod.get("metadata") if isinstance(pod.get("metadata"), dict) else {}
        return (str(metadata.get("namespace") or ""), str(metadata.get("name") or ""), str(metadata.get("uid") or ""))
    return (pod.namespace, pod.name, pod.uid)


def evictable(facts: PodFacts) -> bool:
    owner = facts.controller
    if owner is None:
        return False
    return (api_group(str(owner.get("apiVersion") or "")), owner.get("kind")) in EVICTABLE_CONTROLLERS


def roll_hint(runtime: AgentRuntime) -> str:
    """The command that rolls a workload by hand (kubectl writes the workload: that is the admin's call)."""
    namespace = runtime.metadata.namespace
    workload = runtime.workload
    if workload is not None and workload.kind in _RESTARTABLE:
        return f"kubectl rollout restart {_RESTARTABLE[workload.kind]}/{workload.name} -n {namespace}"
    return f"kubectl delete pod -n {namespace} <pod> (the pods of {workload.kind if workload else 'it'} are not restartable by kubectl rollout)"


@dataclass
class _Judged:
    pod: Any  # the object judged; the same object next time means the pod did not change
    facts: PodFacts
    verdict: Staleness


@dataclass
class _Rollout:
    """One workload's rolling eviction (keyed by its AgentRuntime: one AgentRuntime per workload)."""

    evicted_uid: str = ""
    evicted_name: str = ""
    evicted_at: float = 0.0
    # uids of the workload's pods when the last eviction was made: a pod not among them is a replacement.
    before: frozenset[str] = frozenset()
    waiting_since: float | None = None  # when the gate first found a pod of the workload terminating
    retry_at: float = 0.0
    failures: int = 0
    blocked: bool = False


@dataclass
class _Reported:
    last_event: float | None = None
    uids: frozenset[str] = frozenset()
    last_blocked_event: float | None = None


class Reconciler:
    """The loop; `run_once()` is one pass (tests call it directly), `start()` runs passes on a thread."""

    def __init__(
        self,
        config: ReconcilerConfig,
        index: AgentRuntimeIndex,
        pods: Callable[[], Iterable[Any]],
        *,
        pods_synced: Callable[[], bool],
        core_api: Any,
        metrics: WebhookMetrics,
        staleness: StalenessOptions | Callable[[], StalenessOptions] | None = None,
        is_leader: Callable[[], bool] = lambda: True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.index = index
        self._pods = pods
        self._pods_synced = pods_synced
        self._core = core_api
        self._metrics = metrics
        self._staleness = staleness if staleness is not None else StalenessOptions(domain=config.domain)
        self._is_leader = is_leader
        self._clock = clock
        self._judged: dict[tuple[str, str, str], _Judged] = {}
        self._runtimes: dict[tuple[str, str], AgentRuntime] = {}
        self._memo = FingerprintMemo()
        self._last_full = -float("inf")
        self._gauge: dict[tuple[str, str], int] = {}
        self._blocked_gauge: set[tuple[str, str]] = set()
        self._reported: dict[tuple[str, str], _Reported] = {}
        self._rollouts: dict[tuple[str, str], _Rollout] = {}
        self._was_leader = False
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="stale-pod-reconciler", daemon=True)
        self._thread.start()
        log.info("reconciler started", extra={"fields": {"mode": self.config.mode}})

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    def notify(self) -> None:
        """Something changed (a hook for informers): the next pass comes at the next debounce tick."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stopping.is_set():
            started = self._clock()
            try:
                if self._pods_synced() and self.index.synced.is_set():
                    self.run_once()
            except Exception:  # noqa: BLE001 - the thread must survive anything; the next pass retries
                log.exception("reconciler pass failed")
            # At most one pass per debounce period, however many pod events arrive.
            self._stopping.wait(max(0.0, self.config.debounce - (self._clock() - started)))
        log.info("reconciler stopped")

    # -- one pass ------------------------------------------------------------------------------------

    def run_once(self) -> list[Staleness]:
        """Judge the pods (incrementally), publish the gauge, and as leader write Events and evict.
        Returns the stale verdicts."""
        now = self._clock()
        options = self._staleness() if callable(self._staleness) else self._staleness
        changed = self._changed_namespaces()
        full = now - self._last_full >= self.config.full_every
        if full:
            self._last_full = now
            self._memo = FingerprintMemo()
        judged: dict[tuple[str, str, str], _Judged] = {}
        for count, pod in enumerate(list(self._pods()), start=1):
            key = _pod_key(pod)
            previous = None if full else self._judged.get(key)
            if previous is not None and previous.pod is pod and key[0] not in changed:
                judged[key] = previous
            else:
                judged[key] = _Judged(pod, pod_facts(pod), pod_staleness(pod, self.index, options, self._memo))
            if count % self.config.chunk == 0:
                time.sleep(0)  # let the admission threads have the GIL between chunks
        self._judged = judged
        stale = [j for j in judged.values() if j.verdict.stale and not j.facts.deleting]
        self._publish_gauge(stale)
        leader = self._is_leader()
        if leader != self._was_leader:
            # A new leader starts its rollouts from what it sees, not from a predecessor's memory.
            self._rollouts.clear()
            self._was_leader = leader
        if leader:
            self._report(stale, now)
            if self.config.mode == "evict":
                self._evict(judged, stale, now)
        return [j.verdict for j in stale]

    def _changed_namespaces(self) -> set[str]:
        current = {r.key: r for r in self.index.all()}
        previous, self._runtimes = self._runtimes, current
        changed = {key[0] for key, runtime in current.items() if previous.get(key) is not runtime}
        changed.update(key[0] for key in previous if key not in current)
        if changed:
            self._memo = FingerprintMemo()
        return changed

    # -- report --------------------------------------------------------------------------------------

    def _publish_gauge(self, stale: list[_Judged]) -> None:
        counts: dict[tuple[str, str], int] = {}
        for j in stale:
            label = (j.facts.namespace, j.verdict.agent_runtime)
            counts[label] = counts.get(label, 0) + 1
        gauge = self._metrics.stale_pods
        for label in self._gauge.keys() - counts.keys():
            try:
                gauge.remove(*label)
            except KeyError:
                pass
        for label, value in counts.items():
            if self._gauge.get(label) != value:
                gauge.labels(*label).set(value)
        self._gauge = counts

    def _report(self, stale: list[_Judged], now: float) -> None:
        by_runtime: dict[tuple[str, str], list[_Judged]] = {}
        for j in stale:
            runtime = j.verdict.runtime
            if runtime is not None:  # a deleted AgentRuntime has nothing to attach an Event to
                by_runtime.setdefault(runtime.key, []).append(j)
        for key in list(self._reported):
            if key not in by_runtime:
                self._reported[key].uids = frozenset()
        for key, pods in by_runtime.items():
            runtime = self._runtimes.get(key) or pods[0].verdict.runtime
            state = self._reported.setdefault(key, _Reported())
            uids = frozenset(j.facts.uid for j in pods)
            if uids <= state.uids:
                continue  # these pods were reported already
            if state.last_event is not None and now - state.last_event < self.config.event_interval:
                continue  # reported within the interval: the next Event waits
            if self._emit(runtime, REASON_CHANGED, "Normal", self._changed_message(runtime, pods)):
                state.last_event, state.uids = now, uids

    def _changed_message(self, runtime: AgentRuntime, pods: list[_Judged]) -> str:
        namespace = runtime.metadata.namespace
        sample = pods[0].verdict.differences[:3]
        return (
            f"{len(pods)} pod(s) run skills that differ from this AgentRuntime now ({'; '.join(sample)}). "
            f"List them: skill-webhook stale -n {namespace}; roll them: {roll_hint(runtime)}"
        )

    def _emit(self, runtime: AgentRuntime, reason: str, kind: str, message: str) -> bool:
        meta = runtime.metadata
        timestamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{meta.name}.{uuid.uuid4().hex[:16]}", "namespace": meta.namespace},
            "involvedObject": {"apiVersion": runtime.apiVersion, "kind": runtime.kind, "name": meta.name,
                               "namespace": meta.namespace, "uid": meta.uid,
                               **({"resourceVersion": meta.resourceVersion} if meta.resourceVersion else {})},
            "reason": reason,
            "message": message[:1024],
            "type": kind,
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": self.config.identity or COMPONENT,
            "firstTimestamp": timestamp,
            "lastTimestamp": timestamp,
            "count": 1,
        }
        try:
            self._core.create_namespaced_event(meta.namespace, body, _request_timeout=(5, 10))
        except Exception as err:  # noqa: BLE001 - an Event is best effort; the gauge says the same
            log.warning("cannot write Event %s on AgentRuntime %s/%s: %s", reason, meta.namespace, meta.name,
                        _describe(err))
            return False
        log.info("event %s on AgentRuntime %s/%s: %s", reason, meta.namespace, meta.name, message,
                 extra={"fields": {"reason": reason, "namespace": meta.namespace, "agentRuntime": meta.name}})
        return True

    # -- evict ---------------------------------------------------------------------------------------

    def _evict(self, judged: dict[tuple[str, str, str], _Judged], stale: list[_Judged], now: float) -> None:
        members: dict[tuple[str, str], list[_Judged]] = {}
        for j in judged.values():
            runtime = j.verdict.runtime
            if runtime is not None:
                members.setdefault(runtime.key, []).append(j)
        candidates: dict[tuple[str, str], list[_Judged]] = {}
        for j in stale:
            runtime = j.verdict.runtime
            if runtime is None or j.verdict.problems or not evictable(j.facts):
                continue  # reported only: nothing to roll to, or nothing would bring the pod back
            if runtime.annotation(self.config.domain.skills_rollout) != ROLLOUT_EVICT:
                continue
            candidates.setdefault(runtime.key, []).append(j)
        for key in list(self._rollouts):
            rollout = self._rollouts[key]
            if key in candidates or (rollout.evicted_uid and now - rollout.evicted_at < self.config.rollout_timeout):
                continue  # still rolling, or its last replacement may still be on its way
            self._set_blocked(key, False)
            del self._rollouts[key]
        for key, pods in candidates.items():
            rollout = self._rollouts.setdefault(key, _Rollout())
            if self._may_evict(rollout, members.get(key, []), now):
                self._evict_one(key, rollout, sorted(pods, key=lambda j: j.facts.name)[0], members.get(key, []), now)

    def _may_evict(self, rollout: _Rollout, members: list[_Judged], now: float) -> bool:
        if now < rollout.retry_at:
            return False
        timeout = self.config.rollout_timeout
        if rollout.evicted_uid:
            replaced = any(j.facts.uid not in rollout.before and j.facts.ready and not j.facts.deleting for j in members)
            if not replaced and now - rollout.evicted_at < timeout:
                return False
            if not replaced:
                log.warning("no Ready replacement for evicted pod %s within %.0fs; going on", rollout.evicted_name,
                            timeout)
            rollout.evicted_uid = ""
        # A pod of the workload still terminating (ours, or one a previous leader evicted) holds the next.
        if any(j.facts.deleting for j in members):
            if rollout.waiting_since is None:
                rollout.waiting_since = now
            if now - rollout.waiting_since < timeout:
                return False
        rollout.waiting_since = None
        return True

    def _evict_one(self, key: tuple[str, str], rollout: _Rollout, target: _Judged, members: list[_Judged], now: float) -> None:
        if not self._is_leader():
            return  # the Lease was lost during this pass
        facts = target.facts
        body = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": facts.name, "namespace": facts.namespace},
            # Only the pod that was judged: a StatefulSet's replacement has the same name.
            "deleteOptions": {"preconditions": {"uid": facts.uid}} if facts.uid else {},
        }
        try:
            self._core.create_namespaced_pod_eviction(facts.name, facts.namespace, body, _request_timeout=(5, 10))
        except ApiException as err:
            if err.status == 429:
                self._count(BLOCKED)
                self._blocked(key, rollout, target, now, _describe(err))
            elif err.status == 404:
                self._count(GONE)  # gone already: nothing to wait for
            else:
                self._count(FAILED)
                self._retry_later(rollout, now)
                log.warning("evicting pod %s/%s failed: %s", facts.namespace, facts.name, _describe(err))
            return
        except Exception as err:  # noqa: BLE001 - connection trouble: try again later
            self._count(FAILED)
            self._retry_later(rollout, now)
            log.warning("evicting pod %s/%s failed: %s", facts.namespace, facts.name, _describe(err))
            return
        self._count(EVICTED)
        rollout.evicted_uid, rollout.evicted_name, rollout.evicted_at = facts.uid, facts.name, now
        rollout.before = frozenset(j.facts.uid for j in members)
        rollout.failures = 0
        self._set_blocked(key, False)
        log.info("evicted stale pod %s/%s (%s)", facts.namespace, facts.name, "; ".join(target.verdict.differences),
                 extra={"fields": {"namespace": facts.namespace, "pod": facts.name,
                                   "agentRuntime": target.verdict.agent_runtime}})

    def _blocked(self, key: tuple[str, str], rollout: _Rollout, target: _Judged, now: float, why: str) -> None:
        delay = self._retry_later(rollout, now)
        self._set_blocked(key, True)
        facts = target.facts
        log.warning("rollout of AgentRuntime %s/%s blocked evicting %s: %s; retrying in %.0fs",
                    key[0], key[1], facts.name, why, delay)
        state = self._reported.setdefault(key, _Reported())
        runtime = target.verdict.runtime
        if runtime is not None and (state.last_blocked_event is None
                                    or now - state.last_blocked_event >= self.config.event_interval):
            message = (f"evicting stale pod {facts.name} was refused by a PodDisruptionBudget ({why}); "
                       f"the rollout of this AgentRuntime's pods waits and retries in {delay:.0f}s")
            if self._emit(runtime, REASON_BLOCKED, "Warning", message):
                state.last_blocked_event = now

    def _retry_later(self, rollout: _Rollout, now: float) -> float:
        delay = min(self.config.retry_max, self.config.retry_initial * (2 ** min(rollout.failures, 20)))
        rollout.failures += 1
        rollout.retry_at = now + delay
        return delay

    def _set_blocked(self, key: tuple[str, str], blocked: bool) -> None:
        gauge = self._metrics.rollouts_blocked
        if blocked and key not in self._blocked_gauge:
            gauge.labels(*key).set(1)
            self._blocked_gauge.add(key)
        elif not blocked and key in self._blocked_gauge:
            try:
                gauge.remove(*key)
            except KeyError:
                pass
            self._blocked_gauge.discard(key)

    def _count(self, result: str) -> None:
        self._metrics.evictions.labels(result).inc()


def _describe(err: Exception) -> str:
    if isinstance(err, ApiException):
        import json

        try:
            message = json.loads(err.body).get("message", "") if isinstance(err.body, str) else ""
        except (ValueError, AttributeError):
            message = ""
        return f"HTTP {err.status} {err.reason}" + (f": {message}" if message else "")
    return f"{type(err).__name__}: {err}"


# -- wiring into `serve` ---------------------------------------------------------------------------

SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
DEFAULT_LEASE_NAMESPACE = "skill-webhook"


class ReconcilerService:
    """The Pod informer, the leader election and the reconciler thread, started and stopped together."""

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
    import socket

    return settings.leader_election_identity or f"{socket.gethostname()}_{uuid.uuid4().hex[:12]}"


def build_reconciler(settings: Any, state: Any) -> ReconcilerService | None:
    """The reconciler of `serve`, or None with `--reconcile off`. Has its own ApiClient (connection
    pool), so that its calls never queue behind the informers' watches."""
    mode = settings.resolved_reconcile()
    if mode == "off":
        return None
    from app.sources.kube import make_api_client
    from app.sources.leader import LeaderElector, LeaseLock
    from app.sources.pods import PodInformer

    if settings.resolved_source() != "kube":
        raise ValueError(f"--reconcile {mode} needs the Kubernetes source (there are no pods to watch in files)")
    api_client = make_api_client(settings.kubeconfig)
    metrics: WebhookMetrics = state.metrics
    domain = settings.names
    identity = replica_identity(settings)
    informer = PodInformer(api_client, domain)
    metrics.leader.set(0)

    def started() -> None:
        metrics.leader.set(1)
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
    import kubernetes.client

    reconciler = Reconciler(
        ReconcilerConfig(mode=mode, domain=domain, event_interval=settings.event_interval,
                         rollout_timeout=settings.rollout_timeout, identity=identity),
        state.index,
        informer.store.all,
        pods_synced=informer.synced.is_set,
        core_api=kubernetes.client.CoreV1Api(api_client),
        metrics=metrics,
        # Read each pass: the pods are judged as the mutation injects them now (domain, image
        # volumes, digest pinning), one definition of both.
        staleness=lambda: StalenessOptions.from_mutation(state.mutation),
        is_leader=lambda: elector.is_leader,
    )
    log.info("reconciler %s: Lease %s as %s", mode, lock.describe(), identity,
             extra={"fields": {"mode": mode, "lease": lock.describe(), "identity": identity}})
    return ReconcilerService(informer, elector, reconciler)
