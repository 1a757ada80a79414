"""The background resolver: moved tags picked up within an interval, failures recorded and backed off
per registry, bounded concurrency, lookups that never wait for a registry, and a cost per image that
stays the same with 10,000 of them (one pass linear, batched publishes, spread re-resolutions)."""

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
from app.sources.registry.client import Manifest, RegistryClient
from app.sources.registry.resolver import ResolverHooks, SkillImageResolver
from tests.registry_harness import (
    Layout,
    Registry,
    StallingServer,
    StandInRegistry,
    shared_registries,
    skillimage,
    wait_until,
)


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.results: Counter[tuple[str, str]] = Counter()
        self.cached: list[int] = []
        self.signatures: Counter[str] = Counter()

    def hooks(self) -> ResolverHooks:
        def on_resolution(result: str, registry: str, seconds: float) -> None:
            assert seconds >= 0
            with self.lock:
                self.results[(result, registry)] += 1
        return ResolverHooks(on_resolution, self.cached.append, lambda v: self.signatures.update([v]))

    def count(self, result: str, registry: str) -> int:
        with self.lock:
            return self.results[(result, registry)]


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
        assert recorder.count("ok", plain.host) >= 2 and recorder.cached[-1] == 1
    finally:
        resolver.stop()


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


def test_a_registry_going_down_is_recorded_backed_off_and_recovered(layout, tmp_path) -> None:
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
            window_start = recorder.count("unreachable", own.host)
            time.sleep(4.0)
            attempts = recorder.count("unreachable", own.host) - window_start
            # Every 0.2 s without backoff (about 20); 0.5, 1, 2, 2 s apart with it.
            assert 1 <= attempts <= 8
            own.restart()
            assert wait_until(lambda: resolver.facts(ref).error is None, 10)
            assert resolver.facts(ref).digest == digest
        finally:
            resolver.stop()
    finally:
        own.stop()


def test_5xx_and_404_are_counted_and_5xx_is_backed_off() -> None:
    failing, missing = StandInRegistry(503), StandInRegistry(404)
    try:
        recorder = Recorder()
        refs = [f"{failing.host}/a/s:v1", f"{missing.host}/a/s:v1"]
        resolver = make_resolver([failing.host, missing.host], recorder, interval=0.2, backoff_base=0.5, backoff_max=2.0)
        resolver.start()
        try:
            resolver.want(refs)
            assert wait_until(lambda: all(resolver.facts(r) is not None for r in refs), 10)
            assert resolver.facts(refs[0]).error == "registry answered 503"
            assert resolver.facts(refs[1]).error == "tag not found"
            time.sleep(3.0)
            # 404 is this reference's problem: retried every interval; 503 is the registry's: backed off.
            assert recorder.count("server_error", failing.host) <= 6
            assert recorder.count("not_found", missing.host) >= 8
        finally:
            resolver.stop()
    finally:
        failing.stop()
        missing.stop()


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
            time.sleep(0.3)
            assert len(stall.accepted) <= 3  # bounded concurrency
            started = time.perf_counter()
            for i in range(10_000):
                resolver.facts(refs[i % len(refs)])
            elapsed = time.perf_counter() - started
            assert elapsed < 0.5, elapsed
            assert wait_until(lambda: recorder.count("timeout", stall.host) >= 1, 10)
            assert resolver.facts(refs[0]) is None or resolver.facts(refs[0]).error_kind == "timeout"
            # After the first timeouts the registry is backed off: the rest wait, no new connections.
            time.sleep(1.0)
            assert len(stall.accepted) <= 3
        finally:
            resolver.stop()
    finally:
        stall.stop()


def test_wanted_callable_drops_references_and_failing_hooks_do_not_stop_it(layout) -> None:
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
        wanted=lambda: set(wanted), hooks=ResolverHooks(broken, broken, broken),
    )
    resolver.start()
    try:
        resolver.notify()
        assert wait_until(lambda: all(resolver.facts(r) and resolver.facts(r).digest == digest for r in (a, b)), 10)
        wanted.discard(a)
        resolver.notify()
        assert wait_until(lambda: resolver.facts(a) is None, 10)
        assert resolver.facts(b).digest == digest
        cycles = resolver.cycles
        assert wait_until(lambda: resolver.cycles > cycles + 2, 10)  # still going
    finally:
        resolver.stop(timeout=20)  # generous: the whole suite may be running on two busy cores
    assert not resolver._thread.is_alive()


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


def thread_cpu(thread: threading.Thread) -> float:
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


def resolve_all(count: int, interval: float = 300.0) -> tuple[float, SkillImageResolver]:
    refs = [f"fast.example/skills/s{i:05d}:v1" for i in range(count)]
    resolver = SkillImageResolver(InstantRegistry, interval=interval, wanted=lambda: refs)
    resolver.start()
    try:
        started = thread_cpu(resolver._thread)
        resolver.notify()
        assert resolver.wait_for(lambda r: len(r.snapshot()) == count, 120)
        return thread_cpu(resolver._thread) - started, resolver
    finally:
        resolver.stop()


def test_a_pass_over_many_references_costs_the_same_per_reference() -> None:
    # One task per reference, each waited on every tick, made a pass O(N²): 8 times the references
    # then cost about 8 times as much per reference. Now each costs the same, whatever N.
    small_cpu, _ = resolve_all(800)
    large_cpu, resolver = resolve_all(6400)
    per_small, per_large = small_cpu / 800, large_cpu / 6400
    assert per_large < 3 * per_small + 0.0005, (per_small, per_large)
    assert resolver.resolutions == 6400 and resolver.wanted_reads <= 2
    # Results reach readers in batches: one mapping swap per 256 results, or per 0.5 s.
    assert resolver.publishes <= 6400 // 256 + 2 * 120 + 2
    assert all(f.digest == MANIFEST_DIGEST and f.mountable for f in resolver.snapshot().values())


def test_many_references_over_http_then_an_idle_resolver_sleeps() -> None:
    registry = FastRegistry()
    try:
        count = 2000
        refs = [f"{registry.host}/skills/s{i:05d}:v1" for i in range(count)]
        resolver = SkillImageResolver(lambda: RegistryClient(insecure=[registry.host], timeout=5.0),
                                      interval=300.0, wanted=lambda: refs)
        resolver.start()
        try:
            started = time.monotonic()
            resolver.notify()
            assert resolver.wait_for(lambda r: len(r.snapshot()) == count, 120)
            elapsed = time.monotonic() - started
            assert elapsed < 60, elapsed  # about 1-3 s here; a generous bound for a busy machine
            assert resolver.publishes <= count // 256 + elapsed / 0.5 + 3
            assert {f.digest for f in resolver.snapshot().values()} == {MANIFEST_DIGEST}
            # Nothing due for 5 minutes: the thread sleeps; wanted() is not read again.
            reads, cpu = resolver.wanted_reads, thread_cpu(resolver._thread)
            time.sleep(2.0)
            assert thread_cpu(resolver._thread) - cpu < 0.1
            assert resolver.wanted_reads == reads and len(registry.requests) == count
        finally:
            resolver.stop()
    finally:
        registry.stop()


def test_re_resolutions_are_spread_over_the_interval() -> None:
    registry = FastRegistry()
    try:
        count, interval = 200, 8.0
        refs = [f"{registry.host}/skills/s{i:05d}:v1" for i in range(count)]
        resolver = SkillImageResolver(lambda: RegistryClient(insecure=[registry.host], timeout=5.0),
                                      interval=interval, wanted=lambda: refs)
        resolver.start()
        try:
            resolver.notify()
            assert resolver.wait_for(lambda r: len(r.snapshot()) == count, 30)
            first = dict(resolver.snapshot())
            publishes = resolver.publishes
            assert wait_until(lambda: len(registry.requests) >= 2 * count, 3 * interval)
            # The same answers again: nothing published, readers keep the very same objects.
            assert resolver.publishes == publishes
            assert all(resolver.facts(ref) is facts for ref, facts in first.items())
        finally:
            resolver.stop()
        asked: dict[str, list[float]] = {}
        for at, path in registry.requests:
            asked.setdefault(path, []).append(at)
        gaps = sorted(times[1] - times[0] for times in asked.values() if len(times) >= 2)
        assert len(gaps) >= count * 0.9
        # Each one interval after its last lookup, give or take 10 % (and a little lateness)...
        assert gaps[0] >= 0.85 * interval and gaps[-1] <= 1.5 * interval, (gaps[0], gaps[-1])
        # ...and not all at the same offset: a burst of every image at once is what this avoids.
        spread = gaps[int(len(gaps) * 0.9)] - gaps[int(len(gaps) * 0.1)]
        assert spread >= 0.1 * interval, spread
    finally:
        registry.stop()


def test_readers_never_miss_a_reference_while_batches_land() -> None:
    registry = FastRegistry(changing=True)
    try:
        kept = [f"{registry.host}/skills/keep{i:04d}:v1" for i in range(600)]
        dropped = [f"{registry.host}/skills/drop{i:04d}:v1" for i in range(300)]
        wanted = set(kept) | set(dropped)
        resolver = SkillImageResolver(lambda: RegistryClient(insecure=[registry.host], timeout=5.0),
                                      interval=0.3, wanted=lambda: set(wanted))
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
            resolver.notify()
            assert resolver.wait_for(lambda r: len(r.snapshot()) == len(wanted), 60)
            publishes = resolver.publishes
            assert resolver.wait_for(lambda r: r.publishes >= publishes + 4, 30)  # re-resolutions land
            wanted.difference_update(dropped)
            resolver.notify()
            assert resolver.wait_for(lambda r: set(r.snapshot()) == set(kept), 30)
            publishes = resolver.publishes
            assert resolver.wait_for(lambda r: r.publishes >= publishes + 4, 30)
            assert set(resolver.snapshot()) == set(kept)
        finally:
            stop.set()
            thread.join(10)
            resolver.stop()
        assert problems == [] and snapshots[0] > 100
    finally:
        registry.stop()


def test_re_resolutions_keep_to_a_tenth_of_a_core_and_new_references_skip_the_line() -> None:
    # 3,000 images every 50 ms would keep the thread busy all the time (and with it the GIL that
    # admission needs): re-resolutions fall behind instead, and a new reference still goes first.
    refs = [f"fast.example/skills/s{i:05d}:v1" for i in range(3000)]
    resolver = SkillImageResolver(InstantRegistry, interval=0.05, wanted=lambda: refs)
    resolver.start()
    try:
        resolver.notify()
        assert resolver.wait_for(lambda r: len(r.snapshot()) == len(refs), 60)
        time.sleep(0.5)
        cpu, wall, done = thread_cpu(resolver._thread), time.monotonic(), resolver.resolutions
        time.sleep(3.0)
        share = (thread_cpu(resolver._thread) - cpu) / (time.monotonic() - wall)
        assert share < 0.35, share  # about 0.1; unbounded it is close to 1
        assert resolver.resolutions > done + 100  # still re-resolving, at the pace the share allows
        assert resolver.behind > 0.05
        new = "fast.example/skills/newcomer:v1"
        resolver.want([new])
        assert resolver.wait_for(lambda r: r.facts(new) is not None, 5)
    finally:
        resolver.stop()


def test_schedule_jitter_backoff_and_pace() -> None:
    from app.core.registry_facts import ImageFacts
    from app.sources.registry.schedule import Schedule

    woken: list[float] = []
    schedule = Schedule(10.0, 4, backoff_base=1.0, backoff_max=4.0, on_set=woken.append)
    ok = ImageFacts.unresolved("r.io/a/s:v1")
    now = time.monotonic()
    for i in range(200):
        schedule.after(f"r.io/a/s{i}:v1", ok)
    offsets = sorted(at - now for at in woken)
    assert 9.0 <= offsets[0] and offsets[-1] <= 11.0 + 1.0 and offsets[-1] - offsets[0] > 1.0
    down = ok.with_error("unreachable", "unreachable: refused", None)
    delays = []
    for _ in range(5):
        schedule.after("r.io/a/s0:v1", down)
        delays.append(round(schedule.blocked_until("r.io") - time.monotonic()))
    assert delays == [1, 2, 4, 4, 4]  # exact doubling per registry, capped, no jitter
    schedule.after("r.io/a/s0:v1", ok)
    assert schedule.blocked_until("r.io") == 0.0
    schedule.after("bad", ImageFacts.unresolved("UPPER/Case"))
    assert "bad" in schedule and schedule.top() is not None  # never due, never on the heap top
    # Everything due at once: one tick hands out at most what the pace allows, the rest waits.
    for i in range(200):
        schedule.set(f"r.io/a/s{i}:v1", now - 1.0)
    schedule.reset_clock()  # CPU is counted from here, in this thread
    taken = schedule.take_due(time.monotonic(), wanted=200, room=1000)
    assert 4 <= len(taken) <= 41 + 1 and schedule.behind > 0.5  # bucket: max(4, 2 * 200 / 10 + 1)
    assert schedule.next_due(time.monotonic(), 200) > time.monotonic()
