"""When the resolver looks each skill image up next (README "Skill images and registries").

Kept apart from the resolver's loop so the rules read in one place: each reference is due again
`interval` after its last lookup, give or take 10 %, so a large set never comes due as one burst;
scheduled re-resolutions are handed out in ticks, at no more than twice the average rate the interval
needs, and only while the resolver's thread stays under a tenth of a core (it shares the GIL with
admission); a registry that fails is backed off exponentially, for every reference it serves. Work
per operation is O(log N): a heap of due times with lazy deletion, never a scan of every reference.
"""

from __future__ import annotations

import heapq
import math
import random
import time
from typing import Callable

from app.core.registry_facts import ImageFacts

# Failures that say the registry (not one reference) is in trouble: back off from it.
BACKOFF_KINDS = frozenset({"timeout", "unreachable", "server_error", "tls", "unauthorized"})
TICK = 0.05  # due re-resolutions are handed out in ticks, at most this often
JITTER = 0.1  # each re-resolution lands interval * (1 ± this) after the last one
PACE = 2.0  # scheduled re-resolutions run at most this many times the average rate...
CPU_SHARE = 0.1  # ...and while the resolver's thread stays under this share of one core
CPU_WINDOW = 0.25  # seconds of that share that can be saved up, or owed


class Schedule:
    """Due times of the wanted references that are not queued or in flight, and backoff per
    registry. Used from the resolver's loop thread only. `on_set(at)` is called when a reference
    gets a due time, so the loop can wake earlier than it planned."""

    def __init__(
        self, interval: float, concurrency: int, *, backoff_base: float, backoff_max: float,
        on_set: Callable[[float], None] = lambda at: None,
    ) -> None:
        self.interval = interval
        self.concurrency = concurrency
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._on_set = on_set
        self._next_at: dict[str, float] = {}  # inf: never again (an invalid reference)
        self._heap: list[tuple[float, str]] = []  # (time, ref); live while _next_at agrees
        self._failures: dict[str, int] = {}
        self._backoff_until: dict[str, float] = {}
        self._tokens = float(concurrency)
        self._tokens_at = time.monotonic()
        self._last_tick = -math.inf
        self._cpu_credit = CPU_SHARE * CPU_WINDOW
        self._cpu_at = time.monotonic()
        self._cpu_used = time.thread_time()
        self.behind = 0.0  # seconds the most overdue re-resolution has waited (0: keeping up)

    def reset_clock(self) -> None:
        """Count CPU from the calling thread (the resolver's, once it runs) from now on."""
        self._tokens_at = self._cpu_at = time.monotonic()
        self._cpu_used = time.thread_time()

    def __contains__(self, ref: str) -> bool:
        return ref in self._next_at

    def set(self, ref: str, at: float) -> None:
        self._next_at[ref] = at
        if at != math.inf:
            heapq.heappush(self._heap, (at, ref))
            self._on_set(at)

    def discard(self, ref: str) -> None:
        self._next_at.pop(ref, None)  # its heap entry goes stale and is skipped

    def blocked_until(self, registry: str) -> float:
        """Until when a registry is backed off (0 when it is not)."""
        return self._backoff_until.get(registry, 0.0)

    def after(self, ref: str, facts: ImageFacts, *, again: bool = False) -> None:
        """Schedule a reference from its lookup's result; `again`: look it up once more at once."""
        now = time.monotonic()
        kind = facts.error_kind
        if kind in BACKOFF_KINDS:
            failures = self._failures.get(facts.registry, 0) + 1
            self._failures[facts.registry] = failures
            delay = min(self.backoff_base * 2 ** (failures - 1), self.backoff_max)
            self._backoff_until[facts.registry] = now + delay
            self.set(ref, now + delay)
            return
        if kind is None:
            self._failures.pop(facts.registry, None)
            self._backoff_until.pop(facts.registry, None)
        if again:
            self.set(ref, now)
        elif kind == "invalid":
            self.set(ref, math.inf)
        else:
            self.set(ref, now + self.interval * random.uniform(1.0 - JITTER, 1.0 + JITTER))

    def rate(self, wanted: int) -> float:
        """Scheduled re-resolutions allowed per second: twice the average the interval needs."""
        return PACE * wanted / self.interval + 1.0

    def top(self) -> float | None:
        heap, next_at = self._heap, self._next_at
        while heap:
            at, ref = heap[0]
            if next_at.get(ref) == at:
                return at
            heapq.heappop(heap)  # rescheduled, queued or dropped since
        return None

    def take_due(self, now: float, wanted: int, room: int) -> list[str]:
        """Pop the references due by `now` that this tick may hand out (at most `room`)."""
        rate = self.rate(wanted)
        self._tokens = min(max(float(self.concurrency), rate), self._tokens + (now - self._tokens_at) * rate)
        self._tokens_at = now
        cpu = time.thread_time()
        limit = CPU_SHARE * CPU_WINDOW
        credit = self._cpu_credit + CPU_SHARE * (now - self._cpu_at) - (cpu - self._cpu_used)
        self._cpu_credit = min(limit, max(-limit, credit))
        self._cpu_at, self._cpu_used = now, cpu
        taken: list[str] = []
        while self._tokens >= 1.0 and self._cpu_credit > 0.0 and len(taken) < room:
            at = self.top()
            if at is None or at > now:
                break
            _, ref = heapq.heappop(self._heap)
            del self._next_at[ref]
            self._tokens -= 1.0
            taken.append(ref)
        top = self.top()
        self.behind = now - top if top is not None and top <= now else 0.0
        if self.behind:
            self._last_tick = now  # what is still due waits for the next tick
        if len(self._heap) > 2 * len(self._next_at) + 1024:
            self._heap = [(at, ref) for ref, at in self._next_at.items() if at != math.inf]
            heapq.heapify(self._heap)
        return taken

    def next_due(self, now: float, wanted: int) -> float | None:
        """When take_due() next has something to hand out (None: nothing is scheduled)."""
        top = self.top()
        if top is None:
            return None
        due = max(top, self._last_tick + TICK)
        if self._tokens < 1.0:
            due = max(due, now + (1.0 - self._tokens) / self.rate(wanted))
        if self._cpu_credit <= 0.0:
            due = max(due, now + TICK - self._cpu_credit / CPU_SHARE)
        return due
