"""KubeInformerSource: keeps the index equal to the cluster's AgentRuntimes by LIST + WATCH.

One use of the Reflector (app/sources/kube/reflector.py, client-go's shape): AgentRuntimes of every namespace,
decoded into the trimmed model admission reads, kept in the AgentRuntimeIndex.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

import kubernetes.client
import kubernetes.config
import urllib3.exceptions
from kubernetes.client.exceptions import ApiException

from app.core.decode import cached_runtime
from app.core.mutation.capability import parse_server_version
from app.core.matching.index import AgentRuntimeIndex
from app.core.model import DEFAULT_AGENTRUNTIME_API, AgentRuntime
from app.core.validation.agentruntime import ValidationOptions

from app.sources.base import AgentRuntimeSource
from app.sources.backoff import Backoff
from app.sources.kube.listwatch import ListWatch, ReflectorTuning
from app.sources.kube.reflector import InformerMetrics, Listener, Reflector, describe

log = logging.getLogger(__name__)

AGENTRUNTIME_PLURAL = "agentruntimes"


class ServerVersionUnavailable(RuntimeError):
    """The API server's version could not be read, so `--image-volumes auto` cannot be decided."""


def make_api_client(kubeconfig: Path | None) -> kubernetes.client.ApiClient:
    """An ApiClient from `kubeconfig`, or from the pod's service account when there is none."""
    if kubeconfig is not None:
        # persist_config=False: refreshed credentials must not be written back (read-only root filesystem).
        return kubernetes.config.new_client_from_config(config_file=str(kubeconfig), persist_config=False)
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_incluster_config(client_configuration=configuration)
    return kubernetes.client.ApiClient(configuration)


class KubeInformerSource(AgentRuntimeSource):
    """AgentRuntimes of every namespace, kept current by LIST + WATCH on a daemon thread."""

    name = "kube"

    def __init__(
        self,
        index: AgentRuntimeIndex,
        *,
        api_client: kubernetes.client.ApiClient,
        agentruntime_api: str = DEFAULT_AGENTRUNTIME_API,
        decode: Callable[[dict[str, Any]], AgentRuntime | None] | None = None,
        listeners: Sequence[Listener] = (),
        metrics: InformerMetrics | None = None,
        **tuning: Any,
    ) -> None:
        """`decode`: raw object -> cached AgentRuntime, or None for one that cannot be used (default:
        `decode_agentruntime`). `listeners` hear (old, new) for every change of the index. `tuning`:
        the fields of ReflectorTuning (page_size, backoff_initial, watch_timeout, ...)."""
        super().__init__(index)
        self._api_client = api_client
        settings = ReflectorTuning(**tuning)
        self._rng = settings.rng or random.Random()
        self._connect_timeout = settings.connect_timeout
        self._list_timeout = settings.list_timeout
        group, _, version = agentruntime_api.partition("/")
        self.reflector: Reflector[AgentRuntime] = Reflector(
            ListWatch.custom_objects(api_client, group, version, AGENTRUNTIME_PLURAL),
            decode or decode_agentruntime,
            index,
            version=lambda runtime: runtime.metadata.resourceVersion,
            kind="AgentRuntime",
            logger=log,
            synced=index.synced,
            listeners=listeners,
            metrics=metrics,
            tuning=replace(settings, rng=self._rng),
        )

    # -- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        self.reflector.start("agentruntime-informer")

    def stop(self) -> None:
        self.reflector.stop()

    def server_version(self, *, attempts: int = 5) -> tuple[int, int]:
        """(major, minor) from /version. Retries briefly, then raises: an unknown version must not be
        mistaken for "no server" (which would turn `--image-volumes auto` on)."""
        backoff = Backoff(0.5, 4.0, self._rng)
        for attempt in range(1, attempts + 1):
            try:
                # Read the raw JSON: the generated VersionInfo model insists on fields (buildDate,
                # compiler, ...) that some distributions leave out, and only three of them matter here.
                response = kubernetes.client.VersionApi(self._api_client).get_code(
                    _preload_content=False, _request_timeout=(self._connect_timeout, self._list_timeout)
                )
                info = json.loads(response.data)
                if not isinstance(info, dict):
                    raise ValueError(f"/version answered {info!r}")
                return parse_server_version(info.get("major"), info.get("minor"), info.get("gitVersion"))
            except ValueError as exc:
                raise ServerVersionUnavailable(f"cannot read the API server's /version: {exc}") from exc
            except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
                if attempt == attempts:
                    raise ServerVersionUnavailable(f"cannot read the API server's /version: {describe(exc)}") from exc
                # Debug only: the error raised after the last attempt says what failed, once.
                log.debug("reading /version failed (attempt %d of %d): %s", attempt, attempts, describe(exc))
                self.reflector.stopping.wait(backoff.next_delay())
        raise AssertionError("unreachable")


def decode_agentruntime(obj: Any, options: ValidationOptions = ValidationOptions()) -> AgentRuntime | None:
    """The cached AgentRuntime (`cached_runtime`: skills from spec or annotation, the verdict of the
    stored-object rules recorded), or None (logged) for an object whose name or target cannot be read."""
    if not isinstance(obj, dict):
        return None
    runtime = cached_runtime(obj, options)
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    if runtime is None:
        log.warning("skipping AgentRuntime %s/%s that cannot be read", metadata.get("namespace", "?"),
                    metadata.get("name", "?"))
    elif runtime.problems:
        log.warning("AgentRuntime %s/%s is invalid; its pods will be denied until it is fixed: %s",
                    runtime.metadata.namespace, runtime.metadata.name, "; ".join(runtime.problems))
    return runtime
