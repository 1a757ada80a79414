"""KubeInformerSource: keeps the index equal to the cluster's AgentRuntimes by LIST + WATCH.

The shape is client-go's reflector, which the API server's semantics are designed around:
LIST every namespace (paginated) and swap the whole view in at once, then WATCH from the list's
resourceVersion with bookmarks so that a re-watch resumes where it stopped. When the server says that
version is gone (410, as an ERROR event or as the HTTP status), events were lost, so only a fresh LIST
can say which objects were deleted meanwhile. Dropped connections and timeouts re-watch from the last
version seen, with capped, jittered backoff so that many replicas do not reconnect in step.

We read the raw watch stream instead of `kubernetes.watch.Watch`: that helper silently reconnects when a
stream ends, retries a 410 once from the same (already expired) version and hides the difference between
"expired" and "dropped", all of which this loop must see to decide between re-watch and re-LIST.
"""

from __future__ import annotations

import http.client
import json
import logging
import random
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import kubernetes.client
import kubernetes.config
import urllib3.exceptions
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines
from pydantic import ValidationError

from app.core.capability import parse_server_version
from app.core.index import AgentRuntimeIndex
from app.core.model import DEFAULT_AGENTRUNTIME_API, AgentRuntime

from .base import AgentRuntimeSource, bulk_load

log = logging.getLogger(__name__)

AGENTRUNTIME_PLURAL = "agentruntimes"
HTTP_GONE = 410
# A watch that stayed open this long was healthy, however it ended: the next retry starts with a short delay.
HEALTHY_STREAM_SECONDS = 1.0

# Why a watch was (re)started; the label of skill_webhook_watch_restarts_total.
RESTART_EXPIRED = "expired"  # 410: our resourceVersion or continue token is gone -> re-LIST
RESTART_DROPPED = "dropped"  # connection refused, reset, cut mid-stream or silent past the read timeout
RESTART_CLOSED = "closed"  # the server ended the stream normally (its timeoutSeconds)
RESTART_ERROR = "error"  # another API error (403 from missing RBAC, 5xx) or a garbled stream
RESTART_CRASH = "crash"  # a bug on our side; logged with its traceback, then re-LIST to be safe

RESTART_REASONS = (RESTART_EXPIRED, RESTART_DROPPED, RESTART_CLOSED, RESTART_ERROR, RESTART_CRASH)


def _ignore(_: Any) -> None:
    return None


@dataclass(frozen=True)
class InformerMetrics:
    """Hooks the service layer fills with Prometheus calls (app/sources stays free of prometheus)."""

    on_restart: Callable[[str], None] = _ignore  # one of RESTART_REASONS
    on_sync: Callable[[int], None] = _ignore  # after every complete LIST, with the number of cached objects
    on_event: Callable[[str], None] = _ignore  # ADDED / MODIFIED / DELETED / BOOKMARK applied


@dataclass
class Backoff:
    """Exponential backoff with "equal jitter": half the delay fixed, half random, capped."""

    initial: float
    maximum: float
    rng: random.Random = field(default_factory=random.Random)
    _attempt: int = 0

    def next_delay(self) -> float:
        ceiling = min(self.maximum, self.initial * (2 ** min(self._attempt, 30)))
        self._attempt += 1
        return ceiling / 2 + self.rng.uniform(0, ceiling / 2)

    def reset(self) -> None:
        self._attempt = 0


class ServerVersionUnavailable(RuntimeError):
    """The API server's version could not be read, so `--image-volumes auto` cannot be decided."""


class _ResourceExpired(Exception):
    """The server no longer has the resourceVersion (or continue token) we asked for."""


class _StreamError(Exception):
    """The watch stream said something we cannot follow (an ERROR event, a line that is not JSON)."""


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
        page_size: int = 500,
        metrics: InformerMetrics | None = None,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        watch_timeout: int = 300,
        connect_timeout: float = 10.0,
        list_timeout: float = 60.0,
        rng: random.Random | None = None,
    ) -> None:
        """`watch_timeout`: the server ends each watch after between this and twice this many seconds
        (randomised like client-go, so that replicas do not re-watch in step)."""
        super().__init__(index)
        self._api_client = api_client
        self._objects = kubernetes.client.CustomObjectsApi(api_client)
        self._group, _, self._version = agentruntime_api.partition("/")
        self._page_size = page_size
        self._metrics = metrics or InformerMetrics()
        self._rng = rng or random.Random()
        self._backoff = Backoff(backoff_initial, backoff_max, self._rng)
        self._watch_timeout = max(1, int(watch_timeout))
        self._connect_timeout = connect_timeout
        self._list_timeout = list_timeout
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._response_lock = threading.Lock()
        self._response: Any = None
        # Set when a watch stream delivered an event or stayed open a while: the connection is healthy,
        # so the next backoff starts small again.
        self._progressed = False
        # Where the next watch starts; None: the next step is a LIST.
        self._resource_version: str | None = None

    # -- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="agentruntime-informer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        with self._response_lock:
            response = self._response
        _interrupt(response)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10)

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
                    raise ServerVersionUnavailable(f"cannot read the API server's /version: {_describe(exc)}") from exc
                log.warning("reading /version failed (attempt %d of %d): %s", attempt, attempts, _describe(exc))
                self._stopping.wait(backoff.next_delay())
        raise AssertionError("unreachable")

    # -- the informer loop ---------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._progressed = False
            try:
                if self._resource_version is None:
                    self._resource_version = self._relist()
                self._watch(self._resource_version)
                reason = RESTART_CLOSED
            except Exception as exc:  # noqa: BLE001 - the thread must survive anything; see _classify
                if self._stopping.is_set():
                    break
                reason = _classify(exc)
                if reason in (RESTART_EXPIRED, RESTART_CRASH):
                    self._resource_version = None
                if reason == RESTART_CRASH:
                    log.exception("AgentRuntime informer crashed; restarting it with a fresh LIST")
                else:
                    log.warning("AgentRuntime watch interrupted (%s): %s", reason, _describe(exc))
            if self._stopping.is_set():
                break
            if self._progressed:
                self._backoff.reset()
            self._count_restart(reason)
            self._stopping.wait(self._backoff.next_delay())
        log.info("AgentRuntime informer stopped")

    def _relist(self) -> str:
        """LIST every page, swap the index in at once, mark it synced; returns the list's resourceVersion."""
        runtimes: list[AgentRuntime] = []
        continue_token: str | None = None
        while True:
            page = self._objects.list_cluster_custom_object(
                self._group,
                self._version,
                AGENTRUNTIME_PLURAL,
                limit=self._page_size,
                _continue=continue_token,
                _request_timeout=(self._connect_timeout, self._list_timeout),
            )
            if not isinstance(page, dict):
                raise _StreamError(f"LIST answered {type(page).__name__}, not a list object")
            runtimes.extend(r for r in map(_parse, page.get("items") or []) if r is not None)
            metadata = page.get("metadata") or {}
            continue_token = metadata.get("continue") or None
            if continue_token is None:
                break
        resource_version = metadata.get("resourceVersion")
        if not resource_version:
            raise _StreamError("LIST answer has no metadata.resourceVersion to watch from")
        with bulk_load():
            self.index.replace_all(runtimes)
        first = not self.index.synced.is_set()
        self.index.synced.set()
        log.info(
            "listed %d AgentRuntimes at resourceVersion %s%s",
            len(self.index),
            resource_version,
            " (cache synchronized)" if first else "",
        )
        self._metrics.on_sync(len(self.index))
        return str(resource_version)

    def _watch(self, resource_version: str) -> None:
        """Apply one watch stream to the index, moving `_resource_version` along with every event, so that
        the next watch resumes from the last one seen even when this stream breaks."""
        timeout = self._watch_timeout + self._rng.randrange(self._watch_timeout + 1)
        response = self._objects.list_cluster_custom_object(
            self._group,
            self._version,
            AGENTRUNTIME_PLURAL,
            watch=True,
            allow_watch_bookmarks=True,
            resource_version=resource_version,
            timeout_seconds=timeout,
            _preload_content=False,
            # The server closes the stream after `timeout`; silence well past that is a dead connection.
            _request_timeout=(self._connect_timeout, timeout + 30),
        )
        with self._response_lock:
            self._response = response
        opened = time.monotonic()
        try:
            if self._stopping.is_set():
                return
            for line in iter_resp_lines(response):
                if self._stopping.is_set():
                    break
                if line.strip():
                    self._resource_version = self._apply(_decode_event(line)) or self._resource_version
        finally:
            with self._response_lock:
                self._response = None
            if time.monotonic() - opened >= HEALTHY_STREAM_SECONDS:
                self._progressed = True
            response.close()
            response.release_conn()

    def _apply(self, event: dict[str, Any]) -> str | None:
        """Apply one watch event to the index; returns the resourceVersion it carries."""
        event_type = event.get("type")
        obj = event.get("object")
        if not isinstance(obj, dict):
            raise _StreamError(f"{event_type} event without an object")
        if event_type == "ERROR":
            message = f"{obj.get('reason', '')}: {obj.get('message', '')} (code {obj.get('code')})"
            if obj.get("code") == HTTP_GONE:
                raise _ResourceExpired(message)
            raise _StreamError(f"ERROR event from the watch: {message}")
        metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
        resource_version = metadata.get("resourceVersion")
        namespace, name = str(metadata.get("namespace", "")), str(metadata.get("name", ""))
        if event_type in ("ADDED", "MODIFIED"):
            runtime = _parse(obj)
            if runtime is not None:
                self.index.upsert(runtime)
            else:
                # The object on the server is no longer usable: keeping its previous version would act
                # on a spec that no longer exists.
                self.index.delete(namespace, name)
        elif event_type == "DELETED":
            self.index.delete(namespace, name)
        elif event_type != "BOOKMARK":
            log.warning("ignoring watch event of unknown type %r", event_type)
            return None
        self._progressed = True
        self._metrics.on_event(str(event_type))
        return str(resource_version) if resource_version else None

    def _count_restart(self, reason: str) -> None:
        try:
            self._metrics.on_restart(reason)
        except Exception:  # noqa: BLE001 - a broken metrics hook must not stop the informer
            log.exception("metrics hook on_restart failed")


def _parse(obj: Any) -> AgentRuntime | None:
    """AgentRuntime.from_object, or None (logged) for an object this webhook cannot read."""
    try:
        return AgentRuntime.for_cache(obj)
    except ValidationError as exc:
        metadata = obj.get("metadata") if isinstance(obj, dict) else None
        metadata = metadata if isinstance(metadata, dict) else {}
        log.warning(
            "skipping AgentRuntime %s/%s that cannot be read: %s",
            metadata.get("namespace", "?"),
            metadata.get("name", "?"),
            "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()),
        )
        return None


def _decode_event(line: str) -> dict[str, Any]:
    try:
        event = json.loads(line)
    except ValueError as exc:
        raise _StreamError(f"watch line is not JSON: {line[:200]!r}") from exc
    if not isinstance(event, dict):
        raise _StreamError(f"watch line is not an event object: {line[:200]!r}")
    return event


def _classify(exc: Exception) -> str:
    if isinstance(exc, _ResourceExpired):
        return RESTART_EXPIRED
    if isinstance(exc, ApiException):
        return RESTART_EXPIRED if exc.status == HTTP_GONE else RESTART_ERROR
    if isinstance(exc, _StreamError):
        return RESTART_ERROR
    if isinstance(exc, (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError)):
        return RESTART_DROPPED
    return RESTART_CRASH


def _describe(exc: Exception) -> str:
    """One line for the log: ApiException's own text spans lines and repeats every response header."""
    if isinstance(exc, ApiException):
        body = exc.body if isinstance(exc.body, str) else ""
        try:
            message = json.loads(body).get("message", "") if body else ""
        except (ValueError, AttributeError):
            message = ""
        return f"HTTP {exc.status} {exc.reason}" + (f": {message}" if message else "")
    return f"{type(exc).__name__}: {exc}"


def _interrupt(response: Any) -> None:
    """Unblock a thread reading `response` by shutting its socket down (close() could wait on it)."""
    sock = getattr(getattr(response, "connection", None), "sock", None)
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
