"""Time, passed in: everything that reads the time or waits on it takes a Clock.

Controllers, the work queue, the reflector and the resolver never call `time.monotonic()` or sleep
themselves, so a test hands them a fake clock and steps it forward instead of sleeping (client-go
injects `clock.Clock` the same way).
"""

from __future__ import annotations

import threading
import time


class Clock:
    """Monotonic seconds, and the two ways this project waits on them."""

    def now(self) -> float:
        return time.monotonic()

    def wait(self, condition: threading.Condition, timeout: float | None) -> None:
        """Wait on `condition` (held by the caller) until it is notified or `timeout` seconds passed."""
        condition.wait(timeout)

    def sleep(self, seconds: float, stop: threading.Event) -> bool:
        """Sleep `seconds` or until `stop` is set; True when it was set."""
        return stop.wait(max(0.0, seconds))
