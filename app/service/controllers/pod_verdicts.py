"""The stale-pod reconciler's verdicts, and the gauge's counts kept in step with them.

Putting one verdict in or taking one out updates, in O(1), the stale count per (namespace,
agentruntime) and remembers which counts moved since the gauge was last published.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from app.core.staleness.pods import Staleness
from app.sources.kube.pods import PodSummary

PodKey = tuple[str, str]  # (namespace, pod name)
RuntimeKey = tuple[str, str]  # (namespace, AgentRuntime name)


@dataclass(frozen=True, slots=True)
class Judged:
    """One pod, and the verdict made on it."""

    pod: PodSummary
    verdict: Staleness

    @property
    def stale(self) -> bool:
        """Stale and not on its way out already (a terminating pod is neither counted nor rolled)."""
        return self.verdict.stale and not self.pod.deleting

    @property
    def label(self) -> tuple[str, str]:
        """The gauge's (namespace, agentruntime)."""
        return (self.pod.namespace, self.verdict.agent_runtime)

    @property
    def runtime_key(self) -> RuntimeKey | None:
        """The AgentRuntime the pod answers to now; None when none matches."""
        verdict = self.verdict
        return (verdict.namespace, verdict.agent_runtime) if verdict.runtime is not None else None


class Verdicts:
    """The last verdict on every judged pod, with the stale counts per gauge label."""

    def __init__(self) -> None:
        self._judged: dict[PodKey, Judged] = {}
        self.counts: dict[tuple[str, str], int] = {}
        self._moved: set[tuple[str, str]] = set()  # labels whose count moved since `take_moved`

    def __len__(self) -> int:
        return len(self._judged)

    def get(self, key: PodKey) -> Judged | None:
        return self._judged.get(key)

    def stale(self) -> Iterator[Staleness]:
        return (j.verdict for j in list(self._judged.values()) if j.stale)

    def take_moved(self) -> set[tuple[str, str]]:
        moved, self._moved = self._moved, set()
        return moved

    def put(self, key: PodKey, judged: Judged | None) -> None:
        """Set (or with None, forget) one pod's verdict."""
        old = self._judged.pop(key, None)
        if old is not None and old.stale:
            self._count(old.label, -1)
        if judged is not None:
            self._judged[key] = judged
            if judged.stale:
                self._count(judged.label, 1)

    def _count(self, label: tuple[str, str], step: int) -> None:
        value = self.counts.get(label, 0) + step
        if value > 0:
            self.counts[label] = value
        else:
            self.counts.pop(label, None)
        self._moved.add(label)
