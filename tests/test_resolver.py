"""The background resolver: moved tags picked up within an interval, failures recorded, registry faults
backed off per reference while a missing tag is retried at the interval, bounded concurrency, lookups
that never wait for a registry, resyncs that drop unwanted references, and a cost per image that stays
the same with thousands of them. Time is a fake clock where the test is about when lookups happen."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from collections import Counter
from types import SimpleNamespace

import httpx
import pytest

from app.core import registry_facts as supply
from app.core.registry_facts import ImageFacts, ImageFactsCache
from app.sources.registry.client import REGISTRY_FAULTS, Manifest, RegistryClient, RegistryError
from app.sources.registry.resolver import ResolverHooks, SkillImageResolver
from tests.fake_clock import FakeClock
from tests.registry_harness import (
    Layout,
    Registry,
    StallingServer,
    shared_registries,
    skillimage,
)
from tests.polling import wait_until


class CountingCache(ImageFactsCache):
    """Counts the facts written: a lookup with the same answer as the last writes nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def put(self, reference: str, facts: ImageFacts) -> None:
        self.writes += 1
        super().put(reference, facts)


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.results: Counter[tuple[str, str]] = Counter()
        self.signatures: Counter[str] = Counter()

    def hooks(self) -> ResolverHooks:
        def on_resolution(result: str, registry: str, seconds: float) -> None:
            assert seconds >= 0
            with self.lock:
                self.results[(result, registry)] += 1
        return ResolverHooks(on_resolution, lambda v: self.signatures.update([v]))

    def count(self, result: str, registry: str) -> int:
        with self.lock:
            return self.results[(result, registry)]

    def total(self) -> int:
        with self.lock:
            return sum(self.results.values())


def make_resolver(insecure: list[str], recorder: Recorder | None = None, **kwargs) -> SkillImageResolver:
    timeout = kwargs.pop("timeout", 2.0)
    kwargs.setdefault("interval", 0.5)
    kwargs.setdefault("backoff_base", 0.5)
    return SkillImageResolver(
        lambda: RegistryClient(insecure=insecure, timeout=timeout),
        hooks=recorder.hooks() if recorder else None, **kwargs,
    )


@pytest.fixture
def layout(tmp_path) -> Layout:
    return Layout(tmp_path / "oci")


@pytest.mark.registry
def test_a_moved_tag_is_picked_up_within_one_interval(layout) -> None:
    plain = shared_registries().plain
    ref = f"{plain.host}/moving/skill:latest"
    first = layout.tag(skillimage(layout, "moving", "1.0.0"), "one")
    second = layout.tag(skillimage(layout, "moving", "2.0.0"), "two")
    plain.push(layout, "one", "moving/skill", dest_tag="latest")
    recorder = Recorder()
    resolver = make_resolver([plain.host], recorder, interval=1.0)
    resolver.start()
    try:
        resolver.want([ref])
        assert wait_until(lambda: (resolver.facts(ref) or SimpleNamespace(digest=None)).digest == first, 10)
        plain.push(layout, "two", "moving/skill", dest_tag="latest")
        moved_at = time.monotonic()
        assert wait_until(lambda: resolver.facts(ref).digest == second, 10)
        seen_after = time.monotonic() - moved_at
        assert resolver.facts(ref).version == "2.0.0"
        assert seen_after < 1.0 + 4.0  # one interval, and generous slack for a busy machine
        assert recorder.count("ok", plain.host) >= 2 and [f.digest for f in resolver.snapshot().values()] == [second]
    finally:
        resolver.stop()


@pytest.mark.registry
def test_a_tag_that_stops_resolving_keeps_its_digest(layout) -> None:
    plain = shared_registries().plain
    ref = f"{plain.host}/archived/skill:v1"
    digest = layout.tag(skillimage(layout, "archived", "1.0.0"), "v1")
    plain.push(layout, "v1", "archived/skill")
    recorder = Recorder()
    resolver = make_resolver([plain.host], recorder)
    resolver.start()
    try:
        resolver.want([ref])
        assert wait_until(lambda: resolver.facts(ref) is not None and resolver.facts(ref).digest == digest, 10)
        deleted = httpx.delete(f"{plain.url}/v2/archived/skill/manifests/{digest}")
        assert deleted.status_code == 202
        assert wait_until(lambda: resolver.facts(ref).error is not None, 10)
        facts = resolver.facts(ref)
        assert (facts.error, facts.digest, facts.tag_gone) == ("tag no longer resolves", digest, True)
        assert facts.pinned_reference.endswith(digest) and facts.mountable is True
        assert recorder.count("not_found", plain.host) >= 1
    finally:
        resolver.stop()


@pytest.mark.registry
def test_a_registry_going_down_is_recorded_and_recovered(layout, tmp_path) -> None:
    own = Registry(tmp_path / "reg", tls=False, auth=False).start()
    try:
        ref = f"{own.host}/skills/s:v1"
        digest = layout.tag(skillimage(layout, "s", "1.0.0"), "v1")
        own.push(layout, "v1", "skills/s")
        recorder = Recorder()
        resolver = make_resolver([own.host], recorder, interval=0.2, backoff_base=0.5, backoff_max=2.0)
        resolver.start()
        try:
            resolver.want([ref])
            assert wait_until(lambda: resolver.facts(ref) is not None and resolver.facts(ref).digest == digest, 10)
            own.stop()
            assert wait_until(lambda: resolver.facts(ref).error_kind == "unreachable", 10)
            assert resolver.facts(ref).digest == digest  # still pins what it was
            assert recorder.count("unreachable", own.host) >= 1
            own.restart()
            assert wait_until(lambda: resolver.facts(ref).error is None, 10)
            assert resolver.facts(ref).digest == digest
        finally:
            resolver.stop()
    finally:
        own.stop()


class ScriptedRegistry:
    """A registry client answering from memory, by repository: an image manifest, or the RegistryError
    of the kind set in `failing`; records (fake-clock time, repository) of every request."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.manifest = Manifest.parse(MANIFEST_BODY, supply.OCI_MANIFEST)
        self.failing: dict[str, str] = {}
        self.asked: list[tuple[float, str]] = []

    async def get_manifest(self, registry: str, repository: str, reference: str) -> Manifest:
        self.asked.append((self.clock.now(), repository))
        kind = self.failing.get(repository)
        if kind is not None:
            raise RegistryError(kind, "tag not found" if kind == "not_found" else f"failing: {kind}")
        return self.manifest

    def count(self, repository: str) -> int:
        return sum(1 for _, repo in self.asked if repo == repository)

    async def aclose(self) -> None:
        return None


@pytest.fixture
def scripted():
    """A resolver (interval 100 s, back-off 4 s doubling to 32 s) on a ScriptedRegistry and a fake clock,
    its worker turned by the test: `step(seconds)` moves the clock and looks up whatever came due."""
    clock = FakeClock()
    registry = ScriptedRegistry(clock)
    resolver = SkillImageResolver(lambda: registry, interval=100.0, backoff_base=4.0, backoff_max=32.0,
                                  clock=clock)
    loop = asyncio.new_event_loop()

    def step(seconds: float) -> None:
        clock.advance(seconds)
        while len(resolver.queue):
            resolver.process_next(loop, registry)

    try:
        yield resolver, registry, step
    finally:
        loop.close()


def test_a_registry_fault_backs_off_a_missing_tag_waits_an_interval(scripted) -> None:
    resolver, registry, step = scripted
    registry.failing = {f"fault/{kind}": kind for kind in REGISTRY_FAULTS} | {"missing/s": "not_found"}
    refs = [f"r.example/{repo}:v1" for repo in registry.failing]
    resolver.want(refs)
    step(0)
    assert all(registry.count(repo) == 1 for repo in registry.failing)
    assert resolver.facts("r.example/missing/s:v1").error == "tag not found"
    assert resolver.facts("r.example/fault/unauthorized:v1").error_kind == "unauthorized"
    # Back-off: 4, 8, 16, 32 s (each between half of that and all of it); a missing tag is this
    # reference's own problem: looked up again one interval later, like a good one.
    elapsed = 0.0
    for attempt, ceiling in enumerate((4, 8, 16, 32), start=2):
        step(ceiling / 2 - 0.01)
        assert all(registry.count(f"fault/{kind}") == attempt - 1 for kind in REGISTRY_FAULTS)
        step(ceiling / 2 + 0.01)
        elapsed += ceiling
        assert all(registry.count(f"fault/{kind}") == attempt for kind in REGISTRY_FAULTS)
    assert registry.count("missing/s") == 1
    step(112 - elapsed)
    assert registry.count("missing/s") == 2
    # Capped at 32 s; a registry that answers again is back to the interval.
    registry.failing = {}
    step(32)
    step(32)
    assert resolver.facts("r.example/fault/timeout:v1").error is None
    recovered = max(at for at, repo in registry.asked if repo == "fault/timeout")
    before = registry.count("fault/timeout")
    step(recovered + 89 - resolver.clock.now())
    assert registry.count("fault/timeout") == before


def test_re_resolutions_come_one_interval_later_spread_and_an_invalid_reference_never(scripted) -> None:
    resolver, registry, step = scripted
    resolver.cache = CountingCache()
    refs = [f"r.example/skills/s{i:03d}:v1" for i in range(200)]
    resolver.want([*refs, "UPPER/Case:v1"])
    step(0)
    assert len(resolver.snapshot()) == len(refs) + 1 and resolver.facts("UPPER/Case:v1").error_kind == "invalid"
    first = dict(resolver.snapshot())
    written = resolver.cache.writes
    for _ in range(130):  # 260 s in 2 s steps
        step(2)
    resolver.resync()  # queues every reference again: each waits for its own time
    step(0)
    asked: dict[str, list[float]] = {}
    for at, repo in registry.asked:
        asked.setdefault(repo, []).append(at)
    assert len(asked) == len(refs) and all(len(times) >= 2 for times in asked.values())
    # The first re-check (after the start-up burst) anywhere in half to one and a half intervals...
    first_gaps = sorted(times[1] - times[0] for times in asked.values())
    assert first_gaps[0] >= 50 and first_gaps[-1] <= 150 + 2 and first_gaps[-1] - first_gaps[0] >= 50
    # ... and every later one an interval after the last lookup, give or take 10 %, not all at once.
    later_gaps = sorted(b - a for times in asked.values() for a, b in zip(times[1:], times[2:]))
    assert later_gaps and later_gaps[0] >= 90 and later_gaps[-1] <= 110 + 2 and later_gaps[-1] - later_gaps[0] >= 10
    # The same answers again: nothing written, readers keep the very same objects.
    assert resolver.cache.writes == written
    assert all(resolver.facts(ref) is facts for ref, facts in first.items())


@pytest.mark.registry
def test_wrong_credentials_are_recorded(tmp_path) -> None:
    secure = shared_registries().secure
    ref = f"{secure.host}/skills/none:v1"
    wrong = secure.docker_config(tmp_path / "config.json", password="wrong")
    recorder = Recorder()
    resolver = SkillImageResolver(
        lambda: RegistryClient(auth_file=wrong, ca_file=secure.ca_file, timeout=2.0),
        interval=0.5, hooks=recorder.hooks(),
    )
    resolver.start()
    try:
        resolver.want([ref])
        assert wait_until(lambda: resolver.facts(ref) is not None, 10)
        assert resolver.facts(ref).error == "401 unauthorized"
        assert recorder.count("unauthorized", secure.host) >= 1
    finally:
        resolver.stop()


@pytest.mark.slow
def test_lookups_stay_instant_while_the_registry_stalls() -> None:
    stall = StallingServer()
    try:
        refs = [f"{stall.host}/skills/s{i}:v1" for i in range(12)]
        recorder = Recorder()
        resolver = make_resolver([stall.host], recorder, timeout=1.5, concurrency=3, backoff_base=5.0)
        resolver.start()
        try:
            resolver.want(refs)
            assert wait_until(lambda: len(stall.accepted) >= 1, 10)
            assert len(stall.accepted) <= 3  # bounded concurrency: three workers, one lookup each
            started = time.perf_counter()
            for i in range(10_000):
                resolver.facts(refs[i % len(refs)])
            elapsed = time.perf_counter() - started
            assert elapsed < 0.5, elapsed
            assert wait_until(lambda: recorder.count("timeout", stall.host) >= 1, 10)
            assert any(resolver.facts(ref) is not None and resolver.facts(ref).error_kind == "timeout" for ref in refs)
        finally:
            resolver.stop()
    finally:
        stall.stop()


@pytest.mark.registry
def test_a_resync_drops_references_no_longer_wanted_and_failing_hooks_do_not_stop_it(layout) -> None:
    plain = shared_registries().plain
    digest = layout.tag(skillimage(layout, "w", "1.0.0"), "v1")
    plain.push(layout, "v1", "wanted/a")
    plain.push(layout, "v1", "wanted/b")
    a, b = f"{plain.host}/wanted/a:v1", f"{plain.host}/wanted/b:v1"
    wanted = {a, b}

    def broken(*_):
        raise RuntimeError("metrics broke")

    resolver = SkillImageResolver(
        lambda: RegistryClient(insecure=[plain.host], timeout=2.0), interval=0.3,
        wanted=lambda: set(wanted), hooks=ResolverHooks(broken, broken),
    )
    resolver.start()  # the first resync reads what is wanted
    try:
        assert wait_until(lambda: all(resolver.facts(r) and resolver.facts(r).digest == digest for r in (a, b)), 10)
        wanted.discard(a)
        resolver.resync()
        assert resolver.facts(a) is None and resolver.facts(b).digest == digest
        plain.push(layout, "v1", "wanted/c")
        c = f"{plain.host}/wanted/c:v1"
        resolver.want([c])  # still going: a new reference is looked up
        assert wait_until(lambda: resolver.facts(c) is not None and resolver.facts(c).digest == digest, 10)
    finally:
        resolver.stop(timeout=20)  # generous: the whole suite may be running on two busy cores
    assert not any(thread.is_alive() for thread in resolver._threads)


def test_from_settings(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("SKILL_WEBHOOK_RESOLVE_INTERVAL", raising=False)  # tests/conftest.py turns it off
    from app.service.settings import Settings
    from tests.registry_harness import new_cosign_key

    _, key = new_cosign_key(tmp_path, "k")
    settings = Settings(resolve_interval="2s", resolve_concurrency=3, resolve_timeout="750ms",
                        insecure_registries="a.local:5000, b.local", verify_signatures="enforce", cosign_key=str(key))
    resolver = SkillImageResolver.from_settings(settings)
    assert (resolver.interval, resolver.concurrency, resolver.verify, len(resolver.keys)) == (2.0, 3, True, 1)
    client = resolver._client_factory()
    assert client.timeout == 0.75 and client.insecure == {"a.local:5000", "b.local"}
    off = SkillImageResolver.from_settings(Settings())
    assert off.verify is False and off.keys == () and off.interval == 300.0


# -- cost: what a large number of images costs the process ---------------------------------------

MANIFEST_BODY = json.dumps({
    "schemaVersion": 2, "mediaType": supply.OCI_MANIFEST,
    "config": {"mediaType": supply.OCI_CONFIG, "digest": "sha256:" + "c" * 64, "size": 2},
    "layers": [], "annotations": {supply.TITLE: "fast", supply.VERSION: "1.0.0"},
}, separators=(",", ":")).encode()
MANIFEST_DIGEST = "sha256:" + hashlib.sha256(MANIFEST_BODY).hexdigest()


class FastRegistry:
    """A stand-in registry on its own asyncio loop: keep-alive HTTP/1.1, every manifest request
    answered at once with one image manifest (with `changing`, a new version every 0.2 s); logs
    (monotonic time, path) of each request."""

    def __init__(self, changing: bool = False) -> None:
        self.requests: list[tuple[float, str]] = []
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    method, path, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
                    self.requests.append((time.monotonic(), path))
                    body = MANIFEST_BODY if "/manifests/" in path else b"{}"
                    if changing:
                        body = body.replace(b'"1.0.0"', f'"1.0.{int(time.monotonic() * 5)}"'.encode())
                    writer.write((f"HTTP/1.1 200 OK\r\nContent-Type: {supply.OCI_MANIFEST}\r\n"
                                  f"Content-Length: {len(body)}\r\n\r\n").encode()
                                 + (b"" if method == "HEAD" else body))
            except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
                writer.close()

        async def main() -> None:
            self.server = await asyncio.start_server(serve, "127.0.0.1", 0)
            self.host = f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
            ready.set()
            await self.server.serve_forever()

        self.thread = threading.Thread(target=lambda: self._run(main()), daemon=True)
        self.thread.start()
        assert ready.wait(10)

    def _run(self, main) -> None:
        try:
            self.loop.run_until_complete(main)
        except asyncio.CancelledError:
            pass

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(lambda: [t.cancel() for t in asyncio.all_tasks(self.loop)])
        self.thread.join(5)


class InstantRegistry:
    """Answers manifests from memory (after one loop turn): no HTTP, so what is measured is the
    resolver's own work per resolution."""

    def __init__(self) -> None:
        self.manifest = Manifest.parse(MANIFEST_BODY, supply.OCI_MANIFEST)

    async def get_manifest(self, registry: str, repository: str, reference: str) -> Manifest:
        await asyncio.sleep(0)
        return self.manifest

    async def aclose(self) -> None:
        return None


def resolve_all(count: int) -> tuple[float, Recorder, SkillImageResolver]:
    refs = [f"fast.example/skills/s{i:05d}:v1" for i in range(count)]
    reads = [0]

    def wanted() -> list[str]:
        reads[0] += 1
        return refs

    recorder = Recorder()
    resolver = SkillImageResolver(InstantRegistry, interval=300.0, wanted=wanted, hooks=recorder.hooks(),
                                  cache=CountingCache())
    started = time.process_time()
    resolver.start()
    try:
        assert wait_until(lambda: len(resolver.snapshot()) == count, 120)
        return time.process_time() - started, recorder, resolver
    finally:
        resolver.stop()
        assert reads[0] == 1  # read once at start, never per lookup


def test_a_pass_over_many_references_costs_the_same_per_reference() -> None:
    small_cpu, _, _ = resolve_all(800)
    large_cpu, recorder, resolver = resolve_all(6400)
    per_small, per_large = small_cpu / 800, large_cpu / 6400
    assert per_large < 3 * per_small + 0.0005, (per_small, per_large)
    assert recorder.total() == 6400
    assert resolver.cache.writes == 6400  # each result written once, as it comes
    assert all(f.digest == MANIFEST_DIGEST and f.mountable for f in resolver.snapshot().values())


@pytest.mark.slow
def test_many_references_over_http_then_nothing_until_they_are_due() -> None:
    registry = FastRegistry()
    try:
        count = 2000
        refs = [f"{registry.host}/skills/s{i:05d}:v1" for i in range(count)]
        clock = FakeClock()
        recorder = Recorder()
        resolver = SkillImageResolver(lambda: RegistryClient(insecure=[registry.host], timeout=5.0),
                                      interval=300.0, wanted=lambda: refs, hooks=recorder.hooks(), clock=clock)
        started = time.monotonic()
        resolver.start()
        try:
            assert wait_until(lambda: len(resolver.snapshot()) == count, 120)
            elapsed = time.monotonic() - started
            assert elapsed < 60, elapsed  # about 1-3 s here; a generous bound for a busy machine
            assert {f.digest for f in resolver.snapshot().values()} == {MANIFEST_DIGEST}
            assert wait_until(lambda: recorder.total() == count, 10)
            # The start-up burst's first re-checks are spread over half to one and a half intervals:
            # nothing is due before half the interval, about half of them by one interval, all by 1.5.
            clock.advance(0.49 * 300)
            assert len(resolver.queue) == 0 and len(registry.requests) == count
            clock.advance(0.51 * 300)
            assert wait_until(lambda: len(registry.requests) >= count + 0.35 * count, 60)
            assert len(registry.requests) <= count + 0.65 * count
            clock.advance(0.51 * 300)
            assert wait_until(lambda: len(registry.requests) == 2 * count, 60)
        finally:
            resolver.stop()
    finally:
        registry.stop()


@pytest.mark.slow
def test_readers_never_miss_a_reference_while_results_land() -> None:
    registry = FastRegistry(changing=True)
    try:
        kept = [f"{registry.host}/skills/keep{i:04d}:v1" for i in range(600)]
        dropped = [f"{registry.host}/skills/drop{i:04d}:v1" for i in range(300)]
        wanted = set(kept) | set(dropped)
        recorder = Recorder()
        resolver = SkillImageResolver(lambda: RegistryClient(insecure=[registry.host], timeout=5.0),
                                      interval=0.3, wanted=lambda: set(wanted), hooks=recorder.hooks(),
                                      cache=CountingCache())
        stop = threading.Event()
        problems: list[str] = []
        snapshots = [0]

        def reader() -> None:
            seen: set[str] = set()
            while not stop.is_set():
                snap = resolver.snapshot()
                snapshots[0] += 1
                missing = [r for r in kept if r in seen and r not in snap]
                if missing:
                    problems.append(f"{len(missing)} kept references vanished, e.g. {missing[0]}")
                    return
                if any(facts.reference != ref for ref, facts in snap.items()):
                    problems.append("a reference mapped to another's facts")
                    return
                seen.update(r for r in kept if r in snap)

        thread = threading.Thread(target=reader)
        resolver.start()
        thread.start()
        try:
            assert wait_until(lambda: len(resolver.snapshot()) == len(wanted), 60)
            writes = resolver.cache.writes
            assert wait_until(lambda: resolver.cache.writes >= writes + 4, 30)  # re-resolutions land
            wanted.difference_update(dropped)
            resolver.resync()
            assert set(resolver.snapshot()) == set(kept)
            writes = resolver.cache.writes
            assert wait_until(lambda: resolver.cache.writes >= writes + 4, 30)
            assert set(resolver.snapshot()) == set(kept)
        finally:
            stop.set()
            thread.join(10)
            resolver.stop()
        assert problems == [] and snapshots[0] > 100
    finally:
        registry.stop()
