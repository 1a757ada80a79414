"""Fixtures and checks shared by the informer tests: a stand-in API server, informers built on it
with fast backoff, and `assert_converges`, which requires the index to equal the server's objects (whole
objects with their resourceVersions, and the by-target lookup too) within 5 seconds.

Plain functions and context managers, not fixtures: each test module declares its three small fixtures
(server, metrics, make_informer) on top of `running_standin` and `informer_factory`.
"""

from __future__ import annotations

import contextlib
import random
from collections import Counter
from typing import Any, Callable, Iterator

import kubernetes.client
import pytest

from app.core.matching.index import AgentRuntimeIndex
from app.core.model import AgentRuntime, WorkloadRef
from app.sources.kube.agentruntimes import AGENTRUNTIME_PLURAL, KubeInformerSource
from app.sources.kube.reflector import InformerMetrics
from tests.apiserver_standin import StandInApiServer, agentruntime
from tests.polling import wait_until
from tests.serve_process import KUBECONFIG  # noqa: F401 - a kubeconfig for the stand-in (format url=server.url)

CONVERGENCE_SECONDS = 5.0
LIST_PATH = f"/apis/agent.kagenti.dev/v1alpha1/{AGENTRUNTIME_PLURAL}"


def api_client_for(server: StandInApiServer) -> kubernetes.client.ApiClient:
    return kubernetes.client.ApiClient(kubernetes.client.Configuration(host=server.url))


class RecordedMetrics:
    """What the informer reported through its InformerMetrics hooks."""

    def __init__(self) -> None:
        self.restarts: Counter[str] = Counter()
        self.syncs: list[int] = []
        self.events: Counter[str] = Counter()

    @property
    def hooks(self) -> InformerMetrics:
        return InformerMetrics(
            on_restart=lambda reason: self.restarts.update([reason]),
            on_sync=self.syncs.append,
            on_event=lambda event_type: self.events.update([event_type]),
        )


@contextlib.contextmanager
def running_standin(**options: Any) -> Iterator[StandInApiServer]:
    standin = StandInApiServer(**options).start()
    try:
        yield standin
    finally:
        standin.close()


@contextlib.contextmanager
def informer_factory(server: StandInApiServer, metrics: RecordedMetrics) -> Iterator[Callable[..., KubeInformerSource]]:
    """Build (not start) informers on the stand-in, with fast backoff; all are stopped on exit."""
    made: list[KubeInformerSource] = []

    def make(index: AgentRuntimeIndex | None = None, **options: Any) -> KubeInformerSource:
        options.setdefault("backoff_initial", 0.05)
        options.setdefault("backoff_max", 0.5)
        options.setdefault("watch_timeout", 60)
        options.setdefault("page_size", 10)
        options.setdefault("rng", random.Random(7))
        informer = KubeInformerSource(
            index if index is not None else AgentRuntimeIndex(),
            api_client=api_client_for(server),
            metrics=metrics.hooks,
            **options,
        )
        made.append(informer)
        return informer

    try:
        yield make
    finally:
        for informer in made:
            informer.stop()


def started(make_informer, server, **options: Any) -> KubeInformerSource:
    """A started informer that has finished its first LIST and has its watch open."""
    informer = make_informer(**options)
    informer.start()
    assert informer.index.synced.wait(CONVERGENCE_SECONDS), "first LIST did not complete"
    server.wait_for_watches(1)
    return informer


def populate(server: StandInApiServer, count: int, prefix: str = "rt") -> None:
    for i in range(count):
        server.create(agentruntime(f"{prefix}-{i}", namespace=f"ns-{i % 3}", target=f"app-{i}"))


def truth(server: StandInApiServer) -> dict[tuple[str, str], AgentRuntime]:
    return {(o["metadata"]["namespace"], o["metadata"]["name"]): AgentRuntime.for_cache(o) for o in server.objects()}


def cached(index: AgentRuntimeIndex) -> dict[tuple[str, str], AgentRuntime]:
    return {r.key: r for r in index.all()}


def lookups_agree(index: AgentRuntimeIndex, expected: dict[tuple[str, str], AgentRuntime]) -> bool:
    """The by-target side of the index names exactly the expected AgentRuntimes, oldest first."""
    by_target: dict[tuple[str, WorkloadRef], list[AgentRuntime]] = {}
    for runtime in expected.values():
        by_target.setdefault((runtime.metadata.namespace, runtime.workload), []).append(runtime)
    for (namespace, workload), runtimes in by_target.items():
        runtimes.sort(key=lambda r: r.age_key)
        if list(index.targeting(namespace, workload)) != runtimes:
            return False
    return sum(len(index.targeting(ns, w)) for ns, w in by_target) == len(index)


def assert_converges(index: AgentRuntimeIndex, server: StandInApiServer) -> None:
    def converged() -> bool:
        expected = truth(server)
        return cached(index) == expected and lookups_agree(index, expected)

    def difference() -> str:
        expected, actual = truth(server), cached(index)
        missing = sorted(set(expected) - set(actual))
        extra = sorted(set(actual) - set(expected))
        stale = sorted(k for k in set(expected) & set(actual) if expected[k] != actual[k])
        return f"missing {missing}, extra {extra}, stale {stale}"

    wait_until(converged, CONVERGENCE_SECONDS, "the index to equal the server's objects", explain=difference)


def list_requests(server: StandInApiServer) -> list[dict[str, str]]:
    return [q for path, q in list(server.requests) if path == LIST_PATH and q.get("watch") not in ("true", "1")]


# -- fixtures shared by the informer test modules (imported there by name) ------------------------


@pytest.fixture
def server():
    with running_standin() as standin:
        yield standin


@pytest.fixture
def metrics() -> RecordedMetrics:
    return RecordedMetrics()


@pytest.fixture
def make_informer(server, metrics):
    with informer_factory(server, metrics) as make:
        yield make
