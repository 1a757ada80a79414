"""The Pod informer: every agent and tool pod of the cluster, as compact summaries.

A second use of the Reflector. The API server filters by label (`<domain>/type in (agent,tool)`), so
other pods never cross the wire, and each pod is cut down to what deciding staleness and rolling it
needs (docs/skill-changes.md): a cluster's pods are many and large, a summary is a few hundred
bytes, and the store takes an event in O(1).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import kubernetes.client

from app.core.matching.workload import resolve_workload
from app.core.model import WorkloadRef
from app.core.names import LABEL_POD_TEMPLATE_HASH, Domain
from app.core.objects import mapping_of, text_of
from app.core.staleness.rollout import OwnerRef

from app.sources.kube.listwatch import ListWatch, ReflectorTuning
from app.sources.kube.reflector import InformerMetrics, Listener, Reflector

log = logging.getLogger(__name__)

POD_TYPES = ("agent", "tool")


def pod_selector(domain: Domain) -> str:
    """The server-side label selector of the Pod informer."""
    return f"{domain.type_label} in ({','.join(POD_TYPES)})"


@dataclass(frozen=True, slots=True)
class PodSummary:
    """What the reconciler keeps of a pod. `labels` holds only `<domain>/*` and `pod-template-hash`
    (sorted pairs, so the summary is immutable and hashable); `owner` is the controller owner
    reference, else the first one, else None; `workloads` what its owner chain names (resolve_workload,
    most general first). Slotted: 10,000 pods cost a few megabytes.

    Two summaries are equal when all but their resourceVersion is: a status heartbeat or an unrelated
    annotation changes nothing that staleness or a rollout reads."""

    namespace: str
    name: str
    uid: str
    resource_version: str = field(compare=False)
    labels: tuple[tuple[str, str], ...] = ()
    owner: OwnerRef | None = None
    skills_injected: str | None = None  # the raw `<domain>/skills-injected` annotation
    ready: bool = False
    deleting: bool = False  # metadata.deletionTimestamp is set
    # Which annotation key `skills_injected` came from, so that `as_pod` writes it back under it.
    injected_key: str = ""
    workloads: tuple[WorkloadRef, ...] = ()

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)

    @property
    def workload(self) -> tuple[str, WorkloadRef] | None:
        """(namespace, the most general workload the pod answers to): the key the reconciler works on."""
        return (self.namespace, self.workloads[0]) if self.workloads else None

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
        return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata}


def summarize(obj: Any, domain: Domain) -> PodSummary | None:
    """The PodSummary of a raw pod object (as orjson decoded it from a LIST page or a watch line; it
    keeps none of it but the strings it names); None for one without a name."""
    if not isinstance(obj, dict):
        return None
    metadata = mapping_of(obj.get("metadata"))
    name, namespace = metadata.get("name"), metadata.get("namespace")
    if not isinstance(name, str) or not name or not isinstance(namespace, str):
        return None
    prefix = domain.prefix + "/"
    labels = tuple(
        sorted(
            (key, value)
            for key, value in mapping_of(metadata.get("labels")).items()
            if isinstance(value, str) and (key.startswith(prefix) or key == LABEL_POD_TEMPLATE_HASH)
        )
    )
    injected = mapping_of(metadata.get("annotations")).get(domain.skills_injected)
    status = mapping_of(obj.get("status"))
    return PodSummary(
        namespace=namespace,
        name=name,
        uid=text_of(metadata.get("uid")),
        resource_version=text_of(metadata.get("resourceVersion")),
        labels=labels,
        owner=_owner(metadata.get("ownerReferences")),
        skills_injected=injected if isinstance(injected, str) else None,
        ready=_ready(status.get("conditions")),
        deleting=bool(metadata.get("deletionTimestamp")),
        injected_key=domain.skills_injected,
        workloads=resolve_workload(obj),
    )


class PodStore:
    """PodSummaries by (namespace, name), and by each workload they answer to (client-go's Indexer
    with one index): the reconciler reads the pods of one workload without walking the cache.

    Written from the informer's thread: an event is a few dict assignments under a lock, O(1) however
    many pods are cached. `get` never locks (one dict read is atomic); readers that iterate get lists
    copied under the lock, never the live dicts (iterating a dict while another thread inserts raises
    RuntimeError)."""

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str], PodSummary] = {}
        self._by_workload: dict[tuple[str, WorkloadRef], dict[str, PodSummary]] = {}
        self._lock = threading.Lock()
        self.synced = threading.Event()

    def __len__(self) -> int:
        return len(self._by_key)

    def get(self, namespace: str, name: str) -> PodSummary | None:
        return self._by_key.get((namespace, name))

    def all(self) -> list[PodSummary]:
        with self._lock:
            return list(self._by_key.values())

    def of_workload(self, namespace: str, workload: WorkloadRef) -> list[PodSummary]:
        """The pods of `namespace` whose owner chain names `workload`."""
        with self._lock:
            return list(self._by_workload.get((namespace, workload), {}).values())

    # -- writes (the informer's thread) ------------------------------------------------------------

    def replace_all(self, items: Iterable[PodSummary]) -> None:
        by_key = {p.key: p for p in items}
        by_workload: dict[tuple[str, WorkloadRef], dict[str, PodSummary]] = {}
        for pod in by_key.values():
            for workload in pod.workloads:
                by_workload.setdefault((pod.namespace, workload), {})[pod.name] = pod
        with self._lock:
            self._by_key, self._by_workload = by_key, by_workload

    def upsert(self, obj: PodSummary) -> PodSummary | None:
        with self._lock:
            old = self._by_key.get(obj.key)
            if old is not None:
                self._unindex(old)
            self._by_key[obj.key] = obj
            for workload in obj.workloads:
                self._by_workload.setdefault((obj.namespace, workload), {})[obj.name] = obj
        return old

    def delete(self, namespace: str, name: str) -> PodSummary | None:
        with self._lock:
            old = self._by_key.pop((namespace, name), None)
            if old is not None:
                self._unindex(old)
        return old

    def _unindex(self, pod: PodSummary) -> None:
        for workload in pod.workloads:
            group = self._by_workload.get((pod.namespace, workload))
            if group is not None:
                group.pop(pod.name, None)
                if not group:
                    del self._by_workload[(pod.namespace, workload)]


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
    return OwnerRef(text_of(chosen.get("apiVersion")), text_of(chosen.get("kind")),
                    text_of(chosen.get("name")), chosen.get("controller") is True)


def _ready(conditions: Any) -> bool:
    if not isinstance(conditions, list):
        return False
    return any(isinstance(c, dict) and c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
