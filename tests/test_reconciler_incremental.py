"""The reconciler's handlers and worker over the Pod informer's store, with a fake clock: a pod change
syncs its workload alone after the debounce (a heartbeat syncs nothing), an AgentRuntime change syncs
the workload it targets, a resync picks up a digest the resolver moved, an Event held back by the
interval is written when it ends without anything else happening, and the state stays small.

The pods are made by the real mutation from the real AgentRuntimes, summarised as the informer does."""

from __future__ import annotations

import copy
import dataclasses
import gc
import tracemalloc

import pytest

from app.core.matching.index import AgentRuntimeIndex
from app.core.model import AgentRuntime
from app.core.mutation.review import MutationOptions, mutate_pod
from app.core.names import DEFAULT_DOMAIN
from app.core.staleness.pods import StalenessOptions
from app.service.controllers import reconciler as reconciler_module
from app.service.metrics import WebhookMetrics
from app.service.controllers.reconciler import Reconciler, ReconcilerConfig
from app.sources.kube.pods import PodStore, summarize
from tests.builders import apply_patch, deployment_pod, runtime_object, skill
from tests.fake_clock import FakeClock

NAMESPACES = 10
PER_NAMESPACE = 20  # AgentRuntimes per namespace
PODS_EACH = 5  # pods per AgentRuntime: 1,000 pods


def runtime_dict(namespace: str, i: int, image: str = "ghcr.io/a/s:v1") -> dict:
    return runtime_object(f"rt-{i}", namespace=namespace, target=f"app-{i}", skills=[skill("s", image, "/skills/s")])


def build(pods_each: int = PODS_EACH) -> tuple[AgentRuntimeIndex, PodStore]:
    index = AgentRuntimeIndex()
    index.replace_all(AgentRuntime.from_object(runtime_dict(f"ns-{n}", i))
                      for n in range(NAMESPACES) for i in range(PER_NAMESPACE))
    index.synced.set()
    store = PodStore()
    summaries = []
    for n in range(NAMESPACES):
        namespace = f"ns-{n}"
        for i in range(PER_NAMESPACE):
            base = deployment_pod(deployment=f"app-{i}", template_hash="abc12", namespace=namespace,
                                  labels={DEFAULT_DOMAIN.type_label: "agent"})
            decision = mutate_pod(copy.deepcopy(base), namespace, index, MutationOptions())
            made = apply_patch(base, decision)
            for p in range(pods_each):
                obj = copy.deepcopy(made)
                obj["metadata"].update(name=f"app-{i}-abc12-{p:05d}", uid=f"{namespace}-{i}-{p}", resourceVersion="1")
                summaries.append(summarize(obj, DEFAULT_DOMAIN))
    store.replace_all(summaries)
    store.synced.set()
    return index, store


class Events:
    """Stands in for CoreV1Api: records the Events written."""

    def __init__(self) -> None:
        self.written: list[dict] = []

    def create_namespaced_event(self, namespace: str, body: dict, **_) -> None:
        self.written.append(body)


@pytest.fixture
def judged(monkeypatch) -> list[str]:
    """The names of the pods judged, in order."""
    names: list[str] = []
    real = reconciler_module.pod_staleness

    def counting(pod, *args):
        names.append(pod.name)
        return real(pod, *args)

    monkeypatch.setattr(reconciler_module, "pod_staleness", counting)
    return names


def reconciler_for(index: AgentRuntimeIndex, store: PodStore, *, leader: bool = False, **options) -> Reconciler:
    config = {"debounce": 0.5, **options.pop("config", {})}
    reconciler = Reconciler(ReconcilerConfig(**config), index, store, core_api=options.pop("core_api", None),
                            metrics=WebhookMetrics(), is_leader=lambda: leader, clock=FakeClock(), **options)
    index.add_listener(reconciler.runtime_changed)
    return reconciler


def drain(reconciler: Reconciler) -> None:
    while len(reconciler.queue):
        reconciler.process_next()


def change(store: PodStore, reconciler: Reconciler, namespace: str, name: str, **fields) -> None:
    """What the informer does on a MODIFIED event: the store first, then its handler."""
    old = store.get(namespace, name)
    new = dataclasses.replace(old, resource_version=str(int(old.resource_version) + 1), **fields)
    store.upsert(new)
    reconciler.pod_changed(old, new)


def gauge(reconciler: Reconciler, namespace: str, runtime: str) -> float | None:
    return reconciler._metrics.registry.get_sample_value(
        "skill_webhook_stale_pods", {"namespace": namespace, "agentruntime": runtime})


def test_a_pod_change_syncs_its_workload_alone_after_the_debounce(judged) -> None:
    index, store = build()
    reconciler = reconciler_for(index, store)
    reconciler.resync()
    drain(reconciler)
    assert len(judged) == len(store) == NAMESPACES * PER_NAMESPACE * PODS_EACH
    judged.clear()
    for i in range(3):  # two changes in ns-0/app-0, one in ns-1/app-3
        namespace, workload = ("ns-0", "app-0") if i < 2 else ("ns-1", "app-3")
        name = f"{workload}-abc12-{i:05d}"
        change(store, reconciler, namespace, name, ready=not store.get(namespace, name).ready)
    assert len(reconciler.queue) == 0  # held for the debounce, so a burst shares one sync
    reconciler.clock.advance(0.5)
    drain(reconciler)
    assert len(judged) == 2 * PODS_EACH and set(judged) == {
        f"{w}-abc12-{p:05d}" for w in ("app-0", "app-3") for p in range(PODS_EACH)}
    # A status heartbeat (a new resourceVersion, nothing judged changed) brings no key at all.
    judged.clear()
    for i in range(30):
        change(store, reconciler, "ns-0", f"app-0-abc12-{i % PODS_EACH:05d}")
    reconciler.clock.advance(1)
    assert len(reconciler.queue) == 0
    # A deleted pod is forgotten.
    index.upsert(AgentRuntime.from_object(runtime_dict("ns-1", 1, image="ghcr.io/a/s:v2")))
    drain(reconciler)
    assert gauge(reconciler, "ns-1", "rt-1") == PODS_EACH
    reconciler.pod_changed(store.delete("ns-1", "app-1-abc12-00000"), None)
    reconciler.clock.advance(0.5)
    drain(reconciler)
    assert gauge(reconciler, "ns-1", "rt-1") == PODS_EACH - 1


def test_what_would_be_injected_is_worked_out_once_per_workload(monkeypatch, judged) -> None:
    index, store = build()
    worked_out: list[str] = []
    real = reconciler_module.expected_injection

    def counting(runtime, options):
        worked_out.append(runtime.metadata.name)
        return real(runtime, options)

    monkeypatch.setattr(reconciler_module, "expected_injection", counting)
    reconciler = reconciler_for(index, store)
    reconciler.resync()
    drain(reconciler)
    assert len(judged) == NAMESPACES * PER_NAMESPACE * PODS_EACH
    assert len(worked_out) == NAMESPACES * PER_NAMESPACE  # once per AgentRuntime, not once per pod


def test_an_agentruntime_change_syncs_the_workload_it_targets(judged) -> None:
    index, store = build()
    reconciler = reconciler_for(index, store)
    reconciler.resync()
    drain(reconciler)
    judged.clear()
    index.upsert(AgentRuntime.from_object(runtime_dict("ns-3", 4, image="ghcr.io/a/s:v2")))
    assert len(reconciler.queue) == 1
    drain(reconciler)
    assert len(judged) == PODS_EACH  # rt-4's pods, no other
    stale = list(reconciler.verdicts.stale())
    assert {(v.namespace, v.agent_runtime) for v in stale} == {("ns-3", "rt-4")} and len(stale) == PODS_EACH
    assert gauge(reconciler, "ns-3", "rt-4") == PODS_EACH
    index.delete("ns-3", "rt-4")
    drain(reconciler)
    stale = list(reconciler.verdicts.stale())
    assert {v.reason for v in stale} == {"runtime-gone"} and len(stale) == PODS_EACH
    assert gauge(reconciler, "ns-3", "rt-4") == PODS_EACH


def test_a_resync_picks_up_a_digest_the_resolver_moved() -> None:
    index, store = build()
    pinned: dict[str, str] = {}

    def references(runtime: AgentRuntime) -> dict[str, str]:
        digest = pinned.get(runtime.metadata.name)
        return {"s": f"ghcr.io/a/s:v1@{digest}"} if digest else {}

    options = StalenessOptions(references=references)
    reconciler = reconciler_for(index, store, staleness=lambda: options)
    reconciler.resync()
    drain(reconciler)
    assert list(reconciler.verdicts.stale()) == []
    pinned["rt-2"] = "sha256:" + "b" * 64  # the resolver pinned one image: its pods now get another one
    assert len(reconciler.queue) == 0  # no object changed: nothing says so but the resync
    reconciler.resync()
    drain(reconciler)
    stale = list(reconciler.verdicts.stale())
    assert {v.agent_runtime for v in stale} == {"rt-2"} and len(stale) == NAMESPACES * PODS_EACH


def test_an_event_held_back_by_the_interval_is_written_when_it_ends() -> None:
    index, store = build(pods_each=2)
    events = Events()
    reconciler = reconciler_for(index, store, leader=True, core_api=events, config={"event_interval": 600})
    reconciler.resync()
    drain(reconciler)
    index.upsert(AgentRuntime.from_object(runtime_dict("ns-0", 0, image="ghcr.io/a/s:v2")))
    drain(reconciler)
    assert [e["reason"] for e in events.written] == ["SkillsChanged"] and "2 pod(s)" in events.written[0]["message"]
    # A new pod of the same workload, stale from the start, within the interval: held back.
    pod = store.get("ns-0", "app-0-abc12-00000")
    late = dataclasses.replace(pod, name="app-0-abc12-late", uid="late")
    store.upsert(late)
    reconciler.pod_changed(None, late)
    reconciler.clock.advance(0.5)
    drain(reconciler)
    assert len(events.written) == 1
    # When the interval ends the key comes back by itself (no resync, no other change).
    reconciler.clock.advance(599)
    assert len(reconciler.queue) == 0
    reconciler.clock.advance(1)
    assert len(reconciler.queue) == 1
    drain(reconciler)
    assert len(events.written) == 2 and "3 pod(s)" in events.written[1]["message"]
    reconciler.clock.advance(1200)
    reconciler.resync()
    drain(reconciler)
    assert len(events.written) == 2  # nothing new went stale


@pytest.mark.slow
def test_the_state_of_ten_thousand_judged_pods_stays_small() -> None:
    index, store = build(pods_each=50)  # 10,000 pods
    assert len(store) == 10_000
    reconciler = reconciler_for(index, store)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        reconciler.resync()
        drain(reconciler)
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    used = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert len(list(reconciler.verdicts.stale())) == 0 and len(reconciler.verdicts) == 10_000
    assert used < 8 * 1024 * 1024, f"{used / 1e6:.1f} MB for the verdicts of 10,000 pods"
