"""Reflector: keeps a store equal to one kind of Kubernetes object by LIST + WATCH.

The shape is client-go's reflector, which the API server's semantics are designed around:
LIST (paginated) and swap the whole view in at once, then WATCH from the list's resourceVersion with
bookmarks so that a re-watch resumes where it stopped. When the server says that version is gone (410,
as an ERROR event or as the HTTP status), events were lost, so only a fresh LIST can say which objects
were deleted meanwhile. Dropped connections and timeouts re-watch from the last version seen, with
capped, jittered backoff so that many replicas do not reconnect in step.

One implementation serves every informer (AgentRuntimes, pods): what differs is what is listed
(`ListWatch`, in listwatch.py), how a raw object becomes a cached one (`decode`) and where it is kept
(a `Store`).
Listeners hear about every change as (old, new), from watch events and from the diff of a re-LIST.

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
from dataclasses import dataclass
from typing import Any, Callable, Generic, Iterable, Protocol, Sequence, TypeVar

import orjson
import urllib3.exceptions
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from app.sources.backoff import Backoff
from app.sources.clock import Clock
from app.sources.kube.listwatch import ListWatch, ReflectorTuning

log = logging.getLogger(__name__)

HTTP_GONE = 410
# A watch that stayed open this long was healthy, however it ended: the next retry starts with a short delay.
HEALTHY_STREAM_SECONDS = 1.0

# Why a watch was (re)started; the label of skill_webhook_watch_restarts_total.
RESTART_EXPIRED = "expired"  # 410: our resourceVersion or continue token is gone -> re-LIST
RESTART_DROPPED = "dropped"  # connection refused, reset, cut mid-stream or silent past the read timeout
RESTART_CLOSED = "closed"  # the server ended the stream normally (its timeoutSeconds)
RESTART_ERROR = "error"  # another API error (403 from missing RBAC, 5xx) or a garbled stream
RESTART_CRASH = "crash"  # a bug on our side; logged with its traceback, then re-LIST to be safe

T = TypeVar("T")
Key = tuple[str, str]  # (namespace, name)


def _ignore(_: Any) -> None:
    return None


@dataclass(frozen=True)
class InformerMetrics:
    """Hooks the service layer fills with Prometheus calls (app/sources stays free of prometheus)."""

    on_restart: Callable[[str], None] = _ignore  # one of the RESTART_* reasons above
    on_sync: Callable[[int], None] = _ignore  # after every complete LIST, with the number of cached objects
    on_event: Callable[[str], None] = _ignore  # ADDED / MODIFIED / DELETED / BOOKMARK applied


class Store(Protocol[T]):
    """Where a Reflector keeps decoded objects. Writes come from the reflector's one thread."""

    def replace_all(self, items: Iterable[T]) -> None: ...

    def upsert(self, obj: T) -> T | None: ...  # returns the object it replaced, if any

    def delete(self, namespace: str, name: str) -> T | None: ...  # returns the object, if it was there

    def get(self, namespace: str, name: str) -> T | None: ...

    def all(self) -> list[T]: ...

    def __len__(self) -> int: ...


# Called after each change with (old, new): (None, new) added, (old, new) changed, (old, None) removed.
Listener = Callable[[Any, Any], None]


class _ResourceExpired(Exception):
    """The server no longer has the resourceVersion (or continue token) we asked for."""


class _StreamError(Exception):
    """The watch stream said something we cannot follow (an ERROR event, a line that is not JSON)."""


def _default_key(obj: Any) -> Key:
    return obj.key


class Reflector(Generic[T]):
    """Keeps `store` equal to what `list_watch` names, on a daemon thread.

    `decode` turns a raw object into what the store keeps, or None for one that cannot be used (then
    any previous version is dropped: acting on a spec that no longer exists would be wrong). `key` and
    `version` read (namespace, name) and resourceVersion from a decoded object, to diff a re-LIST.
    `synced` is set after the first complete LIST and stays set.
    """

    def __init__(
        self,
        list_watch: ListWatch,
        decode: Callable[[dict[str, Any]], T | None],
        store: Store[T],
        *,
        version: Callable[[T], str],
        key: Callable[[T], Key] = _default_key,
        kind: str = "object",
        logger: logging.Logger | None = None,
        synced: threading.Event | None = None,
        listeners: Sequence[Listener] = (),
        metrics: InformerMetrics | None = None,
        tuning: ReflectorTuning | None = None,
    ) -> None:
        """`kind` names the objects in logs ("AgentRuntime", "pod"); `tuning`: pages, timeouts, backoff."""
        self.list_watch = list_watch
        self.store = store
        self.synced = synced if synced is not None else threading.Event()
        self._decode = decode
        self._key = key
        self._version = version
        self._kind = kind
        self._log = logger or log
        self._listeners: list[Listener] = list(listeners)
        self._metrics = metrics or InformerMetrics()
        tuning = tuning or ReflectorTuning()
        self._page_size = tuning.page_size
        self._rng = tuning.rng or random.Random()
        self._backoff = Backoff(tuning.backoff_initial, tuning.backoff_max, self._rng)
        self._clock = tuning.clock or Clock()
        self._watch_timeout = max(1, int(tuning.watch_timeout))
        self._connect_timeout = tuning.connect_timeout
        self._list_timeout = tuning.list_timeout
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._response_lock = threading.Lock()
        self._response: Any = None
        # Set when a watch stream delivered an event or stayed open a while: the connection is healthy,
        # so the next backoff starts small again.
        self._progressed = False
        # Set while the server does not answer at all (connection refused, reset): the next answer resets
        # the backoff.
        self._unanswered = False
        # Where the next watch starts; None: the next step is a LIST.
        self._resource_version: str | None = None

    def add_listener(self, listener: Listener) -> None:
        """Hear (old, new) for every later change; add listeners before `start()`."""
        self._listeners.append(listener)

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    # -- lifecycle -----------------------------------------------------------------------------------

    def start(self, thread_name: str | None = None) -> None:
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name=thread_name or f"{self._kind}-informer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the loop, interrupting an open watch; safe to call twice."""
        self._stopping.set()
        with self._response_lock:
            response = self._response
        _interrupt(response)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10)

    @property
    def stopping(self) -> threading.Event:
        return self._stopping

    # -- the loop ------------------------------------------------------------------------------------

    def _run(self) -> None:
        previous: str | None = None
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
                    self._log.exception("%s informer crashed; restarting it with a fresh LIST", self._kind)
                else:
                    self._log.warning("%s watch interrupted (%s): %s", self._kind, reason, describe(exc))
            if self._stopping.is_set():
                break
            # An answer from the server (a 410, an error status, a closed stream) after attempts it did not
            # answer means the outage is over: the back-off grown meanwhile must not delay the recovery.
            answered = reason in (RESTART_EXPIRED, RESTART_ERROR, RESTART_CLOSED)
            if self._progressed or (answered and self._unanswered):
                self._backoff.reset()
            if reason != RESTART_CRASH:
                self._unanswered = reason == RESTART_DROPPED
            self._count_restart(reason)
            # 410: only a fresh LIST helps, and it helps now (once; a second 410 in a row backs off).
            relist_now = reason == RESTART_EXPIRED and previous != RESTART_EXPIRED
            previous = reason
            self._clock.sleep(0 if relist_now else self._backoff.next_delay(), self._stopping)
        self._log.info("%s informer stopped", self._kind)

    def _relist(self) -> str:
        """LIST every page, swap the store in at once, tell listeners what changed, mark it synced;
        returns the list's resourceVersion."""
        items: list[T] = []
        continue_token: str | None = None
        while True:
            response = self.list_watch.call(
                limit=self._page_size,
                _continue=continue_token,
                _preload_content=False,
                _request_timeout=(self._connect_timeout, self._list_timeout),
                **self.list_watch.selector_options(),
            )
            try:
                page = orjson.loads(response.data)
            except orjson.JSONDecodeError as exc:
                raise _StreamError(f"LIST answer is not JSON: {exc}") from exc
            finally:
                response.release_conn()
            del response  # the raw bytes and each decoded page go before the next: one page at a time
            if not isinstance(page, dict):
                raise _StreamError(f"LIST answered {type(page).__name__}, not a list object")
            raw_items, metadata = page.pop("items", None) or [], page.get("metadata") or {}
            del page
            items.extend(item for item in map(self._decode, raw_items) if item is not None)
            del raw_items
            continue_token = metadata.get("continue") or None
            if continue_token is None:
                break
        resource_version = metadata.get("resourceVersion")
        if not resource_version:
            raise _StreamError("LIST answer has no metadata.resourceVersion to watch from")
        before = {self._key(o): o for o in self.store.all()} if self._listeners else {}
        self.store.replace_all(items)
        if self._listeners:
            self._announce_diff(before, items)
        first = not self.synced.is_set()
        self.synced.set()
        self._log.info(
            "listed %d %ss at resourceVersion %s%s",
            len(self.store),
            self._kind,
            resource_version,
            " (cache synchronized)" if first else "",
        )
        self._metrics.on_sync(len(self.store))
        return str(resource_version)

    def _announce_diff(self, before: dict[Key, T], items: list[T]) -> None:
        after = {self._key(o): o for o in items}
        for key, new in after.items():
            old = before.get(key)
            if old is None or self._version(old) != self._version(new):
                self._notify(old, new)
        for key, old in before.items():
            if key not in after:
                self._notify(old, None)

    def _watch(self, resource_version: str) -> None:
        """Apply one watch stream to the store, moving `_resource_version` along with every event, so that
        the next watch resumes from the last one seen even when this stream breaks."""
        timeout = self._watch_timeout + self._rng.randrange(self._watch_timeout + 1)
        response = self.list_watch.call(
            watch=True,
            allow_watch_bookmarks=True,
            resource_version=resource_version,
            timeout_seconds=timeout,
            _preload_content=False,
            # The server closes the stream after `timeout`; silence well past that is a dead connection.
            _request_timeout=(self._connect_timeout, timeout + 30),
            **self.list_watch.selector_options(),
        )
        with self._response_lock:
            self._response = response
        opened = self._clock.now()
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
            if self._clock.now() - opened >= HEALTHY_STREAM_SECONDS:
                self._progressed = True
            response.close()
            response.release_conn()

    def _apply(self, event: dict[str, Any]) -> str | None:
        """Apply one watch event to the store; returns the resourceVersion it carries."""
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
            item = self._decode(obj)
            if item is not None:
                self._notify(self.store.upsert(item), item)
            else:
                # The object on the server is no longer usable: keeping its previous version would act
                # on a spec that no longer exists.
                self._notify(self.store.delete(namespace, name), None)
        elif event_type == "DELETED":
            self._notify(self.store.delete(namespace, name), None)
        elif event_type != "BOOKMARK":
            self._log.warning("ignoring watch event of unknown type %r", event_type)
            return None
        self._progressed = True
        self._metrics.on_event(str(event_type))
        return str(resource_version) if resource_version else None

    def _notify(self, old: T | None, new: T | None) -> None:
        if old is None and new is None:
            return
        for listener in self._listeners:
            try:
                listener(old, new)
            except Exception:  # noqa: BLE001 - one broken listener must not stop the informer
                self._log.exception("%s change listener failed", self._kind)

    def _count_restart(self, reason: str) -> None:
        try:
            self._metrics.on_restart(reason)
        except Exception:  # noqa: BLE001 - a broken metrics hook must not stop the informer
            self._log.exception("metrics hook on_restart failed")


def _decode_event(line: str) -> dict[str, Any]:
    try:
        event = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
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


def describe(exc: Exception) -> str:
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
