"""KubeInformerSource under faults: 410 Gone (as an event and as a status), dropped connections, a
restarted server with new resourceVersions, watch timeouts, a crash in the informer thread. Each test
ends with the index equal to the server's truth within 5 seconds of the last fault.
"""

from __future__ import annotations

import logging
import random
import time

import pytest

from app.core.matching.index import AgentRuntimeIndex
from app.core.model import AgentRuntime
from app.sources.kube.agentruntimes import KubeInformerSource
from app.sources.kube.reflector import InformerMetrics
from tests.apiserver_standin import agentruntime
from tests.informer_harness import (  # noqa: F401 (fixtures: server, metrics, make_informer)
    make_informer,
    metrics,
    server,
    CONVERGENCE_SECONDS,
    RecordedMetrics,
    api_client_for,
    assert_converges,
    cached,
    informer_factory,
    list_requests,
    populate,
    running_standin,
    started,
)
from tests.polling import wait_until



def test_error_410_event_relists_and_reveals_changes_the_watch_never_saw(server, make_informer, metrics):
    populate(server, 6)
    informer = started(make_informer, server)
    with server.unseen_changes():
        server.delete("ns-0", "rt-0")
        server.create(agentruntime("late", namespace="ns-1", target="late-app"))
        rt1 = next(o for o in server.objects() if o["metadata"]["name"] == "rt-1")
        server.update(dict(rt1, spec=dict(rt1["spec"], targetRef={"apiVersion": "v1", "kind": "Pod", "name": "p"})))
    # A bookmark after the changes: once it is applied, the watch has delivered all it ever will of them.
    server.bookmark()
    wait_until(lambda: metrics.events["BOOKMARK"] >= 1, what="the bookmark sent after the unseen changes")
    assert informer.index.get("ns-0", "rt-0") is not None  # the watch alone cannot know

    server.expire_watches()
    assert_converges(informer.index, server)
    assert metrics.restarts["expired"] == 1
    assert len(list_requests(server)) == 2
    assert metrics.syncs == [6, 6]


@pytest.mark.parametrize("gone_as_http_status", [True, False], ids=["http-410", "error-event-at-start"])
def test_410_on_watch_start_after_an_outage_relists(server, make_informer, metrics, gone_as_http_status):
    server.gone_as_http_status = gone_as_http_status
    populate(server, 6)
    informer = started(make_informer, server)
    with server.outage():
        server.delete("ns-2", "rt-2")
        server.delete("ns-1", "rt-4")
        server.create(agentruntime("during-outage", namespace="ns-2", target="x"))
        wait_until(lambda: metrics.restarts["dropped"] >= 1, what="the informer losing its watch to the outage")
    assert_converges(informer.index, server)
    assert metrics.restarts["expired"] >= 1
    assert metrics.restarts["dropped"] >= 1
    assert informer.index.get("ns-2", "rt-2") is None


@pytest.mark.slow  # twelve rounds of dropped watches
def test_dropped_connections_resume_from_the_last_version_without_loss(server, make_informer, metrics):
    populate(server, 5)
    informer = started(make_informer, server)
    rng = random.Random(11)
    names = [f"rt-{i}" for i in range(5)]
    for round_number in range(12):
        for _ in range(3):
            action = rng.choice(["create", "update", "delete"]) if names else "create"
            if action == "create":
                name = f"d-{round_number}-{len(names)}"
                server.create(agentruntime(name, namespace="ns-d", target=rng.choice(["a", "b", "c"])))
                names.append(name)
            else:
                name = rng.choice(names)
                current = next(o for o in server.objects() if o["metadata"]["name"] == name)
                if action == "delete":
                    server.delete(current["metadata"]["namespace"], name)
                    names.remove(name)
                else:
                    current["spec"]["skills"][0]["image"] = f"ghcr.io/example/s:{round_number}"
                    server.update(current)
        server.wait_for_watches(1)
        server.drop_watches(mid_event=round_number % 2 == 0)
        time.sleep(rng.uniform(0, 0.05))
    assert_converges(informer.index, server)
    assert metrics.restarts["dropped"] >= 6
    # History was never compacted, so every re-watch resumed where it stopped: no second LIST.
    assert len(list_requests(server)) == 1


def test_restarted_server_with_new_resource_versions_is_relisted(server, make_informer, metrics):
    populate(server, 8)
    informer = started(make_informer, server)
    old_versions = {k: r.metadata.resourceVersion for k, r in cached(informer.index).items()}
    server.stop()
    server.delete("ns-0", "rt-3")
    server.create(agentruntime("while-down", namespace="ns-0", target="y"))
    server.restart(downtime=0.3)
    assert_converges(informer.index, server)
    new_versions = {k: r.metadata.resourceVersion for k, r in cached(informer.index).items()}
    assert all(new_versions[k] != v for k, v in old_versions.items() if k in new_versions)
    assert metrics.restarts["expired"] >= 1 and metrics.restarts["dropped"] >= 1


@pytest.mark.slow  # waits out the shortest watch timeout the API allows (1 s)
def test_a_watch_closed_by_its_timeout_is_reopened_from_the_last_version(server, make_informer, metrics):
    populate(server, 2)
    informer = started(make_informer, server, watch_timeout=1)
    assert wait_until(lambda: metrics.restarts["closed"] >= 1, timeout=5)
    server.create(agentruntime("after-timeout"))
    assert_converges(informer.index, server)
    assert len(list_requests(server)) == 1


class IndexThatFailsOnce(AgentRuntimeIndex):
    """An index whose first upsert raises, standing in for any bug in the code the informer calls."""

    def __init__(self) -> None:
        super().__init__()
        self.failed = False

    def upsert(self, runtime: AgentRuntime) -> None:
        if not self.failed:
            self.failed = True
            raise RuntimeError("bug in the index")
        super().upsert(runtime)


def test_a_crash_in_the_informer_thread_is_logged_and_restarts_it(server, make_informer, metrics, caplog):
    caplog.set_level(logging.ERROR, logger="app.sources.kube.agentruntimes")
    populate(server, 3)
    informer = started(make_informer, server, index=IndexThatFailsOnce())
    server.create(agentruntime("triggers-the-bug"))
    assert_converges(informer.index, server)
    assert metrics.restarts["crash"] == 1
    assert "crashed" in caplog.text and "bug in the index" in caplog.text
    assert informer.reflector.thread is not None and informer.reflector.thread.is_alive()

    server.create(agentruntime("after-the-crash"))
    assert_converges(informer.index, server)


def test_a_failing_metrics_hook_does_not_stop_the_informer(server, caplog):
    populate(server, 2)

    def broken(_: str) -> None:
        raise ValueError("metrics backend is down")

    informer = KubeInformerSource(
        AgentRuntimeIndex(),
        api_client=api_client_for(server),
        metrics=InformerMetrics(on_restart=broken),
        backoff_initial=0.05,
        backoff_max=0.2,
    )
    informer.start()
    try:
        assert informer.index.synced.wait(CONVERGENCE_SECONDS)
        server.wait_for_watches(1)
        server.drop_watches()
        server.create(agentruntime("after-drop"))
        assert_converges(informer.index, server)
        assert "on_restart failed" in caplog.text
    finally:
        informer.stop()


def test_stop_returns_promptly_while_a_watch_is_open(server, make_informer):
    informer = started(make_informer, server)
    began = time.monotonic()
    informer.stop()
    assert time.monotonic() - began < 2
    assert not informer.reflector.thread.is_alive()
    informer.stop()  # safe twice


# -- change listeners and the injectable decode -------------------------------------------------------


def change_log(changes: list) -> list[tuple[str, str | None, str | None]]:
    """(name, old resourceVersion, new resourceVersion) of every change heard."""
    return [
        ((new or old).metadata.name, old.metadata.resourceVersion if old else None, new.metadata.resourceVersion if new else None)
        for old, new in changes
    ]


def test_listeners_hear_old_and_new_for_events_and_for_what_a_relist_changed(server, make_informer):
    populate(server, 3)
    changes: list = []
    informer = make_informer(listeners=[lambda old, new: changes.append((old, new))])
    informer.start()
    assert informer.index.synced.wait(CONVERGENCE_SECONDS)
    server.wait_for_watches(1)
    assert sorted(name for name, old, _ in change_log(changes) if old is None) == ["rt-0", "rt-1", "rt-2"]

    changes.clear()
    first = next(o for o in server.objects() if o["metadata"]["name"] == "rt-0")
    updated = server.update(first)
    deleted_version = server.get("ns-1", "rt-1")["metadata"]["resourceVersion"]
    server.delete("ns-1", "rt-1")
    assert wait_until(lambda: len(changes) == 2)
    assert change_log(changes) == [
        ("rt-0", first["metadata"]["resourceVersion"], updated["metadata"]["resourceVersion"]),
        ("rt-1", deleted_version, None),
    ]

    # Lost events come back as the diff of the re-LIST: one added, one changed, one removed, and the
    # untouched AgentRuntime is not announced again.
    changes.clear()
    with server.unseen_changes():
        server.create(agentruntime("rt-new", namespace="ns-0"))
        server.update(next(o for o in server.objects() if o["metadata"]["name"] == "rt-0"))
        server.delete("ns-2", "rt-2")
    server.expire_watches()
    assert_converges(informer.index, server)
    assert wait_until(lambda: len(changes) == 3)
    heard = {name: (old is not None, new is not None) for name, old, new in change_log(changes)}
    assert heard == {"rt-new": (False, True), "rt-0": (True, True), "rt-2": (True, False)}


def test_a_failing_listener_is_logged_and_the_informer_goes_on(server, make_informer, caplog):
    def broken(old, new):
        raise RuntimeError("listener bug")

    informer = started(make_informer, server, listeners=[broken])
    server.create(agentruntime("after"))
    assert_converges(informer.index, server)
    assert "listener failed" in caplog.text and "listener bug" in caplog.text


def test_the_decode_function_is_injectable(server, make_informer):
    server.create(agentruntime("kept"))
    server.create(agentruntime("dropped"))

    def only_kept(obj):
        return AgentRuntime.for_cache(obj) if obj["metadata"]["name"] == "kept" else None

    informer = started(make_informer, server, decode=only_kept)
    assert [r.metadata.name for r in informer.index.all()] == ["kept"]
    server.create(agentruntime("dropped-too", namespace="ns-x"))
    server.create(agentruntime("kept", namespace="ns-x"))
    assert wait_until(lambda: len(informer.index) == 2)
    assert sorted(r.key for r in informer.index.all()) == [("ns-x", "kept"), ("team-a", "kept")]
