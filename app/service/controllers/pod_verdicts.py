"""What the stale-pod reconciler knows about every pod it judged, kept up to date one pod at a time.

A pass must cost what changed, not what is cached (README "When skills change"): putting one verdict in
or taking one out updates, in O(1), the indexes every later step reads: the pods of each namespace (an
AgentRuntime change re-judges its namespace), the stale pods per AgentRuntime (what an Event reports) and the gauge's counts, with the labels
and AgentRuntimes whose numbers moved since they were last published.
"""

from __future__ import annotations

from typing import Any, Iterator

from app.core.staleness.rollout import PodFacts, pod_facts
from app.core.staleness.pods import Staleness

PodKey = tuple[str, str]  # (namespace, pod name)
RuntimeKey = tuple[str, str]  # (namespace, AgentRuntime name)


class Judged:
    """One pod's verdict, with the pod object it was made from and what a rollout reads of it (kept for
    a pod dict; read from a compact record's own fields when asked, which costs less than keeping it)."""

    __slots__ = ("pod", "_facts", "verdict")

    def __init__(self, pod: Any, verdict: Staleness) -> None:
        self.pod = pod
        self._facts = pod_facts(pod) if isinstance(pod, dict) else None
        self.verdict = verdict

    @property
    def facts(self) -> PodFacts:
        return self._facts if self._facts is not None else pod_facts(self.pod)

    @property
    def stale(self) -> bool:
        """Stale and not on its way out already (a terminating pod is neither counted nor rolled)."""
        return self.verdict.stale and not self.facts.deleting

    @property
    def label(self) -> tuple[str, str]:
        """The gauge's (namespace, agentruntime)."""
        return (self.facts.namespace, self.verdict.agent_runtime)

    @property
    def runtime_key(self) -> RuntimeKey | None:
        """The AgentRuntime the pod answers to now; None when none matches."""
        verdict = self.verdict
        return (verdict.namespace, verdict.agent_runtime) if verdict.runtime is not None else None


class JudgedPods:
    """Every judged pod by key, with the indexes above kept in step by `put`."""

    def __init__(self) -> None:
        self._judged: dict[PodKey, Judged] = {}
        self._namespaces: dict[str, set[PodKey]] = {}
        self._stale: dict[RuntimeKey | None, dict[PodKey, Judged]] = {}  # None: no AgentRuntime matches
        self.counts: dict[tuple[str, str], int] = {}
        # Moved since the caller last took them (`take_labels`, `take_runtimes`).
        self._labels_moved: set[tuple[str, str]] = set()
        self._runtimes_moved: set[RuntimeKey] = set()

    def __len__(self) -> int:
        return len(self._judged)

    def __contains__(self, key: PodKey) -> bool:
        return key in self._judged

    def get(self, key: PodKey) -> Judged | None:
        return self._judged.get(key)

    def items(self) -> Iterator[tuple[PodKey, Judged]]:
        return iter(list(self._judged.items()))

    def keys(self) -> list[PodKey]:
        return list(self._judged)

    def key_set(self) -> set[PodKey]:
        return set(self._judged)

    def in_namespace(self, namespace: str) -> set[PodKey]:
        return set(self._namespaces.get(namespace, ()))

    def members(self, runtime: RuntimeKey) -> list[Judged]:
        """Every judged pod the AgentRuntime matches now, stale or not (read from its namespace's pods: only
        a rollout asks, and an index per AgentRuntime would cost memory for every pod)."""
        judged = [self._judged[key] for key in self._namespaces.get(runtime[0], ())]
        return [j for j in judged if j.runtime_key == runtime]

    def stale_of(self, runtime: RuntimeKey | None) -> list[Judged]:
        return list(self._stale.get(runtime, {}).values())

    def stale_runtimes(self) -> list[RuntimeKey]:
        return [key for key in self._stale if key is not None]

    def all_stale(self) -> Iterator[Judged]:
        for pods in list(self._stale.values()):
            yield from pods.values()

    def take_labels(self) -> set[tuple[str, str]]:
        moved, self._labels_moved = self._labels_moved, set()
        return moved

    def take_runtimes(self) -> set[RuntimeKey]:
        moved, self._runtimes_moved = self._runtimes_moved, set()
        return moved

    def put(self, key: PodKey, judged: Judged | None) -> None:
        """Set (or with None, forget) one pod's verdict."""
        old = self._judged.pop(key, None)
        if old is not None:
            self._unlink(key, old)
        if judged is None:
            return
        self._judged[key] = judged
        self._namespaces.setdefault(key[0], set()).add(key)
        runtime = judged.runtime_key
        if judged.stale:
            self._stale.setdefault(runtime, {})[key] = judged
            label = judged.label
            self.counts[label] = self.counts.get(label, 0) + 1
            self._labels_moved.add(label)
            if runtime is not None:
                self._runtimes_moved.add(runtime)

    def _unlink(self, key: PodKey, old: Judged) -> None:
        keys = self._namespaces.get(key[0])
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._namespaces[key[0]]
        runtime = old.runtime_key
        if old.stale:
            _discard(self._stale, runtime, key)
            label = old.label
            left = self.counts.get(label, 0) - 1
            if left > 0:
                self.counts[label] = left
            else:
                self.counts.pop(label, None)
            self._labels_moved.add(label)
            if runtime is not None:
                self._runtimes_moved.add(runtime)


def _discard(groups: dict[Any, dict[PodKey, Judged]], group: Any, key: PodKey) -> None:
    pods = groups.get(group)
    if pods is not None:
        pods.pop(key, None)
        if not pods:
            del groups[group]
