"""A clock for tests: time moves only when the test says so (`advance`), and whatever waits on it
(a work queue's `get`, a reflector's back-off) wakes to look at the new time."""

from __future__ import annotations

import threading
import weakref

from app.sources.clock import Clock

# A waiter re-reads the time at least this often in real seconds: a safety net for a notification that
# raced with the waiter's first registration, never what a test relies on.
_RECHECK = 0.05


class FakeClock(Clock):
    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._lock = threading.Lock()
        self._conditions: weakref.WeakSet[threading.Condition] = weakref.WeakSet()
        self._ticks = threading.Condition()

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds
            conditions = list(self._conditions)
        for condition in [*conditions, self._ticks]:
            with condition:
                condition.notify_all()

    def wait(self, condition: threading.Condition, timeout: float | None) -> None:
        if timeout is not None and timeout <= 0:
            return
        with self._lock:
            self._conditions.add(condition)
        condition.wait(_RECHECK)

    def sleep(self, seconds: float, stop: threading.Event) -> bool:
        deadline = self._now + seconds
        with self._ticks:
            while not stop.is_set() and self._now < deadline:
                self._ticks.wait(_RECHECK)
        return stop.is_set()
