"""The stale-pod reconciler of `serve --reconcile report|evict` (docs/skill-changes.md).

Pods get skills only when they are created; after an AgentRuntime changes, its running pods keep the old
set. This controller finds them (`app.core.staleness.pods`), publishes `skill_webhook_stale_pods`, tells
the AgentRuntime's owners with one Kubernetes Event per `event_interval`, and, in evict mode and for
AgentRuntimes annotated `<domain>/skills-rollout: evict`, rolls the pods through the Eviction API, one
pod per workload at a time (`rollout`). It never writes a workload object: rewriting a Deployment's
template is what made GitOps tools report drift.

The shape is client-go's controller. The key is a workload, `(namespace, WorkloadRef)`: the Pod
informer's handler adds the workload of a pod that changed (a change of nothing judged, such as a status
heartbeat, adds nothing), the AgentRuntime index's handler adds the workload an AgentRuntime targeted
and targets, and a resync every `resync_every` seconds adds every workload (which picks up digests the
resolver moved). One worker takes one key at a time and judges that workload's pods as they are now:
the gauge, the Events, and a rollout step, which re-adds the key for when it may go on (a replacement's
timeout, the back-off after a refused eviction). Events and evictions are the leader's alone; every
replica keeps its gauge.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Literal

from app.core.matching.index import AgentRuntimeIndex
from app.core.model import AgentRuntime
from app.core.names import DEFAULT_DOMAIN, Domain
from app.core.staleness.pods import Expected, StalenessOptions, expected_injection, pod_staleness
from app.core.staleness.rollout import roll_hint
from app.sources.backoff import Backoff
from app.sources.clock import Clock
from app.sources.kube.pods import PodStore, PodSummary
from app.sources.kube.reflector import describe
from app.sources.workqueue import WorkQueue

from app.service.metrics import WebhookMetrics
from app.service.controllers.pod_verdicts import Judged, PodKey, RuntimeKey, Verdicts
from app.service.controllers.rollout import Rollouts, WorkloadKey

log = logging.getLogger("skill_webhook.reconciler")

COMPONENT = "skill-webhook"
REASON_CHANGED = "SkillsChanged"


@dataclass(frozen=True)
class ReconcilerConfig:
    mode: Literal["report", "evict"] = "report"
    domain: Domain = DEFAULT_DOMAIN
    event_interval: float = 600.0
    rollout_timeout: float = 300.0
    # Name of this replica in the Events it writes (reportingInstance).
    identity: str = ""
    resync_every: float = 30.0
    # Pod changes of one workload within this long share one judgment of its pods.
    debounce: float = 0.5
    # After a refused (429) or failed eviction, or an Event that could not be written, the key comes back
    # after the back-off, from retry_initial up to retry_max: a disruption budget stays unhappy for a
    # while, asking every second changes nothing.
    retry_initial: float = 10.0
    retry_max: float = 300.0


@dataclass
class _Reported:
    last_event: float | None = None
    uids: frozenset[str] = frozenset()


class Reconciler:
    """Handlers (`pod_changed`, `runtime_changed`), `resync()`, and `sync(key)`, the worker's body;
    `start()` runs the worker and the resync on threads, `process_next()` is one turn of the worker."""

    def __init__(
        self,
        config: ReconcilerConfig,
        index: AgentRuntimeIndex,
        pods: PodStore,
        *,
        core_api: Any,
        metrics: WebhookMetrics,
        staleness: Callable[[], StalenessOptions] | None = None,
        is_leader: Callable[[], bool] = lambda: True,
        clock: Clock | None = None,
    ) -> None:
        """`staleness` is read at every sync: pods are judged as the mutation injects them now."""
        self.config = config
        self.index = index
        self.pods = pods
        self._core = core_api
        self._metrics = metrics
        self._staleness = staleness or (lambda: StalenessOptions(domain=config.domain))
        self._is_leader = is_leader
        self.clock = clock or Clock()
        self.queue: WorkQueue[WorkloadKey] = WorkQueue(
            clock=self.clock, backoff=Backoff(config.retry_initial, config.retry_max))
        self.verdicts = Verdicts()
        self._members: dict[WorkloadKey, set[PodKey]] = {}  # the pods judged under each key
        self._shape: tuple[Any, ...] | None = None
        self._reported: dict[RuntimeKey, _Reported] = {}
        self._rollouts = Rollouts(config, core_api, metrics, self.queue, is_leader, self._emit)
        self._was_leader = False
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- handlers (informer threads: O(1), they only add keys) ---------------------------------------

    def pod_changed(self, old: PodSummary | None, new: PodSummary | None) -> None:
        if old is not None and new is not None and old == new:
            return  # nothing that is judged changed
        for pod in (old, new):
            if pod is not None and pod.workload is not None:
                self.queue.add_after(pod.workload, self.config.debounce)

    def runtime_changed(self, old: AgentRuntime | None, new: AgentRuntime | None) -> None:
        for runtime in (old, new):
            if runtime is not None and runtime.targets_a_workload:
                self.queue.add((runtime.metadata.namespace, runtime.workload))

    def resync(self) -> None:
        """Every workload with pods, and every one judged before (to forget pods that went)."""
        keys = {pod.workload for pod in self.pods.all() if pod.workload is not None} | set(self._members)
        for key in keys:
            self.queue.add(key)

    # -- the worker ----------------------------------------------------------------------------------

    def start(self) -> None:
        if self._threads:
            return
        self._threads = [threading.Thread(target=self._work, name="stale-pod-reconciler", daemon=True),
                         threading.Thread(target=self._resync_loop, name="stale-pod-resync", daemon=True)]
        for thread in self._threads:
            thread.start()
        log.info("reconciler started", extra={"fields": {"mode": self.config.mode}})

    def stop(self) -> None:
        self._stopping.set()
        self.queue.shutdown()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=10)

    def _work(self) -> None:
        # Judging before both caches are whole would report pods of AgentRuntimes not listed yet.
        while not (self.pods.synced.is_set() and self.index.synced.is_set()):
            if self.clock.sleep(0.1, self._stopping):
                return
        self.resync()
        while self.process_next():
            pass
        log.info("reconciler stopped")

    def _resync_loop(self) -> None:
        while not self.clock.sleep(self.config.resync_every, self._stopping):
            if self.pods.synced.is_set() and self.index.synced.is_set():
                self.resync()

    def process_next(self) -> bool:
        """Take one key (waiting for one) and sync it; False once the queue is shut down."""
        key = self.queue.get()
        if key is None:
            return False
        try:
            self.sync(key)
        except Exception:  # noqa: BLE001 - the worker must survive anything; the key comes back later
            log.exception("reconciling %s %s/%s failed", key[1].kind, key[0], key[1].name)
            self.queue.add_rate_limited(key)
        finally:
            self.queue.done(key)
        return True

    def sync(self, key: WorkloadKey) -> None:
        """Judge the pods of one workload as they are now; publish, report and roll what that says."""
        namespace, workload = key
        options = self._options()
        members = self.pods.of_workload(namespace, workload)
        # What would be injected is worked out once per AgentRuntime object for the pods of this workload.
        expected: dict[tuple[str, str], tuple[AgentRuntime, Expected]] = {}

        def expect(runtime: AgentRuntime) -> Expected:
            known = expected.get(runtime.key)
            if known is None or known[0] is not runtime:
                known = expected[runtime.key] = (runtime, expected_injection(runtime, options))
            return known[1]

        judged = []
        for pod in members:
            verdict = Judged(pod, pod_staleness(pod, self.index, options, expect))
            self.verdicts.put(pod.key, verdict)
            judged.append(verdict)
        seen = {pod.key for pod in members}
        for gone in self._members.pop(key, set()) - seen:
            if self.pods.get(*gone) is None:
                self.verdicts.put(gone, None)
        if seen:
            self._members[key] = seen
        self._publish_gauge()
        leader = self._is_leader()
        if leader != self._was_leader:  # a new leader rolls from what it sees (serve resyncs it then)
            self._was_leader = leader
            self._rollouts.clear()
        if not leader:
            return
        now = self.clock.now()
        self._report(key, judged, now)
        if self.config.mode == "evict":
            self._rollouts.step(key, judged, members, now)

    def _options(self) -> StalenessOptions:
        options = self._staleness()
        shape = (options.domain, options.image_volumes, options.trust_recorded_digests, options.references is None)
        if shape != self._shape:  # pods are judged differently from now on: every one again
            if self._shape is not None:
                self.resync()
            self._shape = shape
        return options

    # -- publish and report --------------------------------------------------------------------------

    def _publish_gauge(self) -> None:
        gauge = self._metrics.stale_pods
        for label in self.verdicts.take_moved():
            value = self.verdicts.counts.get(label, 0)
            if value:
                gauge.labels(*label).set(value)
            else:
                try:
                    gauge.remove(*label)
                except KeyError:
                    pass

    def _report(self, key: WorkloadKey, judged: list[Judged], now: float) -> None:
        """One SkillsChanged Event per AgentRuntime when pods not reported before went stale, at most one
        per event_interval (a later one waits: the key is re-added for when the interval ends)."""
        stale: dict[RuntimeKey, list[Judged]] = {}
        for j in judged:
            runtime = j.runtime_key
            if runtime is not None:
                pods = stale.setdefault(runtime, [])
                if j.stale:
                    pods.append(j)
        for runtime_key, pods in stale.items():
            uids = frozenset(j.pod.uid for j in pods)
            state = self._reported.get(runtime_key)
            if state is None:
                if not uids:
                    continue
                state = self._reported[runtime_key] = _Reported()
            if uids <= state.uids:
                state.uids = uids  # what is reported stays; pods that are current again drop out
                continue
            if state.last_event is not None and now - state.last_event < self.config.event_interval:
                self.queue.add_after(key, state.last_event + self.config.event_interval - now)
                continue
            runtime = self.index.get(*runtime_key) or pods[0].verdict.runtime
            if self._emit(runtime, REASON_CHANGED, "Normal", self._changed_message(runtime, pods)):
                state.last_event, state.uids = now, uids
            else:
                self.queue.add_rate_limited(key)

    def _changed_message(self, runtime: AgentRuntime, pods: list[Judged]) -> str:
        namespace = runtime.metadata.namespace
        sample = min(pods, key=lambda j: j.pod.name).verdict.differences[:3]
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
                        describe(err))
            return False
        log.info("event %s on AgentRuntime %s/%s: %s", reason, meta.namespace, meta.name, message,
                 extra={"fields": {"reason": reason, "namespace": meta.namespace, "agentRuntime": meta.name}})
        return True
