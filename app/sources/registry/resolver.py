"""The skill image resolver: registry lookups off the admission path (README "Skill images and registries").

One asyncio loop on a daemon thread resolves every wanted reference (digest, mountability, skill
metadata, signature), re-resolves each every `interval`, and publishes the results into a
`SupplyCache`: an immutable mapping replaced in one assignment, so `/mutate` reads it without a lock
and never waits for a registry. Requests in flight are bounded by `concurrency`; a registry that
fails (down, stalling, 5xx, refusing our credentials) is backed off exponentially, per registry,
while the others go on; the last known digest of a reference is kept through failures. One lookup
is app.sources.registry.lookup; when each reference is due again is app.sources.registry.schedule.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from app.core.registry_facts import ImageFacts, SupplyCache

from app.sources.registry.cosign import CosignKey, load_keys
from app.sources.registry.lookup import resolve_image, resolve_many
from app.sources.registry.client import RegistryClient
from app.sources.registry.schedule import BACKOFF_KINDS, Schedule

__all__ = ["BACKOFF_KINDS", "ResolverHooks", "SkillImageResolver", "resolve_image", "resolve_many"]

log = logging.getLogger(__name__)

_PUBLISH_EVERY = 0.5  # results wait at most this long before readers see them...
_PUBLISH_BATCH = 256  # ...or until this many wait
_WANTED_GAP = 0.5  # notifications closer together than this share one read of wanted()
_WANTED_EVERY_MIN = 10.0  # without notifications, wanted() is read again every max(interval, this)
_WORK_AHEAD = 4  # scheduled re-resolutions queued ahead, per worker


def _noop(*_: Any) -> None:
    return None


@dataclass
class ResolverHooks:
    """Metrics callbacks (plain callables, so this layer needs no metrics library).

    on_resolution(result, registry, seconds): result is "ok" or an error kind (not_found,
    unauthorized, timeout, unreachable, server_error, tls, bad_response, invalid);
    on_cached(count): references with a known digest; on_signature(verdict)."""

    on_resolution: Callable[[str, str, float], None] = _noop
    on_cached: Callable[[int], None] = _noop
    on_signature: Callable[[str], None] = _noop


class SkillImageResolver:
    """Keeps a SupplyCache of every wanted skill image reference, in the background.

    References come from `want()` (added, resolved at once when new) and, when given, from the
    `wanted` callable (the full set: read when `notify()` is called, e.g. from an AgentRuntime index
    listener, and at least every `max(interval, 10 s)`; references no longer wanted are dropped).

    The loop holds one scheduler and `concurrency` workers. New and refreshed references go to the
    front of the work queue; every other re-resolution waits for its own time, `interval` after the
    last one give or take 10 %, so 10,000 images at 5 min are about 33 lookups a second rather than a
    burst of 10,000 every 5 minutes, and a re-resolution pace above twice that average is held back.
    Re-resolutions also stop while the thread has used more than a tenth of a core (an HTTP lookup
    costs about a millisecond of CPU here): this thread shares the GIL with admission, so with more
    images than that allows per interval they fall behind (`behind` says by how long) rather than
    slow `/mutate` down. New and refreshed references are never held back.
    Results reach readers in batches (one mapping swap at most every 0.5 s, or per 256 results; a
    lookup with the same answer as the last publishes nothing and keeps the same object), so
    the work per resolution stays constant whatever the number of images, and the thread sleeps when
    nothing is due."""

    def __init__(
        self,
        client_factory: Callable[[], RegistryClient],
        *,
        interval: float = 300.0,
        concurrency: int = 8,
        verify: bool = False,
        keys: Sequence[CosignKey] = (),
        wanted: Callable[[], Iterable[str]] | None = None,
        hooks: ResolverHooks | None = None,
        backoff_base: float = 1.0,
        backoff_max: float | None = None,
        cache: SupplyCache | None = None,
    ) -> None:
        self._client_factory = client_factory
        self.interval = max(float(interval), 0.01)
        self.concurrency = max(int(concurrency), 1)
        self.verify = verify
        self.keys = tuple(keys)
        self._wanted_fn = wanted
        self.hooks = hooks or ResolverHooks()
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max if backoff_max is not None else max(self.interval, backoff_base)
        self.cache = cache or SupplyCache()
        self._explicit: set[str] = set()
        self._refresh: set[str] = set()
        self._lock = threading.Lock()  # writers of _explicit/_refresh only; readers of facts never lock
        # Everything below belongs to the resolver's loop thread.
        self._wanted_set: set[str] = set()
        self._wanted_stale = True  # set by notify() from any thread: read wanted() again
        self._wanted_read_at = -math.inf
        # Wanted references that are neither queued nor in flight, by due time; backoff per registry.
        self._schedule = Schedule(self.interval, self.concurrency, backoff_base=backoff_base,
                                  backoff_max=self.backoff_max, on_set=self._due_earlier)
        self._queued: set[str] = set()  # waiting in a work queue or being resolved
        self._inflight: set[str] = set()
        self._again: set[str] = set()  # refresh asked for while in flight: resolve once more at once
        self._urgent: deque[str] = deque()  # new and refreshed references
        self._work: deque[str] = deque()  # scheduled re-resolutions
        self._idle: deque[asyncio.Future[None]] = deque()  # workers waiting for work
        self._pending: dict[str, ImageFacts] = {}  # results readers do not see yet
        self._prune = False
        self._publish_handle: asyncio.TimerHandle | None = None
        self._digests = 0
        self._sleep_until = math.inf
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._notified = False
        self._stopping = False
        self.cycles = 0  # scheduler passes
        self.publishes = 0  # mapping swaps
        self.resolutions = 0  # registry lookups finished
        self.wanted_reads = 0  # calls of the wanted callable

    @property
    def behind(self) -> float:
        """Seconds the most overdue re-resolution has waited (0: keeping up with the interval)."""
        return self._schedule.behind

    @classmethod
    def from_settings(
        cls, settings: Any, *, wanted: Callable[[], Iterable[str]] | None = None,
        hooks: ResolverHooks | None = None, cache: SupplyCache | None = None,
    ) -> "SkillImageResolver":
        """From the serve settings: resolve_interval, resolve_concurrency, resolve_timeout,
        registry_auth, registry_ca, insecure, verify_signatures, cosign_keys. Raises CosignKeyError
        for a key file that cannot be used (a startup error)."""
        verify = settings.verify_signatures != "off"
        keys = load_keys(settings.cosign_keys) if verify else ()
        auth: Path | None = settings.registry_auth
        ca: Path | None = settings.registry_ca
        insecure, timeout = tuple(settings.insecure), float(settings.resolve_timeout)

        def factory() -> RegistryClient:
            return RegistryClient(auth_file=auth, ca_file=ca, insecure=insecure, timeout=timeout)

        return cls(
            factory, interval=settings.resolve_interval, concurrency=settings.resolve_concurrency,
            verify=verify, keys=keys, wanted=wanted, hooks=hooks, cache=cache,
        )

    # -- what /mutate and validation read (lock-free) ----------------------------------------------

    def facts(self, reference: str) -> ImageFacts | None:
        return self.cache.facts(reference)

    def snapshot(self) -> Mapping[str, ImageFacts]:
        return self.cache.snapshot()

    # -- what the AgentRuntime listeners call ------------------------------------------------------

    def want(self, references: Iterable[str], *, refresh: bool = False) -> None:
        """Add references (new ones are resolved at once); refresh=True re-resolves them now."""
        refs = set(references)
        with self._lock:
            self._explicit |= refs
            if refresh:
                self._refresh |= refs
        self.notify()

    def set_wanted(self, references: Iterable[str]) -> None:
        """Replace the explicit set of references (those no longer wanted are dropped)."""
        with self._lock:
            self._explicit = set(references)
        self.notify()

    def notify(self) -> None:
        """The wanted references may have changed. Cheap from any thread: notifications that
        arrive before the loop has looked share one wake-up and one read of `wanted`."""
        self._wanted_stale = True
        if self._notified:
            return
        self._notified = True
        self._poke()

    def _poke(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(wake.set)
            except RuntimeError:
                pass  # the loop is closing: nothing left to wake

    def start(self) -> None:
        if self._thread is not None:
            return
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), name="skill-resolver", daemon=True)
        self._thread.start()
        started.wait(5.0)

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping = True
        self._poke()
        if self._thread is not None:
            self._thread.join(timeout)

    def wait_for(self, predicate: Callable[["SkillImageResolver"], bool], timeout: float) -> bool:
        """Poll until predicate(self) holds (tests, startup); False after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self):
                return True
            time.sleep(0.02)
        return predicate(self)

    # -- the loop ---------------------------------------------------------------------------------

    def _run(self, started: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main(started))
        except Exception:  # the resolver must never take serve down; it logs and stops
            log.exception("skill image resolver stopped")
        finally:
            self._loop = None
            loop.close()

    async def _main(self, started: threading.Event) -> None:
        loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._digests = sum(1 for f in self.cache.snapshot().values() if f.digest)
        self._schedule.reset_clock()
        started.set()
        client = self._client_factory()
        workers = [loop.create_task(self._worker(client)) for _ in range(self.concurrency)]
        try:
            while not self._stopping:
                self._wake.clear()
                self._notified = False  # from here on a notify() wakes us again
                now = time.monotonic()
                try:
                    self._step(now)
                except Exception:
                    log.exception("skill image resolver cycle failed; retrying")
                self.cycles += 1
                await self._sleep(self._next_wake(time.monotonic()))
        finally:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            self._flush()
            await client.aclose()

    async def _sleep(self, delay: float) -> None:
        assert self._wake is not None
        if self._wake.is_set() or self._stopping:
            return
        delay = max(delay, 0.001)
        self._sleep_until = time.monotonic() + delay
        handle = asyncio.get_running_loop().call_later(delay, self._wake.set)
        try:
            await self._wake.wait()
        finally:
            handle.cancel()
            self._sleep_until = math.inf

    def _wanted_every(self) -> float:
        return max(self.interval, _WANTED_EVERY_MIN)

    def _step(self, now: float) -> None:
        if (self._wanted_stale and now >= self._wanted_read_at + _WANTED_GAP) \
                or now >= self._wanted_read_at + self._wanted_every():
            self._read_wanted(now)
        self._dispatch(now)

    def _next_wake(self, now: float) -> float:
        deadline = self._wanted_read_at + self._wanted_every()
        if self._wanted_stale:
            deadline = min(deadline, self._wanted_read_at + _WANTED_GAP)
        due = self._schedule.next_due(now, len(self._wanted_set))
        if due is not None:
            deadline = min(deadline, due)
        return deadline - now

    # -- what is wanted ---------------------------------------------------------------------------

    def _read_wanted(self, now: float) -> None:
        self._wanted_stale = False  # before reading: a notify() during the read asks again
        self._wanted_read_at = now
        with self._lock:
            refs = set(self._explicit)
            refresh, self._refresh = self._refresh, set()
        if self._wanted_fn is not None:
            self.wanted_reads += 1
            try:
                refs.update(self._wanted_fn())
            except Exception:
                log.exception("could not list wanted skill images; using the last known")
                refs |= self._wanted_set
        if refs != self._wanted_set:
            for gone in self._wanted_set - refs:
                self._schedule.discard(gone)
                self._pending.pop(gone, None)
                self._again.discard(gone)
            new = sorted(ref for ref in refs - self._wanted_set if ref not in self._queued)
            self._wanted_set = refs
            for ref in new:
                self._enqueue(ref, urgent=True)
        for ref in refresh & refs:
            if ref in self._inflight:
                self._again.add(ref)
            elif ref not in self._queued:
                self._schedule.discard(ref)
                self._enqueue(ref, urgent=True)
        snapshot = self.cache.snapshot()
        if len(snapshot) > len(refs) or any(ref not in refs for ref in snapshot):
            self._prune = True
            self._flush()

    # -- scheduling -------------------------------------------------------------------------------

    def _dispatch(self, now: float) -> None:
        room = _WORK_AHEAD * self.concurrency - len(self._work)
        for ref in self._schedule.take_due(now, len(self._wanted_set), max(room, 0)):
            self._enqueue(ref, urgent=False)

    def _enqueue(self, ref: str, *, urgent: bool) -> None:
        self._queued.add(ref)
        (self._urgent if urgent else self._work).append(ref)
        while self._idle:
            waiter = self._idle.popleft()
            if not waiter.done():
                waiter.set_result(None)
                break

    def _due_earlier(self, at: float) -> None:
        if at < self._sleep_until and self._wake is not None:
            self._wake.set()

    # -- the workers ------------------------------------------------------------------------------

    async def _worker(self, client: RegistryClient) -> None:
        loop = asyncio.get_running_loop()
        while True:
            queue = self._urgent or self._work
            if not queue:
                waiter = loop.create_future()
                self._idle.append(waiter)
                await waiter
                continue
            ref = queue.popleft()
            if ref not in self._wanted_set:
                self._queued.discard(ref)
                continue
            self._inflight.add(ref)
            try:
                await self._resolve(client, ref)
            except Exception:
                log.exception("skill image %s: resolving failed; trying again next interval", ref)
                if ref in self._wanted_set:
                    self._schedule.set(ref, time.monotonic() + self.interval)
            finally:
                self._inflight.discard(ref)
                self._queued.discard(ref)

    async def _resolve(self, client: RegistryClient, ref: str) -> None:
        previous = self._pending.get(ref) or self.cache.facts(ref)
        registry = previous.registry if previous is not None else ImageFacts.unresolved(ref).registry
        started = time.monotonic()
        until = self._schedule.blocked_until(registry)
        if until > started:
            # Another reference just found this registry failing: wait with the rest.
            self._schedule.set(ref, until)
            return
        facts = await resolve_image(client, ref, verify=self.verify, keys=self.keys, previous=previous)
        seconds = time.monotonic() - started
        self.resolutions += 1
        self._call(self.hooks.on_resolution, facts.error_kind or "ok", facts.registry or "invalid", seconds)
        if self.verify and facts.error is None:
            self._call(self.hooks.on_signature, facts.signature)
        if facts.error:
            log.warning("skill image %s: %s", ref, facts.error)
        if ref not in self._wanted_set:
            return  # dropped while we asked
        again = ref in self._again
        self._again.discard(ref)
        self._schedule.after(ref, facts, again=again)
        if facts == previous:
            return  # the same answer: readers keep the same object (and memos keyed on it hold)
        self._pending[ref] = facts
        if len(self._pending) >= _PUBLISH_BATCH or (
            not self._urgent and not self._work and len(self._inflight) <= 1 and ref not in self.cache.snapshot()
        ):
            # A full batch, or the first facts of a new reference with nothing else under way.
            self._flush()
        elif self._publish_handle is None:
            self._publish_handle = asyncio.get_running_loop().call_later(_PUBLISH_EVERY, self._flush)

    # -- publishing -------------------------------------------------------------------------------

    def _flush(self) -> None:
        """Publish the waiting results (and drop unwanted references) in one mapping swap."""
        if self._publish_handle is not None:
            self._publish_handle.cancel()
            self._publish_handle = None
        if not self._pending and not self._prune:
            return
        updates, self._pending = self._pending, {}
        old = self.cache.snapshot()
        digests = self._digests
        for ref, facts in updates.items():
            before = old.get(ref)
            digests += (facts.digest is not None) - (before is not None and before.digest is not None)
        if self._prune:
            keep = self._wanted_set
            digests -= sum(1 for ref, facts in old.items() if ref not in keep and ref not in updates and facts.digest)
            self.cache.publish(updates, keep=keep)
            self._prune = False
        else:
            self.cache.publish(updates)
        self._digests = digests
        self.publishes += 1
        self._call(self.hooks.on_cached, digests)

    def _call(self, hook: Callable[..., None], *args: Any) -> None:
        try:
            hook(*args)
        except Exception:
            log.exception("resolver metrics hook failed")
