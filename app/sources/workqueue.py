"""The work queue every background controller runs on, in client-go's shape (util/workqueue).

Handlers add a key; workers `get()` one key at a time, act on what the key names as it is now, and call
`done(key)`. A key is queued at most once: one added while queued is not queued again, and one added
while a worker has it is queued again after `done`, so no two workers ever hold the same key and no
change is missed. `add_after` re-adds a key later (a key waiting is kept at its earliest time);
`add_rate_limited` re-adds it after the project's one back-off, grown by the key's failures since the
last `forget`. Time comes from the Clock passed in, so tests step it instead of sleeping.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections import deque
from typing import Generic, Hashable, TypeVar

from app.sources.backoff import Backoff
from app.sources.clock import Clock

K = TypeVar("K", bound=Hashable)


class WorkQueue(Generic[K]):
    def __init__(self, *, clock: Clock | None = None, backoff: Backoff | None = None) -> None:
        self.clock = clock or Clock()
        self.backoff = backoff or Backoff(0.005, 1000.0)  # client-go's default item back-off
        self._cond = threading.Condition()
        self._ready: deque[K] = deque()
        self._dirty: set[K] = set()  # queued, or added again while being processed
        self._processing: set[K] = set()
        self._waiting: list[tuple[float, int, K]] = []  # (when, tie-breaker, key): a heap
        self._waiting_at: dict[K, float] = {}  # the live entry of each waiting key
        self._order = itertools.count()
        self._failures: dict[K, int] = {}
        self._shutting_down = False

    def __len__(self) -> int:
        """Keys ready now (not those waiting for a later time)."""
        with self._cond:
            self._promote()
            return len(self._ready)

    def add(self, key: K) -> None:
        with self._cond:
            self._add(key)

    def add_after(self, key: K, delay: float) -> None:
        if delay <= 0:
            self.add(key)
            return
        with self._cond:
            if self._shutting_down:
                return
            at = self.clock.now() + delay
            if self._waiting_at.get(key, at + 1) <= at:
                return  # already due earlier
            self._waiting_at[key] = at
            heapq.heappush(self._waiting, (at, next(self._order), key))
            self._cond.notify()  # a worker waiting for a later key must now wake earlier

    def add_rate_limited(self, key: K) -> float:
        """Add `key` after the back-off its failures have earned; returns that delay."""
        with self._cond:
            failures = self._failures.get(key, 0)
            self._failures[key] = failures + 1
        delay = self.backoff.delay(failures)
        self.add_after(key, delay)
        return delay

    def forget(self, key: K) -> None:
        """The key succeeded: its next failure backs off from the start again."""
        with self._cond:
            self._failures.pop(key, None)

    def failures(self, key: K) -> int:
        with self._cond:
            return self._failures.get(key, 0)

    def get(self) -> K | None:
        """The next ready key, waiting for one; None once the queue is shut down."""
        with self._cond:
            while True:
                self._promote()
                if self._ready:
                    key = self._ready.popleft()
                    self._dirty.discard(key)
                    self._processing.add(key)
                    return key
                if self._shutting_down:
                    return None
                timeout = self._waiting[0][0] - self.clock.now() if self._waiting else None
                self.clock.wait(self._cond, timeout)

    def done(self, key: K) -> None:
        with self._cond:
            self._processing.discard(key)
            if key in self._dirty:
                self._ready.append(key)
                self._cond.notify()

    def shutdown(self) -> None:
        """Workers get None from now on (after the keys already ready); adds are ignored."""
        with self._cond:
            self._shutting_down = True
            self._cond.notify_all()

    # -- under the lock ----------------------------------------------------------------------------

    def _add(self, key: K) -> None:
        if self._shutting_down or key in self._dirty:
            return
        self._dirty.add(key)
        if key not in self._processing:
            self._ready.append(key)
            self._cond.notify()

    def _promote(self) -> None:
        """Move the waiting keys whose time has come to the ready queue."""
        now = self.clock.now()
        while self._waiting and self._waiting[0][0] <= now:
            at, _, key = heapq.heappop(self._waiting)
            if self._waiting_at.get(key) == at:  # else superseded by an earlier time, already handled
                del self._waiting_at[key]
                self._add(key)
