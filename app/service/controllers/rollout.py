"""`--reconcile evict`: rolling a workload's stale pods through the Eviction API (docs/skill-changes.md),
one step each time the reconciler's worker has the workload's key.

One pod per workload at a time: the next only after a replacement is Ready or `rollout_timeout` passed,
never while a pod of the workload is still terminating. A disruption budget's 429 stops the workload's
rollout, is reported (Event `RolloutBlocked`, gauge) and retried after the queue's back-off. Only pods
whose controller brings them back (ReplicaSet, StatefulSet, DaemonSet) are evicted. The leader's alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

from kubernetes.client.exceptions import ApiException

from app.core.model import AgentRuntime, WorkloadRef
from app.core.staleness.rollout import evictable
from app.sources.kube.pods import PodSummary
from app.sources.kube.reflector import describe
from app.sources.workqueue import WorkQueue

from app.service.metrics import WebhookMetrics
from app.service.controllers.pod_verdicts import Judged

log = logging.getLogger("skill_webhook.reconciler")

ROLLOUT_EVICT = "evict"
REASON_BLOCKED = "RolloutBlocked"

# skill_webhook_evictions_total{result}
EVICTED, BLOCKED, GONE, FAILED = "evicted", "blocked", "gone", "error"

WorkloadKey = tuple[str, WorkloadRef]  # (namespace, workload): the reconciler's key


@dataclass
class Rollout:
    """One workload's rolling eviction."""

    label: tuple[str, str]  # (namespace, agentruntime) of the blocked gauge
    evicted_uid: str = ""
    evicted_name: str = ""
    evicted_at: float = 0.0
    # uids of the workload's pods when the last eviction was made: a pod not among them is a replacement.
    before: frozenset[str] = frozenset()
    waiting_since: float | None = None  # when a pod of the workload was first seen terminating
    retry_at: float = 0.0  # after a refused or failed eviction: the queue's back-off


class Rollouts:
    """The rollouts in flight, by workload key."""

    def __init__(self, config: Any, core_api: Any, metrics: WebhookMetrics, queue: WorkQueue[WorkloadKey],
                 is_leader: Callable[[], bool], emit: Callable[[AgentRuntime, str, str, str], bool]) -> None:
        self.config = config
        self._core = core_api
        self._metrics = metrics
        self._queue = queue
        self._is_leader = is_leader
        self._emit = emit
        self._rollouts: dict[WorkloadKey, Rollout] = {}
        self._blocked: set[tuple[str, str]] = set()  # gauge labels set to 1
        self._last_blocked_event: dict[tuple[str, str], float] = {}

    def clear(self) -> None:
        """A new leader starts its rollouts from what it sees, not from a predecessor's memory."""
        self._rollouts.clear()

    def step(self, key: WorkloadKey, judged: list[Judged], members: list[PodSummary], now: float) -> None:
        """Evict the next stale pod of the workload when it may be, else re-add the key for when it may."""
        stale = [j for j in judged if self._rolled(j)]
        rollout = self._rollouts.get(key)
        if not stale:
            if rollout is not None and not (rollout.evicted_uid and now - rollout.evicted_at < self.config.rollout_timeout):
                del self._rollouts[key]  # done, and its last replacement had its time
                self._set_blocked(rollout.label, False)
            return
        if rollout is None:
            rollout = self._rollouts[key] = Rollout(stale[0].label)
        wait = self._wait(rollout, members, now)
        if wait > 0:
            self._queue.add_after(key, wait)
            return
        self._evict_one(key, rollout, min(stale, key=lambda j: j.pod.name), members, now)

    def _rolled(self, judged: Judged) -> bool:
        runtime = judged.verdict.runtime
        return (judged.stale and runtime is not None and not judged.verdict.problems and evictable(judged.pod.owner)
                and runtime.annotation(self.config.domain.skills_rollout) == ROLLOUT_EVICT)

    def _wait(self, rollout: Rollout, members: list[PodSummary], now: float) -> float:
        """Seconds until the next eviction may be made (0: now)."""
        if now < rollout.retry_at:
            return rollout.retry_at - now
        timeout = self.config.rollout_timeout
        if rollout.evicted_uid:
            replaced = any(p.uid not in rollout.before and p.ready and not p.deleting for p in members)
            if not replaced and now - rollout.evicted_at < timeout:
                return rollout.evicted_at + timeout - now  # or sooner: the replacement's events re-add the key
            if not replaced:
                log.warning("no Ready replacement for evicted pod %s within %.0fs; going on", rollout.evicted_name,
                            timeout)
            rollout.evicted_uid = ""
        # A pod of the workload still terminating (ours, or one a previous leader evicted) holds the next.
        if any(p.deleting for p in members):
            if rollout.waiting_since is None:
                rollout.waiting_since = now
            if now - rollout.waiting_since < timeout:
                return rollout.waiting_since + timeout - now
        rollout.waiting_since = None
        return 0.0

    def _evict_one(self, key: WorkloadKey, rollout: Rollout, target: Judged, members: list[PodSummary],
                   now: float) -> None:
        if not self._is_leader():
            return  # the Lease was lost meanwhile
        pod = target.pod
        body = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": pod.name, "namespace": pod.namespace},
            # Only the pod that was judged: a StatefulSet's replacement has the same name.
            "deleteOptions": {"preconditions": {"uid": pod.uid}} if pod.uid else {},
        }
        try:
            self._core.create_namespaced_pod_eviction(pod.name, pod.namespace, body, _request_timeout=(5, 10))
        except ApiException as err:
            if err.status == 429:
                self._count(BLOCKED)
                self._refused(key, rollout, target, now, describe(err))
            elif err.status == 404:
                self._count(GONE)  # gone already: its deletion re-adds the key
            else:
                self._failed(key, rollout, target, now, err)
            return
        except Exception as err:  # noqa: BLE001 - connection trouble: try again after the back-off
            self._failed(key, rollout, target, now, err)
            return
        self._count(EVICTED)
        self._queue.forget(key)
        rollout.evicted_uid, rollout.evicted_name, rollout.evicted_at = pod.uid, pod.name, now
        rollout.before = frozenset(p.uid for p in members)
        self._queue.add_after(key, self.config.rollout_timeout)
        self._set_blocked(rollout.label, False)
        log.info("evicted stale pod %s/%s (%s)", pod.namespace, pod.name, "; ".join(target.verdict.differences),
                 extra={"fields": {"namespace": pod.namespace, "pod": pod.name,
                                   "agentRuntime": target.verdict.agent_runtime}})

    def _failed(self, key: WorkloadKey, rollout: Rollout, target: Judged, now: float, err: Exception) -> None:
        self._count(FAILED)
        rollout.retry_at = now + self._queue.add_rate_limited(key)
        log.warning("evicting pod %s/%s failed: %s", target.pod.namespace, target.pod.name, describe(err))

    def _refused(self, key: WorkloadKey, rollout: Rollout, target: Judged, now: float, why: str) -> None:
        delay = self._queue.add_rate_limited(key)
        rollout.retry_at = now + delay
        label = rollout.label
        self._set_blocked(label, True)
        log.warning("rollout of AgentRuntime %s/%s blocked evicting %s: %s; retrying in %.0fs",
                    label[0], label[1], target.pod.name, why, delay)
        runtime = target.verdict.runtime
        last = self._last_blocked_event.get(label)
        if runtime is not None and (last is None or now - last >= self.config.event_interval):
            message = (f"evicting stale pod {target.pod.name} was refused by a PodDisruptionBudget ({why}); "
                       f"the rollout of this AgentRuntime's pods waits and retries in {delay:.0f}s")
            if self._emit(runtime, REASON_BLOCKED, "Warning", message):
                self._last_blocked_event[label] = now

    def _set_blocked(self, label: tuple[str, str], blocked: bool) -> None:
        if blocked == (label in self._blocked):
            return
        gauge = self._metrics.rollouts_blocked
        if blocked:
            gauge.labels(*label).set(1)
            self._blocked.add(label)
        else:
            self._blocked.discard(label)
            try:
                gauge.remove(*label)
            except KeyError:
                pass

    def _count(self, result: str) -> None:
        self._metrics.evictions.labels(result).inc()

