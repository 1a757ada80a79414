"""One timer for every request body in flight (docs/configuration.md "Service surface": 408 after 10 s).

A per-request `asyncio.timeout` schedules and cancels a timer handle on every admission: about 4 us
against 1 us here, and /mutate took 4-5 % longer in process with it (10,000 AgentRuntimes cached, side
by side). Here each request only registers its deadline in a dict; one sweep a tick (a tenth of the
timeout, at most a second) cancels the reads that are past theirs, so a body is cut between `timeout`
and `timeout + tick` after its headers.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, TypeVar

T = TypeVar("T")


class BodyDeadlines:
    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.tick = max(0.02, min(1.0, timeout / 10))
        self._waiting: dict[asyncio.Task, float] = {}
        self._expired: set[asyncio.Task] = set()
        self._timer: asyncio.TimerHandle | None = None

    async def read(self, receive: Awaitable[T]) -> T:
        """`await receive`, or TimeoutError when it has not finished `timeout` seconds from now."""
        task = asyncio.current_task()
        if task is None:  # not inside a task (never the case under uvicorn): no deadline to enforce
            return await receive
        loop = asyncio.get_running_loop()
        self._waiting[task] = loop.time() + self.timeout
        if self._timer is None:
            self._timer = loop.call_later(self.tick, self._sweep, loop)
        try:
            return await receive
        except asyncio.CancelledError:
            if task not in self._expired:
                raise  # cancelled by someone else (shutdown, client gone): not ours to turn into a 408
            self._expired.discard(task)
            task.uncancel()
            raise TimeoutError from None
        finally:
            self._waiting.pop(task, None)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for task, deadline in list(self._waiting.items()):
            if deadline <= now and task not in self._expired:
                self._expired.add(task)
                task.cancel()
        self._timer = loop.call_later(self.tick, self._sweep, loop) if self._waiting else None
