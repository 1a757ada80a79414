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
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Literal

from kubernetes.client.exceptions import ApiException

from app.core.index import AgentRuntimeIndex
from app.core.model import AgentRuntime
from app.core.names import DEFAULT_DOMAIN, Domain
from app.core.rollout import PodFacts, evictable, pod_facts, pod_key, roll_hint
from app.core.staleness import FingerprintMemo, Staleness, StalenessOptions, pod_staleness

from .metrics import WebhookMetrics

log = logging.getLogger("skill_webhook.reconciler")

COMPONENT = "skill-webhook"
REASON_CHANGED = "SkillsChanged"
REASON_BLOCKED = "RolloutBlocked"
ROLLOUT_EVICT = "evict"

# Without changes, a pass that waits on time (a replacement's timeout, a backoff, a held-back Event)
# comes this often.
IDLE_RECHECK = 2.0

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
        notified: bool = False,
    ) -> None:
        """`notified`: the pod store and the index call `notify()` on every change, so the thread may
        skip passes while nothing changed (without it, it judges on every tick)."""
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
        self._notified = notified
        self._runtimes_dirty = True
        self._pending = False  # a rollout in flight or an Event held back: pass again even if nothing changes
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

    def notify(self, *_: Any) -> None:
        """Something changed (an index or Reflector listener; must return fast): the next tick judges."""
        self._wake.set()

    def _due(self, now: float, last_pass: float) -> bool:
        if not self._notified or self._wake.is_set() or now - self._last_full >= self.config.full_every:
            return True
        # Waiting for a replacement, a backoff or a held-back Event: time alone can move those on.
        return self._pending and now - last_pass >= IDLE_RECHECK

    def _run(self) -> None:
        last_pass = -float("inf")
        while not self._stopping.is_set():
            started = self._clock()
            try:
                if self._pods_synced() and self.index.synced.is_set() and self._due(started, last_pass):
                    self._wake.clear()  # changes during the pass wake the next one
                    self.run_once()
                    last_pass = started
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
            key = pod_key(pod)
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
        self._pending = False
        if leader:
            self._report(stale, now)
            if self.config.mode == "evict":
                self._evict(judged, stale, now)
                self._pending = self._pending or bool(self._rollouts)
        return [j.verdict for j in stale]

    def notify_runtimes(self, *_: Any) -> None:
        """The index changed (its listener): namespaces are compared again at the next pass."""
        self._runtimes_dirty = True
        self._wake.set()

    def _changed_namespaces(self) -> set[str]:
        if self._notified and not self._runtimes_dirty:
            return set()
        self._runtimes_dirty = False
        current = {(r.metadata.namespace, r.metadata.name): r for r in self.index.all()}
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
                self._pending = True
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
        candidates: dict[tuple[str, str], list[_Judged]] = {}
        for j in stale:
            runtime = j.verdict.runtime
            if runtime is None or j.verdict.problems or not evictable(j.facts):
                continue  # reported only: nothing to roll to, or nothing would bring the pod back
            if runtime.annotation(self.config.domain.skills_rollout) != ROLLOUT_EVICT:
                continue
            candidates.setdefault(runtime.key, []).append(j)
        members: dict[tuple[str, str], list[_Judged]] = {}
        watched = candidates.keys() | self._rollouts.keys()
        if watched:
            for j in judged.values():
                verdict = j.verdict
                key = (verdict.namespace, verdict.agent_runtime)
                if verdict.runtime is not None and key in watched:
                    members.setdefault(key, []).append(j)
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
