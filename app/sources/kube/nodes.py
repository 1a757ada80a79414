"""The node informer: each node's container runtime, for `--delivery auto` (docs/delivery.md).

containerd before 2.1 and CRI-O before 1.31 cannot mount image volumes, so one such node in the cluster
is enough for `auto` to extract skills: a pod scheduled there would start without them. A third use of
the Reflector, keeping per node only its name and `status.nodeInfo.containerRuntimeVersion`; every
change of a runtime version (a node added, upgraded, removed) gives a new verdict to `on_change`.

Listing nodes needs a ClusterRole the install set ships but an admin may leave out: `first_verdict`
says so (NodesForbidden) and the caller decides from the API server's version alone.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Iterable, NamedTuple

import kubernetes.client
import orjson
from kubernetes.client.exceptions import ApiException

from app.core.mutation.delivery import NodeRuntimes, judge_nodes

from app.sources.kube.reflector import InformerMetrics, ListWatch, Reflector, ReflectorTuning

log = logging.getLogger(__name__)

HTTP_FORBIDDEN = 403


class NodesForbidden(Exception):
    """The service account may not list nodes."""


class NodeRuntime(NamedTuple):
    name: str
    runtime_version: str
    resource_version: str

    @property
    def key(self) -> tuple[str, str]:
        return ("", self.name)


def decode_node(obj: Any) -> NodeRuntime | None:
    if not isinstance(obj, dict):
        return None
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        return None
    status = obj.get("status") if isinstance(obj.get("status"), dict) else {}
    info = status.get("nodeInfo") if isinstance(status.get("nodeInfo"), dict) else {}
    version = info.get("containerRuntimeVersion")
    resource_version = metadata.get("resourceVersion")
    return NodeRuntime(name, version if isinstance(version, str) else "",
                       resource_version if isinstance(resource_version, str) else "")


class NodeStore:
    """NodeRuntimes by name; written by the reflector's one thread, read as snapshots."""

    def __init__(self) -> None:
        self._nodes: dict[str, NodeRuntime] = {}
        self._lock = threading.Lock()
        # Set from a LIST's swap until it is complete (the reflector's on_sync): the changes it
        # announces one by one are judged once, together.
        self.relisting = False

    def replace_all(self, items: Iterable[NodeRuntime]) -> None:
        nodes = {n.name: n for n in items}
        with self._lock:
            self._nodes = nodes
            self.relisting = True

    def upsert(self, obj: NodeRuntime) -> NodeRuntime | None:
        with self._lock:
            old = self._nodes.get(obj.name)
            self._nodes[obj.name] = obj
        return old

    def delete(self, namespace: str, name: str) -> NodeRuntime | None:
        with self._lock:
            return self._nodes.pop(name, None)

    def get(self, namespace: str, name: str) -> NodeRuntime | None:
        return self._nodes.get(name)

    def all(self) -> list[NodeRuntime]:
        with self._lock:
            return list(self._nodes.values())

    def __len__(self) -> int:
        return len(self._nodes)

    def verdict(self) -> NodeRuntimes:
        return judge_nodes((n.name, n.runtime_version) for n in self.all())


class NodeInformer:
    """Every node's container runtime version in a NodeStore, kept current by LIST + WATCH; `on_change`
    hears the new NodeRuntimes whenever the verdict changes (called on the informer's thread)."""

    def __init__(
        self,
        api_client: kubernetes.client.ApiClient,
        on_change: Callable[[NodeRuntimes], None],
        *,
        metrics: InformerMetrics | None = None,
        **tuning: Any,
    ) -> None:
        """`tuning`: the fields of ReflectorTuning (page_size, backoff_initial, watch_timeout, ...)."""
        self._api = kubernetes.client.CoreV1Api(api_client)
        self._on_change = on_change
        self._tuning = ReflectorTuning(**tuning)
        self.store = NodeStore()
        self.last: NodeRuntimes | None = None
        hooks = metrics or InformerMetrics()
        self.reflector: Reflector[NodeRuntime] = Reflector(
            ListWatch(self._api.list_node, "nodes"),
            decode_node,
            self.store,
            version=lambda node: node.resource_version,
            kind="node",
            logger=log,
            listeners=[self._changed],
            metrics=InformerMetrics(on_restart=hooks.on_restart, on_event=hooks.on_event,
                                    on_sync=lambda count: (self._listed(), hooks.on_sync(count))),
            tuning=self._tuning,
        )

    def first_verdict(self) -> NodeRuntimes:
        """The verdict of one complete LIST, for the decision at start (the informer's own LIST follows
        when it starts). Raises NodesForbidden on 403, and the client's error for anything else."""
        nodes: list[NodeRuntime] = []
        token: str | None = None
        while True:
            try:
                response = self._api.list_node(
                    limit=self._tuning.page_size, _continue=token, _preload_content=False,
                    _request_timeout=(self._tuning.connect_timeout, self._tuning.list_timeout),
                )
            except ApiException as err:
                if err.status == HTTP_FORBIDDEN:
                    raise NodesForbidden(str(err.reason or "Forbidden")) from None
                raise
            try:
                page = orjson.loads(response.data)
            finally:
                response.release_conn()
            items = page.get("items") if isinstance(page, dict) else None
            nodes += [n for n in map(decode_node, items or ()) if n is not None]
            metadata = page.get("metadata") if isinstance(page, dict) else None
            token = metadata.get("continue") if isinstance(metadata, dict) else None
            if not token:
                break
        self.last = judge_nodes((n.name, n.runtime_version) for n in nodes)
        return self.last

    def _changed(self, old: NodeRuntime | None, new: NodeRuntime | None) -> None:
        if old is not None and new is not None and old.runtime_version == new.runtime_version:
            return  # a status heartbeat: the runtime did not change
        if not self.store.relisting:
            self._publish()

    def _listed(self) -> None:
        self.store.relisting = False
        self._publish()

    def _publish(self) -> None:
        verdict = self.store.verdict()
        if verdict != self.last:
            self.last = verdict
            self._on_change(verdict)

    def start(self) -> None:
        self.reflector.start("node-informer")

    def stop(self) -> None:
        self.reflector.stop()
