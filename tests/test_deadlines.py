"""BodyDeadlines: one sweep cancels the body reads past their deadline (408), and nothing else."""

from __future__ import annotations

import asyncio
import time

import pytest

from app.service.http.deadlines import BodyDeadlines


async def _value_after(seconds: float, value: str = "body") -> str:
    await asyncio.sleep(seconds)
    return value


def test_a_read_in_time_returns_its_value_and_leaves_no_timer_behind():
    async def main() -> None:
        deadlines = BodyDeadlines(0.5)
        assert await deadlines.read(_value_after(0.01)) == "body"
        await asyncio.sleep(deadlines.tick * 2)
        assert deadlines._timer is None and not deadlines._waiting

    asyncio.run(main())


def test_a_stalled_read_times_out_between_the_timeout_and_one_tick_later():
    async def main() -> float:
        deadlines = BodyDeadlines(0.3)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await deadlines.read(_value_after(10))
        return time.monotonic() - started

    elapsed = asyncio.run(main())
    assert 0.3 <= elapsed < 0.3 + 0.03 + 0.5  # tick 0.03 s, plus generous slack for a busy machine


def test_only_the_late_reads_of_many_are_cut():
    async def main() -> list[object]:
        deadlines = BodyDeadlines(0.3)
        reads = [deadlines.read(_value_after(0.05 if i % 2 else 5, str(i))) for i in range(200)]
        return await asyncio.gather(*reads, return_exceptions=True)

    results = asyncio.run(main())
    assert all(r == str(i) for i, r in enumerate(results) if i % 2)
    assert all(isinstance(r, TimeoutError) for i, r in enumerate(results) if not i % 2)


def test_a_cancellation_that_is_not_ours_stays_a_cancellation():
    async def main() -> None:
        deadlines = BodyDeadlines(5)
        task = asyncio.ensure_future(deadlines.read(_value_after(10)))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not deadlines._waiting

    asyncio.run(main())
