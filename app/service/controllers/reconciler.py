"""The stale-pod reconciler of `serve --reconcile report|evict` (README "When skills change").

Pods get skills only when they are created; after an AgentRuntime changes, its running pods keep the old
set. This thread finds them (`app.core.staleness.pods`), publishes `skill_webhook_stale_pods`, tells the
AgentRuntime's owners with one Kubernetes Event per `event_interval`, and, in evict mode and for
AgentRuntimes annotated `<domain>/skills-rollout: evict`, rolls the pods through the Eviction API, one
pod per workload at a time (`reconciler_rollout`). It never writes a workload object: rewriting a
Deployment's template is what made GitOps tools report drift.

Cost, over the Pod informer's store (`notified`): a pass costs what changed, not what is cached. The
store's listener records the keys of changed pods (a status heartbeat that changes nothing judged is
dropped there); an index change re-judges the namespaces whose AgentRuntimes changed; the verdicts, the
stale pods and the gauge are updated in place (`reconciler_pods`). While nothing changes the thread
sleeps until time-based work is due. Every `full_every` seconds a sweep re-checks every pod, which picks
up digests the resolver moved; it reuses a verdict whose pod, AgentRuntime and expected fingerprint are
unchanged, and, like any backlog, runs in slices of a few milliseconds with real sleeps between them, so
the admission threads get the GIL back. Events and rollouts wait for a whole view, never a half-judged
one. Events and evictions are the leader's alone; every replica keeps its gauge.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Literal

from app.core.matching.index import AgentRuntimeIndex
from app.core.model import AgentRuntime
from app.core.names import DEFAULT_DOMAIN, Domain
from app.core.staleness.rollout import pod_key, roll_hint
from app.core.staleness.pods import FingerprintMemo, Staleness, StalenessOptions, pod_staleness

from app.service.metrics import WebhookMetrics
from app.service.controllers.pod_verdicts import Judged, JudgedPods, PodKey, RuntimeKey
from app.service.controllers.rollout import BLOCKED, EVICTED, FAILED, GONE, REASON_BLOCKED, ROLLOUT_EVICT, Rollouts, describe

log = logging.getLogger("skill_webhook.reconciler")

COMPONENT = "skill-webhook"
REASON_CHANGED = "SkillsChanged"

__all__ = ["BLOCKED", "COMPONENT", "EVICTED", "FAILED", "GONE", "REASON_BLOCKED", "REASON_CHANGED", "ROLLOUT_EVICT",
           "Reconciler", "ReconcilerConfig"]

# Without changes, a pass that waits on time (a replacement's timeout, a backoff, a held-back Event)
# comes this often.
IDLE_RECHECK = 2.0


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
    # A slice of a backlog or a sweep judges at most `chunk` pods and stops after `slice_seconds`; the
    # thread then sleeps `pause`, during which the admission threads have the GIL to themselves.
    chunk: int = 500
    slice_seconds: float = 0.004
    pause: float = 0.02
    # After a refused (429) or failed eviction the workload's rollout waits this long, doubling up to
    # retry_max: a disruption budget stays unhappy for a while, asking every second changes nothing.
    retry_initial: float = 10.0
    retry_max: float = 300.0


@dataclass
class _Reported:
    last_event: float | None = None
    uids: frozenset[str] = frozenset()


class Reconciler:
    """The loop; `run_once()` is one whole pass (tests call it directly), `start()` runs passes on a thread.

    `pods` is the Pod informer's store (`get`, `in_namespace`, `all`: passes are incremental when
    `notified`), or any callable returning the pods (each pass then walks them all, re-judging the ones
    whose object changed)."""

    def __init__(
        self,
        config: ReconcilerConfig,
        index: AgentRuntimeIndex,
        pods: Callable[[], Iterable[Any]] | Any,
        *,
        pods_synced: Callable[[], bool],
        core_api: Any,
        metrics: WebhookMetrics,
        staleness: StalenessOptions | Callable[[], StalenessOptions] | None = None,
        is_leader: Callable[[], bool] = lambda: True,
        clock: Callable[[], float] = time.monotonic,
        notified: bool = False,
    ) -> None:
        """`notified`: the pod store's Reflector calls `notify(old, new)` on every pod change and the index
        calls `notify_runtimes()` on every change, so the thread may sleep while nothing changes and judge
        only what did (without it, it judges on every tick)."""
        self.config = config
        self.index = index
        store = pods if all(hasattr(pods, a) for a in ("get", "in_namespace", "all")) else None
        self._store = store
        self._pods: Callable[[], Iterable[Any]] = store.all if store is not None else pods
        self._pods_synced = pods_synced
        self._core = core_api
        self._metrics = metrics
        self._staleness = staleness if staleness is not None else StalenessOptions(domain=config.domain)
        self._is_leader = is_leader
        self._clock = clock
        self._notified = notified
        self._incremental = notified and store is not None
        self._state = JudgedPods()
        self._memo = FingerprintMemo()
        self._shape: tuple[Any, ...] | None = None
        # Pods judged in full so far (a verdict reused by a sweep is not counted), and steps taken.
        self.judgments = self.passes = 0
        self._dirty: set[PodKey] = set()
        self._dirty_lock = threading.Lock()
        self._backlog: dict[PodKey, None] = {}  # changed pods not judged yet (an ordered set)
        self._sweep: list[PodKey] | None = None
        self._sweep_at = 0
        self._complete = False  # every pod has been judged once
        self._last_full = -float("inf")
        self._runtimes: dict[int, AgentRuntime] = {}
        self._runtimes_dirty = True
        self._published: dict[tuple[str, str], int] = {}
        self._reported: dict[RuntimeKey, _Reported] = {}
        self._report_due: set[RuntimeKey] = set()
        self._held: set[RuntimeKey] = set()  # an Event held back by event_interval
        self._rollouts = Rollouts(config, core_api, metrics, is_leader, self._emit)
        self._was_leader = False
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

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    def notify(self, old: Any = None, new: Any = None) -> None:
        """A pod changed (the Reflector's listener, on its thread: O(1)), or, without arguments, anything
        else worth a pass (a new leader)."""
        if old is not None or new is not None:
            if old is not None and new is not None and _same(old, new):
                return  # nothing that is judged changed: no pass for it
            key = pod_key(new if new is not None else old)
            with self._dirty_lock:
                self._dirty.add(key)
        self._wake.set()

    def notify_runtimes(self, *_: Any) -> None:
        """The index changed (its listener): namespaces are compared again at the next pass."""
        self._runtimes_dirty = True
        self._wake.set()

    def _idle_timeout(self, now: float, last_pass: float) -> float:
        """How long the thread may sleep without a change: until the next sweep, or a time-based recheck."""
        until = self._last_full + self.config.full_every - now
        if self._pending:
            until = min(until, last_pass + IDLE_RECHECK - now)
        return max(0.0, until)

    def _run(self) -> None:
        last_pass, more = -float("inf"), False
        while not self._stopping.is_set():
            if not (self._pods_synced() and self.index.synced.is_set()):
                self._stopping.wait(self.config.debounce)
                continue
            if more:
                self._stopping.wait(self.config.pause)  # a real sleep between slices
            else:
                if self._notified:
                    self._wake.wait(self._idle_timeout(self._clock(), last_pass))
                # At most one pass per debounce period, however many pod events arrive.
                self._stopping.wait(max(0.0, last_pass + self.config.debounce - self._clock()))
            if self._stopping.is_set():
                break
            started = self._clock()
            self._wake.clear()  # changes during the pass wake the next one
            try:
                more = self._step(self.config.slice_seconds)
            except Exception:  # noqa: BLE001 - the thread must survive anything; the next pass retries
                log.exception("reconciler pass failed")
                more = False
            if not more:
                last_pass = started
        log.info("reconciler stopped")

    # -- one pass ------------------------------------------------------------------------------------

    def run_once(self) -> list[Staleness]:
        """One whole pass: judge what changed (everything, the first time or when a sweep is due),
        publish the gauge, and as leader write Events and evict. Returns the stale verdicts."""
        while self._step(None):
            pass
        return [j.verdict for j in self._state.all_stale()]

    def _step(self, budget: float | None) -> bool:
        """Judge for at most `budget` seconds (None: until done); True when work is left for the next."""
        now, self.passes = self._clock(), self.passes + 1
        options = self._staleness() if callable(self._staleness) else self._staleness
        shape = (options.domain, options.image_volumes, options.trust_recorded_digests, options.references is None)
        if shape != self._shape:  # judged differently from now on: every verdict is made again
            self._shape, self._memo, self._complete, self._sweep = shape, FingerprintMemo(), False, None
            self._last_full = -float("inf")
        if not self._incremental:
            self._whole_pass(now, options)
        elif not self._judge_changes(now, options, None if budget is None else time.perf_counter() + budget):
            return True
        self._publish(now)
        return False

    def _whole_pass(self, now: float, options: StalenessOptions) -> None:
        changed = self._changed_namespaces()
        full = now - self._last_full >= self.config.full_every
        if full:
            self._last_full = now
            self._prune_memo()
        seen: set[PodKey] = set()
        for pod in list(self._pods()):
            key = pod_key(pod)
            seen.add(key)
            previous = self._state.get(key)
            if full or previous is None or previous.pod is not pod or key[0] in changed:
                self._judge(key, pod, options)
        for key in self._state.keys():
            if key not in seen:
                self._state.put(key, None)
        self._complete = True

    def _judge_changes(self, now: float, options: StalenessOptions, deadline: float | None) -> bool:
        """The incremental pass over the store; False when it stopped at `deadline` with work left."""
        store = self._store
        with self._dirty_lock:
            dirty, self._dirty = self._dirty, set()
        first = False
        if self._sweep is None and now - self._last_full >= self.config.full_every:
            first = not self._complete
            self._start_sweep(now)
        self._backlog.update(dict.fromkeys(dirty))
        for namespace in self._changed_namespaces():
            self._backlog.update(dict.fromkeys(p.key for p in store.in_namespace(namespace)))
            self._backlog.update(dict.fromkeys(self._state.in_namespace(namespace)))
        if first:
            self._backlog.clear()  # the first sweep judges every pod anyway
        done = 0
        while self._backlog:
            if deadline is not None and _over(done, deadline, self.config.chunk):
                return False
            key, _ = self._backlog.popitem()
            self._judge_key(key, options, reuse=False)
            done += 1
        sweep = self._sweep
        while sweep is not None and self._sweep_at < len(sweep):
            if deadline is not None and _over(done, deadline, self.config.chunk):
                return False
            self._judge_key(sweep[self._sweep_at], options, reuse=self._complete)
            self._sweep_at += 1
            done += 1
        self._sweep, self._complete = None, True
        return True

    def _start_sweep(self, now: float) -> None:
        self._last_full = now
        self._runtimes_dirty = True  # the index is compared in full too: a missed change cannot last
        self._prune_memo()
        keys = self._store.keys() if hasattr(self._store, "keys") else [pod_key(p) for p in self._store.all()]
        # And the judged pods that are gone meanwhile, to be forgotten.
        self._sweep, self._sweep_at = keys + list(self._state.key_set() - set(keys)), 0

    def _judge_key(self, key: PodKey, options: StalenessOptions, *, reuse: bool) -> None:
        pod = self._store.get(*key)
        if pod is None:
            self._state.put(key, None)
            return
        previous = self._state.get(key)
        if reuse and previous is not None and self._unchanged(previous, pod, options):
            return
        self._judge(key, pod, options)

    def _unchanged(self, previous: Judged, pod: Any, options: StalenessOptions) -> bool:
        """Whether a sweep may keep `previous`: the same pod, its AgentRuntime still the live object (a
        change of the index re-judges the namespace anyway) and the same expected fingerprint (a digest
        the resolver moved changes it)."""
        if previous.pod is not pod and not _same(previous.pod, pod):
            return False
        verdict = previous.verdict
        runtime = verdict.runtime
        if runtime is None or self.index.get(verdict.namespace, verdict.agent_runtime) is not runtime:
            return False
        if verdict.problems:
            return True
        return self._memo.fingerprint(runtime, options) == verdict.expected_fingerprint

    def _judge(self, key: PodKey, pod: Any, options: StalenessOptions) -> None:
        self.judgments += 1
        self._state.put(key, Judged(pod, pod_staleness(pod, self.index, options, self._memo)))

    def _prune_memo(self) -> None:
        live = {id(runtime) for runtime in self.index.all()}
        self._memo.prune(lambda runtime: id(runtime) in live)

    def _changed_namespaces(self) -> set[str]:
        """Namespaces whose AgentRuntimes changed since the last call: the index replaces an object on
        every change, so comparing object identities (set operations in C) finds them."""
        if self._notified and not self._runtimes_dirty:
            return set()
        self._runtimes_dirty = False
        runtimes = self.index.all()
        current = dict(zip(map(id, runtimes), runtimes))
        previous, self._runtimes = self._runtimes, current  # holding them keeps their ids unique
        changed = {current[i].metadata.namespace for i in current.keys() - previous.keys()}
        changed.update(previous[i].metadata.namespace for i in previous.keys() - current.keys())
        if len(self._memo) > 2 * len(current) + 100:
            self._prune_memo()
        return changed

    # -- publish and report --------------------------------------------------------------------------

    def _publish(self, now: float) -> None:
        self._publish_gauge()
        leader = self._is_leader()
        if leader != self._was_leader:
            self._rollouts.clear()
            self._was_leader = leader
            if leader:  # a new leader reports what it sees
                self._report_due.update(self._state.stale_runtimes(), self._reported)
        moved = self._state.take_runtimes()
        self._pending = False
        if not leader:
            return
        self._report_due.update(moved)
        self._report(now)
        if self.config.mode == "evict":
            self._rollouts.step(self._state, now)
            self._pending = self._pending or bool(self._rollouts)

    def _publish_gauge(self) -> None:
        gauge = self._metrics.stale_pods
        for label in self._state.take_labels():
            value = self._state.counts.get(label, 0)
            if self._published.get(label, 0) == value:
                continue
            if value:
                gauge.labels(*label).set(value)
                self._published[label] = value
            else:
                self._published.pop(label, None)
                try:
                    gauge.remove(*label)
                except KeyError:
                    pass

    def _report(self, now: float) -> None:
        due, self._report_due = self._report_due | self._held, set()
        self._held = set()
        for key in due:
            pods = self._state.stale_of(key)
            state = self._reported.get(key)
            if not pods:
                if state is not None:
                    state.uids = frozenset()
                continue
            state = state if state is not None else self._reported.setdefault(key, _Reported())
            uids = frozenset(j.facts.uid for j in pods)
            if uids <= state.uids:
                continue  # these pods were reported already
            if state.last_event is not None and now - state.last_event < self.config.event_interval:
                self._held.add(key)
                self._pending = True
                continue  # reported within the interval: the next Event waits
            runtime = self.index.get(*key) or pods[0].verdict.runtime
            if self._emit(runtime, REASON_CHANGED, "Normal", self._changed_message(runtime, pods)):
                state.last_event, state.uids = now, uids
            else:
                self._report_due.add(key)  # tried again at the next pass

    def _changed_message(self, runtime: AgentRuntime, pods: list[Judged]) -> str:
        namespace = runtime.metadata.namespace
        sample = min(pods, key=lambda j: j.facts.name).verdict.differences[:3]
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


def _same(old: Any, new: Any) -> bool:
    same_state = getattr(old, "same_state", None)
    return same_state is not None and type(old) is type(new) and same_state(new)


def _over(done: int, deadline: float, chunk: int) -> bool:
    """A slice ends after `chunk` pods or at `deadline` (read every 16 pods: the clock costs too)."""
    return done >= chunk or (done % 16 == 0 and done > 0 and time.perf_counter() > deadline)
