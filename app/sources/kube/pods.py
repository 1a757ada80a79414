"""The Pod informer: every agent and tool pod of the cluster, as compact summaries.

A second use of the Reflector. The API server filters by label (`<domain>/type in (agent,tool)`), so
other pods never cross the wire, and each pod is cut down to what deciding staleness and rolling it
needs (README "When skills change"): a cluster's pods are many and large, a summary is a few hundred
bytes, and the store takes an event in O(1).
"""

from __future__ import annotations

import logging
import sys
import threading
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, NamedTuple, Sequence

import kubernetes.client

from app.core.names import LABEL_POD_TEMPLATE_HASH, Domain

from app.sources.kube.reflector import InformerMetrics, Listener, ListWatch, Reflector, ReflectorTuning

log = logging.getLogger(__name__)

POD_TYPES = ("agent", "tool")


def pod_selector(domain: Domain) -> str:
    """The server-side label selector of the Pod informer."""
    return f"{domain.type_label} in ({','.join(POD_TYPES)})"


class OwnerRef(NamedTuple):
    api_version: str
    kind: str
    name: str
    controller: bool


@dataclass(frozen=True, slots=True)
class PodSummary:
    """What the reconciler keeps of a pod. `labels` holds only `<domain>/*` and `pod-template-hash`
    (sorted pairs, so the summary is immutable and hashable); `owner` is the controller owner
    reference, else the first one, else None. Slotted, with the strings and tuples that repeat from pod
    to pod (namespace, labels, owner, phase) shared: 10,000 pods cost a few megabytes."""

    namespace: str
    name: str
    uid: str
    resource_version: str
    labels: tuple[tuple[str, str], ...]
    owner: OwnerRef | None
    skills_injected: str | None  # the raw `<domain>/skills-injected` annotation
    ready: bool
    deleting: bool  # metadata.deletionTimestamp is set
    phase: str
    # Which annotation key `skills_injected` came from, so that `as_pod` writes it back under it.
    injected_key: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    def label(self, key: str) -> str | None:
        for name, value in self.labels:
            if name == key:
                return value
        return None

    def same_state(self, other: "PodSummary") -> bool:
        """Equal in everything but resourceVersion: a status heartbeat or an unrelated annotation changed,
        nothing that staleness or a rollout reads."""
        return (
            self.uid == other.uid
            and self.ready == other.ready
            and self.deleting == other.deleting
            and self.skills_injected == other.skills_injected
            and self.labels == other.labels
            and self.owner == other.owner
            and self.phase == other.phase
            and self.name == other.name
            and self.namespace == other.namespace
            and self.injected_key == other.injected_key
        )

    def as_pod(self) -> dict[str, Any]:
        """A minimal pod object (name, namespace, uid, labels, owner, the record) for the functions of
        the core that read pods: owner resolution and staleness."""
        metadata: dict[str, Any] = {
            "name": self.name,
            "namespace": self.namespace,
            "uid": self.uid,
            "resourceVersion": self.resource_version,
            "labels": dict(self.labels),
        }
        if self.owner is not None:
            metadata["ownerReferences"] = [
                {
                    "apiVersion": self.owner.api_version,
                    "kind": self.owner.kind,
                    "name": self.owner.name,
                    "controller": self.owner.controller,
                }
            ]
        if self.skills_injected is not None and self.injected_key:
            metadata["annotations"] = {self.injected_key: self.skills_injected}
        return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "status": {"phase": self.phase}}


# The pods of one workload carry the same labels and owner: one shared tuple each instead of one per pod.
# Bounded: dropped and started afresh past this many distinct values (the summaries keep theirs).
_SHARED_LIMIT = 50_000
_LABELS: dict[Any, Any] = {}
_OWNERS: dict[Any, Any] = {}


def _share(value: Any, table: dict[Any, Any]) -> Any:
    found = table.get(value)
    if found is not None:
        return found
    if len(table) >= _SHARED_LIMIT:
        table.clear()
    table[value] = value
    return value


def summarize(obj: Any, domain: Domain) -> PodSummary | None:
    """The PodSummary of a raw pod object (as orjson decoded it from a LIST page or a watch line; it
    keeps none of it but the strings it names); None for one without a name."""
    if not isinstance(obj, dict):
        return None
    metadata = _dict(obj.get("metadata"))
    name, namespace = metadata.get("name"), metadata.get("namespace")
    if not isinstance(name, str) or not name or not isinstance(namespace, str):
        return None
    prefix = domain.prefix + "/"
    labels = _share(tuple(
        sorted(
            (sys.intern(key), sys.intern(value))
            for key, value in _dict(metadata.get("labels")).items()
            if isinstance(value, str) and (key.startswith(prefix) or key == LABEL_POD_TEMPLATE_HASH)
        )
    ), _LABELS)
    injected = _dict(metadata.get("annotations")).get(domain.skills_injected)
    status = _dict(obj.get("status"))
    return PodSummary(
        namespace=sys.intern(namespace),
        name=name,
        uid=_text(metadata.get("uid")),
        resource_version=_text(metadata.get("resourceVersion")),
        labels=labels,
        owner=_owner(metadata.get("ownerReferences")),
        skills_injected=injected if isinstance(injected, str) else None,
        ready=_ready(status.get("conditions")),
        deleting=bool(metadata.get("deletionTimestamp")),
        phase=sys.intern(_text(status.get("phase"))),
        injected_key=domain.skills_injected,
    )


class PodStore:
    """PodSummaries by (namespace, name) and by namespace.

    Written from the informer's thread: an event is a few dict assignments under a lock, O(1) however
    many pods are cached. `get` never locks (one dict read is atomic). Readers that iterate get tuple
    snapshots, never the live dicts (iterating a dict while another thread inserts raises
    RuntimeError); a snapshot is rebuilt, under the lock, only when someone asks for it after a change,
    so a churn of events that nobody iterates costs nothing but the assignments."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str], PodSummary] = {}
        self._by_namespace: dict[str, dict[str, PodSummary]] = {}
        self._lock = threading.Lock()
        self._all: tuple[PodSummary, ...] | None = ()
        self._groups: dict[str, tuple[PodSummary, ...]] = {}  # per-namespace snapshots still current
        self.synced = threading.Event()

    # -- reads ---------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._by_key)

    def get(self, namespace: str, name: str) -> PodSummary | None:
        return self._by_key.get((namespace, name))

    def snapshot(self) -> tuple[PodSummary, ...]:
        """Every pod, as of one moment."""
        snap = self._all
        if snap is None:
            with self._lock:
                snap = self._all
                if snap is None:
                    snap = self._all = tuple(self._by_key.values())
        return snap

    def all(self) -> list[PodSummary]:
        return list(self.snapshot())

    def keys(self) -> list[tuple[str, str]]:
        """Every (namespace, name), as of one moment."""
        with self._lock:
            return list(self._by_key)

    def namespaces(self) -> list[str]:
        with self._lock:
            return list(self._by_namespace)

    def in_namespace(self, namespace: str) -> tuple[PodSummary, ...]:
        """The pods of one namespace, as of one moment."""
        snap = self._groups.get(namespace)
        if snap is None:
            with self._lock:
                snap = self._groups.get(namespace)
                if snap is None:
                    group = self._by_namespace.get(namespace)
                    snap = tuple(group.values()) if group else ()
                    if group:
                        self._groups[namespace] = snap
        return snap

    def by_namespace(self, namespace: str | None = None) -> Iterator[PodSummary]:
        """The pods of one namespace, or (None) of every namespace grouped by namespace."""
        if namespace is not None:
            yield from self.in_namespace(namespace)
            return
        for name in self.namespaces():
            yield from self.in_namespace(name)

    # -- writes (the informer's thread) ------------------------------------------------------------

    def replace_all(self, items: Iterable[PodSummary]) -> None:
        by_key = {p.key: p for p in items}
        by_namespace: dict[str, dict[str, PodSummary]] = {}
        for summary in by_key.values():
            by_namespace.setdefault(summary.namespace, {})[summary.name] = summary
        with self._lock:
            self._by_key, self._by_namespace = by_key, by_namespace
            self._all, self._groups = None, {}

    def upsert(self, obj: PodSummary) -> PodSummary | None:
        namespace = obj.namespace
        with self._lock:
            key = (namespace, obj.name)
            old = self._by_key.get(key)
            self._by_key[key] = obj
            group = self._by_namespace.get(namespace)
            if group is None:
                group = self._by_namespace[namespace] = {}
            group[obj.name] = obj
            self._all = None
            self._groups.pop(namespace, None)
        return old

    def delete(self, namespace: str, name: str) -> PodSummary | None:
        with self._lock:
            old = self._by_key.pop((namespace, name), None)
            if old is None:
                return None
            group = self._by_namespace.get(namespace)
            if group is not None:
                group.pop(name, None)
                if not group:
                    del self._by_namespace[namespace]
            self._all = None
            self._groups.pop(namespace, None)
        return old


class PodInformer:
    """Agent and tool pods of every namespace in a PodStore, kept current by LIST + WATCH."""

    def __init__(
        self,
        api_client: kubernetes.client.ApiClient,
        domain: Domain,
        *,
        store: PodStore | None = None,
        listeners: Sequence[Listener] = (),
        metrics: InformerMetrics | None = None,
        **tuning: Any,
    ) -> None:
        """`tuning`: the fields of ReflectorTuning (page_size, backoff_initial, watch_timeout, ...)."""
        self.domain = domain
        self.store = store if store is not None else PodStore()
        self.reflector: Reflector[PodSummary] = Reflector(
            ListWatch.core_pods(api_client, label_selector=pod_selector(domain)),
            lambda obj: summarize(obj, domain),
            self.store,
            version=lambda pod: pod.resource_version,
            kind="pod",
            logger=log,
            synced=self.store.synced,
            listeners=listeners,
            metrics=metrics,
            tuning=ReflectorTuning(**tuning),
        )

    @property
    def synced(self) -> threading.Event:
        return self.store.synced

    def add_listener(self, listener: Listener) -> None:
        self.reflector.add_listener(listener)

    def start(self) -> None:
        self.reflector.start("pod-informer")

    def stop(self) -> None:
        self.reflector.stop()


def _owner(refs: Any) -> OwnerRef | None:
    if not isinstance(refs, list):
        return None
    refs = [r for r in refs if isinstance(r, dict)]
    chosen = next((r for r in refs if r.get("controller") is True), refs[0] if refs else None)
    if chosen is None:
        return None
    return _share(OwnerRef(sys.intern(_text(chosen.get("apiVersion"))), sys.intern(_text(chosen.get("kind"))),
                           _text(chosen.get("name")), chosen.get("controller") is True), _OWNERS)


def _ready(conditions: Any) -> bool:
    if not isinstance(conditions, list):
        return False
    return any(isinstance(c, dict) and c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""
