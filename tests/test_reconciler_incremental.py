"""What a reconciler pass costs over the Pod informer's store: it judges what changed (counted in
judgments), never the whole cache; a sweep re-checks every pod cheaply and re-judges only what moved
(a digest the resolver pinned); the thread sleeps while nothing changes; its state stays small.

The pods are made by the real mutation from the real AgentRuntimes, summarised as the informer does."""

from __future__ import annotations

import copy
import dataclasses
import gc
import time
import tracemalloc

from app.core.matching.index import AgentRuntimeIndex
from app.core.model import AgentRuntime
from app.core.mutation.review import MutationOptions, mutate_pod
from app.core.names import DEFAULT_DOMAIN
from app.core.staleness.pods import StalenessOptions
from app.service.metrics import WebhookMetrics
from app.service.controllers.reconciler import Reconciler, ReconcilerConfig
from app.sources.kube.pods import PodStore, summarize
from tests.builders import apply_patch, deployment_pod, runtime_object, skill
from tests.informer_harness import wait_until
from tests.reconciler_harness import Clock

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


def reconciler_for(index: AgentRuntimeIndex, store: PodStore, **options) -> Reconciler:
    config = {"debounce": 0.05, "full_every": 3600.0, **options.pop("config", {})}
    reconciler = Reconciler(ReconcilerConfig(**config), index, store, pods_synced=store.synced.is_set,
                            core_api=None, metrics=WebhookMetrics(), notified=True, is_leader=lambda: False,
                            **options)
    index.add_listener(reconciler.notify_runtimes)
    return reconciler


def change(store: PodStore, reconciler: Reconciler, namespace: str, name: str, **fields) -> None:
    """What the informer does on a MODIFIED event: the store first, then its listeners."""
    old = store.get(namespace, name)
    new = dataclasses.replace(old, resource_version=str(int(old.resource_version) + 1), **fields)
    store.upsert(new)
    reconciler.notify(old, new)


def test_a_pass_after_k_pod_changes_judges_k_pods() -> None:
    index, store = build()
    reconciler = reconciler_for(index, store, clock=Clock())
    assert reconciler.run_once() == []
    total = len(store)
    assert reconciler.judgments == total == NAMESPACES * PER_NAMESPACE * PODS_EACH
    reconciler.run_once()
    assert reconciler.judgments == total  # nothing changed: nothing judged
    for k in (1, 7, 25):
        before = reconciler.judgments
        changed = {(f"ns-{i // PER_NAMESPACE}", f"app-{i % PER_NAMESPACE}-abc12-{k % PODS_EACH:05d}") for i in range(k)}
        for namespace, name in changed:
            change(store, reconciler, namespace, name, ready=not store.get(namespace, name).ready)
        reconciler.run_once()
        assert reconciler.judgments - before == len(changed) == k
    # A status heartbeat (a new resourceVersion, nothing judged changed) is not judged at all.
    before = reconciler.judgments
    for i in range(30):
        change(store, reconciler, "ns-0", f"app-0-abc12-{i % PODS_EACH:05d}")
    reconciler.run_once()
    assert reconciler.judgments == before
    # A deleted pod is forgotten; an added one judged.
    old = store.delete("ns-1", "app-1-abc12-00000")
    reconciler.notify(old, None)
    store.upsert(dataclasses.replace(old, name="app-1-abc12-99999", uid="new"))
    reconciler.notify(None, store.get("ns-1", "app-1-abc12-99999"))
    reconciler.run_once()
    assert reconciler.judgments == before + 1


def test_an_agentruntime_change_rejudges_its_namespace_only() -> None:
    index, store = build()
    reconciler = reconciler_for(index, store, clock=Clock())
    reconciler.run_once()
    before = reconciler.judgments
    index.upsert(AgentRuntime.from_object(runtime_dict("ns-3", 4, image="ghcr.io/a/s:v2")))
    stale = reconciler.run_once()
    assert reconciler.judgments - before == PER_NAMESPACE * PODS_EACH  # ns-3's pods, no other
    assert {(v.namespace, v.agent_runtime) for v in stale} == {("ns-3", "rt-4")} and len(stale) == PODS_EACH
    assert reconciler._metrics.registry.get_sample_value(
        "skill_webhook_stale_pods", {"namespace": "ns-3", "agentruntime": "rt-4"}) == PODS_EACH
    index.delete("ns-3", "rt-4")
    stale = reconciler.run_once()
    assert {v.reason for v in stale} == {"runtime-gone"} and len(stale) == PODS_EACH


def test_a_sweep_reuses_unchanged_verdicts_and_rejudges_what_a_moved_digest_changed() -> None:
    index, store = build()
    clock = Clock()
    pinned: dict[str, str] = {}

    def references(runtime: AgentRuntime) -> dict[str, str]:
        digest = pinned.get(runtime.metadata.name)
        return {"s": f"ghcr.io/a/s:v1@{digest}"} if digest else {}

    reconciler = reconciler_for(index, store, clock=clock, staleness=StalenessOptions(references=references),
                                config={"full_every": 30.0})
    assert reconciler.run_once() == []
    before = reconciler.judgments
    clock.now += 31  # a sweep: every pod re-checked, none re-judged
    assert reconciler.run_once() == [] and reconciler.judgments == before
    pinned["rt-2"] = "sha256:" + "b" * 64  # the resolver pinned one image: its pods now get another one
    clock.now += 31
    stale = reconciler.run_once()
    assert reconciler.judgments - before == NAMESPACES * PODS_EACH  # rt-2 of every namespace
    assert {v.agent_runtime for v in stale} == {"rt-2"} and len(stale) == NAMESPACES * PODS_EACH


def test_sweeps_run_in_slices_and_the_thread_sleeps_while_nothing_changes() -> None:
    index, store = build()
    reconciler = reconciler_for(index, store, config={"chunk": 50, "pause": 0.01})
    reconciler.start()
    try:
        # The first sweep over 1,000 pods in slices of at most 50: at least 20 steps.
        assert wait_until(lambda: reconciler.judgments == len(store), timeout=30)
        assert wait_until(lambda: reconciler.passes >= len(store) // 50, timeout=10)
        time.sleep(0.3)
        passes = reconciler.passes
        time.sleep(1.5)
        assert reconciler.passes == passes  # asleep: no change, no pass
        change(store, reconciler, "ns-0", "app-0-abc12-00000", ready=True)
        assert wait_until(lambda: reconciler.judgments == len(store) + 1, timeout=10)
        heard = reconciler.passes
        change(store, reconciler, "ns-0", "app-0-abc12-00001")  # a heartbeat: not even a wake-up
        time.sleep(0.5)
        assert reconciler.passes == heard
    finally:
        reconciler.stop()
    assert not reconciler.thread.is_alive()


def test_the_state_of_ten_thousand_judged_pods_stays_small() -> None:
    index, store = build(pods_each=50)  # 10,000 pods
    assert len(store) == 10_000
    reconciler = reconciler_for(index, store, clock=Clock())
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        reconciler.run_once()
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    used = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert reconciler.judgments == 10_000
    assert used < 8 * 1024 * 1024, f"{used / 1e6:.1f} MB for the verdicts of 10,000 pods"
