"""The skill image resolver: registry lookups off the admission path (README "Skill images and registries").

One asyncio loop on a daemon thread resolves every wanted reference (digest, mountability, skill
metadata, signature), re-resolves each every `interval`, and publishes the results into a
`SupplyCache`: an immutable mapping replaced in one assignment, so `/mutate` reads it without a lock
and never waits for a registry. Requests in flight are bounded by `concurrency`; a registry that
fails (down, stalling, 5xx, refusing our credentials) is backed off exponentially, per registry,
while the others go on; the last known digest of a reference is kept through failures.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from app.core.supply import (
    ImageFacts,
    SupplyCache,
    annotations_of,
    choose_platform_entry,
    config_media_type,
    index_entry_mountability,
    is_index,
    manifest_mountability,
    skill_metadata,
)
from app.core.validation.oci import parse_reference

from .cosign import CosignKey, load_keys, verify_image
from .registry import RegistryClient, RegistryError

log = logging.getLogger(__name__)

# Failures that say the registry (not one reference) is in trouble: back off from it.
BACKOFF_KINDS = frozenset({"timeout", "unreachable", "server_error", "tls", "unauthorized"})
_PUBLISH_EVERY = 0.05


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


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


async def resolve_image(
    client: RegistryClient,
    reference: str,
    *,
    verify: bool = False,
    keys: Sequence[CosignKey] = (),
    previous: ImageFacts | None = None,
) -> ImageFacts:
    """What the registry says about `reference` now. Never raises for registry trouble: the
    result carries `error`, and keeps `previous`'s digest and facts when there were any."""
    base = previous if previous is not None else ImageFacts.unresolved(reference)
    if base.error_kind == "invalid":
        return base
    parsed = parse_reference(reference)
    registry, repository = parsed.registry, parsed.repository
    try:
        if parsed.digest is not None:
            manifest = await client.get_manifest(registry, repository, parsed.digest)
        else:
            manifest = await client.get_manifest(registry, repository, parsed.tag or "latest")
        facts = await _describe(client, base, registry, repository, manifest)
    except RegistryError as exc:
        text = str(exc)
        if exc.kind == "not_found" and base.digest is not None and parsed.digest is None:
            text = "tag no longer resolves"
        return base.with_error(exc.kind, text, _now())
    if not verify:
        return replace(facts, signature="off", signature_reason="")
    verdict, reason = await verify_image(client, registry, repository, facts.digest or "", keys)
    if verdict == "unknown" and previous is not None and previous.digest == facts.digest \
            and previous.signature in ("verified", "unverified"):
        # A registry hiccup on the signature tag does not undo what we verified for these bytes.
        verdict, reason = previous.signature, previous.signature_reason
    return replace(facts, signature=verdict, signature_reason=reason)


async def _describe(client: RegistryClient, base: ImageFacts, registry: str, repository: str, manifest) -> ImageFacts:
    annotations = annotations_of(manifest.document)
    config_type = ""
    if is_index(manifest.media_type, manifest.document):
        entry = choose_platform_entry(manifest.document)
        decision = index_entry_mountability(entry)
        if decision is None and entry is not None:
            child = await client.get_manifest(registry, repository, entry["digest"])
            decision = manifest_mountability(str(entry.get("mediaType", "")), child.document)
            config_type = config_media_type(child.document)
            # Skill annotations usually sit on the image manifest; the index's own win where both say.
            annotations = {**annotations_of(child.document), **annotations}
    else:
        decision = manifest_mountability(manifest.media_type, manifest.document)
        config_type = config_media_type(manifest.document)
    return replace(
        base,
        digest=manifest.digest,
        media_type=manifest.media_type,
        config_media_type=config_type,
        mountable=decision.mountable,
        mount_reason=decision.reason,
        error=None,
        error_kind=None,
        resolved_at=_now(),
        annotations=annotations,
        **skill_metadata(annotations),
    )


class SkillImageResolver:
    """Keeps a SupplyCache of every wanted skill image reference, in the background.

    References come from `want()` (added, resolved at once when new) and, when given, from the
    `wanted` callable (the full set, read every cycle; references no longer wanted are dropped).
    `notify()` wakes the loop, e.g. from an AgentRuntime index listener."""

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
        self._next_at: dict[str, float] = {}
        self._failures: dict[str, int] = {}
        self._backoff_until: dict[str, float] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.cycles = 0

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
        self.notify()
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
        self._wake = asyncio.Event()
        started.set()
        client = self._client_factory()
        try:
            while not self._stopping:
                self._wake.clear()
                try:
                    await self._cycle(client)
                except Exception:
                    log.exception("skill image resolver cycle failed; retrying")
                self.cycles += 1
                delay = max(0.0, min(self._next_due() - time.monotonic(), self.interval))
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=max(delay, 0.01))
                except asyncio.TimeoutError:
                    pass
        finally:
            await client.aclose()

    def _wanted(self) -> set[str]:
        with self._lock:
            refs = set(self._explicit)
            refresh, self._refresh = self._refresh, set()
        if self._wanted_fn is not None:
            try:
                refs |= set(self._wanted_fn())
            except Exception:
                log.exception("could not list wanted skill images; using the last known")
                refs |= set(self.cache.snapshot())
        for ref in refresh:
            self._next_at.pop(ref, None)
        return refs

    def _next_due(self) -> float:
        return min(self._next_at.values(), default=time.monotonic() + self.interval)

    async def _cycle(self, client: RegistryClient) -> None:
        wanted = self._wanted()
        if set(self.cache.snapshot()) - wanted:
            self.cache.publish({}, keep=wanted)
        for gone in set(self._next_at) - wanted:
            del self._next_at[gone]
        now = time.monotonic()
        due = sorted(ref for ref in wanted if self._next_at.get(ref, 0.0) <= now)
        if due:
            semaphore = asyncio.Semaphore(self.concurrency)
            tasks = {asyncio.ensure_future(self._one(client, semaphore, ref)) for ref in due}
            while tasks:
                done, tasks = await asyncio.wait(tasks, timeout=_PUBLISH_EVERY, return_when=asyncio.FIRST_COMPLETED)
                results = [t.result() for t in done if not t.cancelled() and t.result() is not None]
                if results:
                    self.cache.publish(dict(results), keep=wanted)
                if self._stopping:
                    for task in tasks:
                        task.cancel()
                    break
        self._call(self.hooks.on_cached, sum(1 for f in self.cache.snapshot().values() if f.digest))

    async def _one(self, client: RegistryClient, semaphore: asyncio.Semaphore, ref: str) -> tuple[str, ImageFacts] | None:
        async with semaphore:
            previous = self.cache.facts(ref)
            registry = previous.registry if previous else ImageFacts.unresolved(ref).registry
            now = time.monotonic()
            until = self._backoff_until.get(registry, 0.0)
            if until > now:
                # Another reference just found this registry failing: wait with the rest.
                self._next_at[ref] = until
                return None
            started = time.monotonic()
            facts = await resolve_image(client, ref, verify=self.verify, keys=self.keys, previous=previous)
            seconds = time.monotonic() - started
        self._call(self.hooks.on_resolution, facts.error_kind or "ok", facts.registry or "invalid", seconds)
        if self.verify and facts.error is None:
            self._call(self.hooks.on_signature, facts.signature)
        self._schedule(ref, facts)
        if facts.error:
            log.warning("skill image %s: %s", ref, facts.error)
        return ref, facts

    def _schedule(self, ref: str, facts: ImageFacts) -> None:
        now = time.monotonic()
        kind = facts.error_kind
        if kind in BACKOFF_KINDS:
            failures = self._failures.get(facts.registry, 0) + 1
            self._failures[facts.registry] = failures
            delay = min(self.backoff_base * 2 ** (failures - 1), self.backoff_max)
            self._backoff_until[facts.registry] = now + delay
            self._next_at[ref] = now + delay
            return
        if kind is None:
            self._failures.pop(facts.registry, None)
            self._backoff_until.pop(facts.registry, None)
        self._next_at[ref] = now + (float("inf") if kind == "invalid" else self.interval)

    def _call(self, hook: Callable[..., None], *args: Any) -> None:
        try:
            hook(*args)
        except Exception:
            log.exception("resolver metrics hook failed")


async def resolve_many(
    client: RegistryClient, references: Iterable[str], *, verify: bool = False,
    keys: Sequence[CosignKey] = (), concurrency: int = 8,
) -> list[ImageFacts]:
    """Resolve references once, in order (the `inspect` command)."""
    semaphore = asyncio.Semaphore(max(concurrency, 1))

    async def one(ref: str) -> ImageFacts:
        async with semaphore:
            return await resolve_image(client, ref, verify=verify, keys=keys)

    return list(await asyncio.gather(*(one(ref) for ref in references)))
