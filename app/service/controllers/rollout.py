"""`--reconcile evict`: rolling the stale pods of opted-in AgentRuntimes through the Eviction API
(README "When skills change").

One pod per workload at a time: the next only after a replacement is Ready or `rollout_timeout` passed,
never while a pod of the workload is still terminating. A disruption budget's 429 stops that workload's
rollout, is reported (Event `RolloutBlocked`, gauge) and retried with a doubling backoff. Only pods whose
controller brings them back (ReplicaSet, StatefulSet, DaemonSet) are evicted. The leader's alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

from kubernetes.client.exceptions import ApiException

from app.core.model import AgentRuntime
from app.core.staleness.rollout import evictable

from app.service.metrics import WebhookMetrics
from app.service.controllers.pod_verdicts import Judged, JudgedPods, RuntimeKey

log = logging.getLogger("skill_webhook.reconciler")

ROLLOUT_EVICT = "evict"
REASON_BLOCKED = "RolloutBlocked"

# skill_webhook_evictions_total{result}
EVICTED, BLOCKED, GONE, FAILED = "evicted", "blocked", "gone", "error"


@dataclass
class Rollout:
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


class Rollouts:
    """The rollouts in flight; `step()` is the eviction part of one pass."""

    def __init__(
        self,
        config: Any,
        core_api: Any,
        metrics: WebhookMetrics,
        is_leader: Callable[[], bool],
        emit: Callable[[AgentRuntime, str, str, str], bool],
    ) -> None:
        self.config = config
        self._core = core_api
        self._metrics = metrics
        self._is_leader = is_leader
        self._emit = emit
        self._rollouts: dict[RuntimeKey, Rollout] = {}
        self._blocked_gauge: set[RuntimeKey] = set()
        self._last_blocked_event: dict[RuntimeKey, float] = {}

    def __bool__(self) -> bool:
        return bool(self._rollouts)

    def clear(self) -> None:
        """A new leader starts its rollouts from what it sees, not from a predecessor's memory."""
        self._rollouts.clear()

    def step(self, pods: JudgedPods, now: float) -> None:
        candidates: dict[RuntimeKey, list[Judged]] = {}
        for key in pods.stale_runtimes():
            for j in pods.stale_of(key):
                runtime = j.verdict.runtime
                if runtime is None or j.verdict.problems or not evictable(j.facts):
                    continue  # reported only: nothing to roll to, or nothing would bring the pod back
                if runtime.annotation(self.config.domain.skills_rollout) != ROLLOUT_EVICT:
                    continue
                candidates.setdefault(key, []).append(j)
        for key in list(self._rollouts):
            rollout = self._rollouts[key]
            if key in candidates or (rollout.evicted_uid and now - rollout.evicted_at < self.config.rollout_timeout):
                continue  # still rolling, or its last replacement may still be on its way
            self._set_blocked(key, False)
            del self._rollouts[key]
        for key, stale in candidates.items():
            rollout = self._rollouts.setdefault(key, Rollout())
            members = pods.members(key)
            if self._may_evict(rollout, members, now):
                self._evict_one(key, rollout, min(stale, key=lambda j: j.facts.name), members, now)

    def _may_evict(self, rollout: Rollout, members: list[Judged], now: float) -> bool:
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

    def _evict_one(self, key: RuntimeKey, rollout: Rollout, target: Judged, members: list[Judged], now: float) -> None:
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
                self._blocked(key, rollout, target, now, describe(err))
            elif err.status == 404:
                self._count(GONE)  # gone already: nothing to wait for
            else:
                self._count(FAILED)
                self._retry_later(rollout, now)
                log.warning("evicting pod %s/%s failed: %s", facts.namespace, facts.name, describe(err))
            return
        except Exception as err:  # noqa: BLE001 - connection trouble: try again later
            self._count(FAILED)
            self._retry_later(rollout, now)
            log.warning("evicting pod %s/%s failed: %s", facts.namespace, facts.name, describe(err))
            return
        self._count(EVICTED)
        rollout.evicted_uid, rollout.evicted_name, rollout.evicted_at = facts.uid, facts.name, now
        rollout.before = frozenset(j.facts.uid for j in members)
        rollout.failures = 0
        self._set_blocked(key, False)
        log.info("evicted stale pod %s/%s (%s)", facts.namespace, facts.name, "; ".join(target.verdict.differences),
                 extra={"fields": {"namespace": facts.namespace, "pod": facts.name,
                                   "agentRuntime": target.verdict.agent_runtime}})

    def _blocked(self, key: RuntimeKey, rollout: Rollout, target: Judged, now: float, why: str) -> None:
        delay = self._retry_later(rollout, now)
        self._set_blocked(key, True)
        facts = target.facts
        log.warning("rollout of AgentRuntime %s/%s blocked evicting %s: %s; retrying in %.0fs",
                    key[0], key[1], facts.name, why, delay)
        runtime = target.verdict.runtime
        last = self._last_blocked_event.get(key)
        if runtime is not None and (last is None or now - last >= self.config.event_interval):
            message = (f"evicting stale pod {facts.name} was refused by a PodDisruptionBudget ({why}); "
                       f"the rollout of this AgentRuntime's pods waits and retries in {delay:.0f}s")
            if self._emit(runtime, REASON_BLOCKED, "Warning", message):
                self._last_blocked_event[key] = now

    def _retry_later(self, rollout: Rollout, now: float) -> float:
        delay = min(self.config.retry_max, self.config.retry_initial * (2 ** min(rollout.failures, 20)))
        rollout.failures += 1
        rollout.retry_at = now + delay
        return delay

    def _set_blocked(self, key: RuntimeKey, blocked: bool) -> None:
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


def describe(err: Exception) -> str:
    if isinstance(err, ApiException):
        import json

        try:
            message = json.loads(err.body).get("message", "") if isinstance(err.body, str) else ""
        except (ValueError, AttributeError):
            message = ""
        return f"HTTP {err.status} {err.reason}" + (f": {message}" if message else "")
    return f"{type(err).__name__}: {err}"
