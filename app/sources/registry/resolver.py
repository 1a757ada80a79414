"""The skill image resolver: registry lookups off the admission path (docs/registries.md).

The shape is the reconciler's, client-go's controller: the key is an image reference. The AgentRuntime
index's handler queues the images of an AgentRuntime that appeared or changed; a resync every
`max(interval, 10 s)` queues every wanted reference again and drops the facts of references nobody
wants any more. `concurrency` workers, each on its own thread with its own event loop and registry
client, take one reference at a time and look it up (app.sources.registry.lookup): digest,
mountability, skill metadata, signature. A reference looked up is due again `interval` later, give or
take 10 %, and the first re-check after a reference's first lookup anywhere in half to one and a half
intervals (so the burst of 10,000 images at start becomes about 33 lookups a second at 5 min); one whose
registry failed (down, stalling, 5xx, refusing our credentials) comes back after the work queue's
back-off instead. A reference queued before it is due waits for its own time: a resync costs a dict
read per reference. The number of workers and the interval are what bound the load on registries.

Results go into an `ImageFactsCache`, which `/mutate` reads without a lock and never waits for a
registry. A lookup with the same answer as the last changes nothing (readers keep the same object).
The last known digest of a reference is kept through failures.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from app.core.model import AgentRuntime
from app.core.registry_facts import ImageFacts, ImageFactsCache

from app.sources.backoff import Backoff
from app.sources.clock import Clock
from app.sources.registry.client import REGISTRY_FAULTS, RegistryClient
from app.sources.registry.cosign import CosignKey, load_keys
from app.sources.registry.lookup import resolve_image
from app.sources.workqueue import WorkQueue

log = logging.getLogger(__name__)

JITTER = 0.1  # each re-resolution lands interval * (1 ± this) after the last one
FIRST_SPREAD = 0.5  # ... and the first one interval * (1 ± this) after the first lookup
RESYNC_MIN = 10.0  # wanted references are read again every max(interval, this)


def _noop(*_: Any) -> None:
    return None


@dataclass
class ResolverHooks:
    """Metrics callbacks (plain callables, so this layer needs no metrics library).

    on_resolution(result, registry, seconds): result is "ok" or an error kind (not_found,
    unauthorized, timeout, unreachable, server_error, tls, bad_response, invalid);
    on_signature(verdict)."""

    on_resolution: Callable[[str, str, float], None] = _noop
    on_signature: Callable[[str], None] = _noop


class SkillImageResolver:
    """Keeps an ImageFactsCache of every wanted skill image reference, in the background.

    References come from `want()` (the index handler `runtime_changed` calls it) and from the `wanted`
    callable, the full set, read at every resync."""

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
        cache: ImageFactsCache | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._client_factory = client_factory
        self.interval = max(float(interval), 0.01)
        self.concurrency = max(int(concurrency), 1)
        self.verify = verify
        self.keys = tuple(keys)
        self._wanted_fn = wanted
        self.hooks = hooks or ResolverHooks()
        self.cache = cache if cache is not None else ImageFactsCache()
        self.clock = clock or Clock()
        self._rng = rng or random.Random()
        cap = backoff_max if backoff_max is not None else max(self.interval, backoff_base)
        self.queue: WorkQueue[str] = WorkQueue(clock=self.clock, backoff=Backoff(backoff_base, cap, self._rng))
        self._lock = threading.Lock()  # the two below, and writing the cache; readers of facts never lock
        self._wanted: set[str] = set()
        self._due: dict[str, float] = {}  # when each reference looked up is due again (inf: never)
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    @classmethod
    def from_settings(
        cls, settings: Any, *, wanted: Callable[[], Iterable[str]] | None = None,
        hooks: ResolverHooks | None = None, cache: ImageFactsCache | None = None,
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

    def snapshot(self) -> dict[str, ImageFacts]:
        return self.cache.snapshot()

    # -- handlers and resync -----------------------------------------------------------------------

    def want(self, references: Iterable[str]) -> None:
        """Queue references (a new one is looked up at once; a known one waits for its own time)."""
        refs = set(references)
        with self._lock:
            self._wanted |= refs
        for ref in refs:
            self.queue.add(ref)

    def runtime_changed(self, old: AgentRuntime | None, new: AgentRuntime | None) -> None:
        """The AgentRuntime index's handler: an AgentRuntime's images are wanted from now on."""
        if new is not None:
            self.want(skill.image for skill in new.spec.skills)

    def resync(self) -> None:
        """Read the wanted references again: drop the facts of those gone, queue every one."""
        if self._wanted_fn is not None:
            try:
                wanted = set(self._wanted_fn())
            except Exception:  # noqa: BLE001 - keep what is known; the next resync tries again
                log.exception("could not list wanted skill images; keeping the last known")
                return
            with self._lock:
                self._wanted = wanted
                for gone in self._due.keys() - wanted:
                    del self._due[gone]
                self.cache.keep_only(wanted)
        with self._lock:
            refs = list(self._wanted)
        for ref in refs:
            self.queue.add(ref)

    # -- the workers ---------------------------------------------------------------------------------

    def start(self) -> None:
        if self._threads:
            return
        self._threads = [threading.Thread(target=self._work, name=f"skill-resolver-{i}", daemon=True)
                         for i in range(self.concurrency)]
        self._threads.append(threading.Thread(target=self._resync_loop, name="skill-resolver-resync", daemon=True))
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self.queue.shutdown()
        for thread in self._threads:
            thread.join(timeout)

    def _resync_loop(self) -> None:
        self.resync()
        while not self.clock.sleep(max(self.interval, RESYNC_MIN), self._stopping):
            self.resync()

    def _work(self) -> None:
        loop = asyncio.new_event_loop()
        client = self._client_factory()
        try:
            while self.process_next(loop, client):
                pass
        finally:
            loop.run_until_complete(client.aclose())
            loop.close()

    def process_next(self, loop: asyncio.AbstractEventLoop, client: RegistryClient) -> bool:
        """One turn of a worker (its own event loop and client): take a reference, waiting for one, and
        sync it; False once the queue is shut down."""
        ref = self.queue.get()
        if ref is None:
            return False
        try:
            self._sync(loop, client, ref)
        except Exception:  # noqa: BLE001 - the worker must survive anything; the key comes back
            log.exception("skill image %s: resolving failed", ref)
            self.queue.add_rate_limited(ref)
        finally:
            self.queue.done(ref)
        return True

    def _sync(self, loop: asyncio.AbstractEventLoop, client: RegistryClient, ref: str) -> None:
        """Look `ref` up when it is due; schedule its next lookup; publish what changed."""
        now = self.clock.now()
        with self._lock:
            wanted, due = ref in self._wanted, self._due.get(ref, -math.inf)
        if not wanted:
            self.queue.forget(ref)
            return
        if now < due:
            if due != math.inf:
                self.queue.add_after(ref, due - now)  # early (a resync, another AgentRuntime): wait
            return
        previous = self.cache.facts(ref)
        facts = loop.run_until_complete(resolve_image(client, ref, verify=self.verify, keys=self.keys,
                                                      previous=previous))
        done = self.clock.now()
        self._call(self.hooks.on_resolution, facts.error_kind or "ok", facts.registry or "invalid", done - now)
        if self.verify and facts.error is None:
            self._call(self.hooks.on_signature, facts.signature)
        if facts.error:
            log.warning("skill image %s: %s", ref, facts.error)
        if facts.error_kind in REGISTRY_FAULTS:
            delay = self.queue.add_rate_limited(ref)
        else:
            self.queue.forget(ref)
            # The first lookups come in a burst (every image of every AgentRuntime at start): the first
            # re-check of an image found is spread over a whole interval, so the burst does not come back
            # every interval. (A tag not found waits one interval, like any later re-check.)
            first = previous is None and facts.error is None
            low, high = (1 - FIRST_SPREAD, 1 + FIRST_SPREAD) if first else (1 - JITTER, 1 + JITTER)
            delay = math.inf if facts.error_kind == "invalid" else self.interval * self._rng.uniform(low, high)
            if delay != math.inf:
                self.queue.add_after(ref, delay)
        with self._lock:
            if ref not in self._wanted:
                return  # dropped while we asked
            self._due[ref] = done + delay
            if facts != previous:  # the same answer: readers keep the same object
                self.cache.put(ref, facts)

    def _call(self, hook: Callable[..., None], *args: Any) -> None:
        try:
            hook(*args)
        except Exception:  # noqa: BLE001 - a broken metrics hook must not stop the resolver
            log.exception("resolver metrics hook failed")
