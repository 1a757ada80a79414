"""The one back-off of the project: how long to wait after a run of failures.

The reflector between failed watches, the work queue between failed attempts at a key (a registry
lookup, an eviction a disruption budget refused): each waits `base * 2**failures`, capped at `cap`,
half of it fixed and half random ("equal jitter"), so that replicas and keys that failed together do
not retry in step.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    base: float
    cap: float
    rng: random.Random = field(default_factory=random.Random)
    # Failures so far, for a loop that backs off alone (`next_delay`, `reset`); the work queue counts
    # failures per key and asks `delay` directly.
    failures: int = 0

    def delay(self, failures: int) -> float:
        ceiling = min(self.cap, self.base * 2 ** min(failures, 30))
        return ceiling / 2 + self.rng.uniform(0, ceiling / 2)

    def next_delay(self) -> float:
        self.failures += 1
        return self.delay(self.failures - 1)

    def reset(self) -> None:
        self.failures = 0
