"""What a reflector lists and watches (`ListWatch`), and how (`ReflectorTuning`)."""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from typing import Any, Callable

import kubernetes.client

from app.sources.clock import Clock


@dataclass(frozen=True)
class ListWatch:
    """What a Reflector lists and watches: a `list_*` call of the official client with its positional
    arguments bound (it takes limit, _continue, watch, resource_version, ... like every list call)."""

    call: Callable[..., Any]
    description: str
    label_selector: str | None = None

    @classmethod
    def custom_objects(
        cls, api_client: kubernetes.client.ApiClient, group: str, version: str, plural: str, *, label_selector: str | None = None
    ) -> "ListWatch":
        """A custom resource in every namespace."""
        api = kubernetes.client.CustomObjectsApi(api_client)
        call = functools.partial(api.list_cluster_custom_object, group, version, plural)
        return cls(call, f"{plural}.{group}", label_selector)

    @classmethod
    def core_pods(cls, api_client: kubernetes.client.ApiClient, *, label_selector: str | None = None) -> "ListWatch":
        """Pods in every namespace."""
        api = kubernetes.client.CoreV1Api(api_client)
        return cls(api.list_pod_for_all_namespaces, "pods", label_selector)

    def selector_options(self) -> dict[str, Any]:
        return {"label_selector": self.label_selector} if self.label_selector else {}


@dataclass(frozen=True)
class ReflectorTuning:
    """How a reflector lists and watches; the same knobs for every kind it watches.

    `watch_timeout`: the server ends each watch after between this and twice this many seconds
    (randomised like client-go, so that replicas do not re-watch in step)."""

    page_size: int = 500
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    watch_timeout: int = 300
    connect_timeout: float = 10.0
    list_timeout: float = 60.0
    rng: random.Random | None = None
    clock: Clock | None = None
