"""The work queue: de-duplication, keys added while processed, delayed and rate-limited re-adds, the one
back-off, blocking `get` and shutdown; time stepped with a fake clock."""

from __future__ import annotations

import random
import threading

from app.sources.backoff import Backoff
from app.sources.workqueue import WorkQueue
from tests.fake_clock import FakeClock
from tests.polling import wait_until


def queue(**kwargs) -> tuple[WorkQueue[str], FakeClock]:
    clock = FakeClock()
    return WorkQueue(clock=clock, **kwargs), clock


def drain(q: WorkQueue[str]) -> list[str]:
    taken = []
    while len(q):
        key = q.get()
        taken.append(key)
        q.done(key)
    return taken


def test_a_key_added_while_queued_is_queued_once_in_order() -> None:
    q, _ = queue()
    for key in ("a", "b", "a", "c", "b"):
        q.add(key)
    assert len(q) == 3 and drain(q) == ["a", "b", "c"]


def test_a_key_added_while_processed_comes_back_after_done_never_to_two_workers() -> None:
    q, _ = queue()
    q.add("a")
    assert q.get() == "a"
    q.add("a")
    q.add("a")
    assert len(q) == 0  # not handed out while a worker has it
    q.done("a")
    assert drain(q) == ["a"] and len(q) == 0


def test_add_after_waits_for_the_clock_and_keeps_the_earliest_time() -> None:
    q, clock = queue()
    q.add_after("a", 10)
    q.add_after("a", 30)  # later: the earlier time stands
    q.add_after("b", 5)
    q.add_after("c", 0)  # now
    assert drain(q) == ["c"]
    clock.advance(5)
    assert drain(q) == ["b"]
    clock.advance(5)
    assert drain(q) == ["a"]
    clock.advance(60)
    assert drain(q) == []  # the superseded time does not fire again
    q.add_after("a", 20)
    q.add_after("a", 3)  # earlier: moves it up
    clock.advance(3)
    assert drain(q) == ["a"]


def test_rate_limited_adds_back_off_per_key_until_forgotten() -> None:
    q, clock = queue(backoff=Backoff(1.0, 8.0, random.Random(1)))
    delays = [q.add_rate_limited("a") for _ in range(6)]
    ceilings = [1, 2, 4, 8, 8, 8]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert q.failures("a") == 6 and q.failures("b") == 0
    assert q.add_rate_limited("b") <= 1.0  # another key starts from the base
    q.forget("a")
    assert q.failures("a") == 0 and q.add_rate_limited("a") <= 1.0
    clock.advance(1.0)
    assert sorted(drain(q)) == ["a", "b"]


def test_the_one_backoff_grows_is_jittered_capped_and_resets() -> None:
    backoff = Backoff(0.1, 2.0, random.Random(3))
    delays = [backoff.next_delay() for _ in range(12)]
    ceilings = [min(2.0, 0.1 * 2**n) for n in range(12)]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert len({round(d, 6) for d in delays[6:]}) > 1  # jittered, not in step
    backoff.reset()
    assert backoff.next_delay() <= 0.1


def test_get_blocks_until_a_key_is_due_and_shutdown_releases_workers() -> None:
    q, clock = queue()
    got: list[str | None] = []

    def worker() -> None:
        while (key := q.get()) is not None:
            got.append(key)
            q.done(key)
        got.append(None)

    workers = [threading.Thread(target=worker) for _ in range(2)]
    for thread in workers:
        thread.start()
    q.add_after("later", 30)
    q.add("now")
    assert wait_until(lambda: got == ["now"])
    clock.advance(29)
    q.add("other")
    assert wait_until(lambda: got == ["now", "other"])
    clock.advance(1)
    assert wait_until(lambda: got == ["now", "other", "later"])
    q.shutdown()
    for thread in workers:
        thread.join(5)
        assert not thread.is_alive()
    assert got.count(None) == 2
    q.add("ignored")
    assert len(q) == 0 and q.get() is None
