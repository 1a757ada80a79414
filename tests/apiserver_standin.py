"""A small stand-in Kubernetes API server for AgentRuntimes, speaking the real wire protocol.

The real `kubernetes` client talks to it over plain HTTP on 127.0.0.1, so the informer is tested end to
end without a cluster and without mocking the client. It serves:

- `GET /version` (configurable answer);
- `GET /apis/<group>/<version>/agentruntimes` LIST, paginated with `limit`/`continue` from a consistent
  snapshot, answering 410 Expired for an unknown continue token;
- the same path with `watch=true`: a chunked stream of JSON events from `resourceVersion` on, BOOKMARK
  events when asked and allowed, ERROR 410 events, HTTP 410 (or a 200 + ERROR event, as configured) when the
  requested version is older than the compaction floor, and `timeoutSeconds`.

Faults the tests trigger: `drop_watches` (cut open streams, optionally mid-event), `expire_watches`
(ERROR 410 to every open stream), `outage` (refuse service while changes happen, then compact),
`restart` (listener down, every object re-stamped with new resourceVersions, history gone).
"""

from __future__ import annotations

import base64
import bisect
import contextlib
import copy
import json
import math
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator, NamedTuple
from urllib.parse import parse_qs, urlparse

GROUP = "agent.kagenti.dev"
VERSION = "v1alpha1"
PLURAL = "agentruntimes"
API_VERSION = f"{GROUP}/{VERSION}"


def agentruntime(
    name: str,
    namespace: str = "team-a",
    *,
    target: str = "resume-agent",
    target_kind: str = "Deployment",
    target_api_version: str = "apps/v1",
    skills: list[dict[str, Any]] | None = None,
    created: str | None = None,
    spec: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An AgentRuntime object as a user would create it."""
    if skills is None:
        skills = [
            {"name": "resume-reviewer", "image": "ghcr.io/example/resume-reviewer:v1", "mountPath": "/skills/review"}
        ]
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if created is not None:
        metadata["creationTimestamp"] = created
    return {
        "apiVersion": API_VERSION,
        "kind": "AgentRuntime",
        "metadata": metadata,
        "spec": spec
        if spec is not None
        else {
            "type": "agent",
            "targetRef": {"apiVersion": target_api_version, "kind": target_kind, "name": target},
            "skills": skills,
        },
    }


def version_info(major: str, minor: str, git_version: str) -> dict[str, str]:
    """A /version answer shaped like a real API server's."""
    return {
        "major": major,
        "minor": minor,
        "emulationMajor": major,
        "emulationMinor": minor,
        "gitVersion": git_version,
        "gitCommit": "0123456789abcdef0123456789abcdef01234567",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.24.4",
        "compiler": "gc",
        "platform": "linux/amd64",
    }


def status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


class _Generations(NamedTuple):
    """How many drops, expiries and bookmarks were requested; a stream acts on the ones it has not seen."""

    drop: int
    expire: int
    bookmark: int


class StandInApiServer:
    """The server state (objects, history, faults) plus the HTTP listener that serves it."""

    def __init__(
        self,
        *,
        version: dict[str, str] | None = None,
        gone_as_http_status: bool = True,
        bookmark_interval: float | None = None,
    ) -> None:
        self.version = version or version_info("1", "33+", "v1.33.2-gke.1000")
        # How a watch from a compacted resourceVersion is refused: HTTP 410 at the start, or (like the
        # watch cache does) 200 followed by an ERROR event with code 410.
        self.gone_as_http_status = gone_as_http_status
        self.bookmark_interval = bookmark_interval
        self.lists_open = threading.Event()  # clear it to hold every LIST until it is set again
        self.lists_open.set()
        self.requests: list[tuple[str, dict[str, str]]] = []  # (path, query) of every API request
        # Called with each LIST page before it is sent (a test can expire continue tokens from it).
        self.after_list_page: Callable[[dict[str, Any]], None] | None = None

        self._cond = threading.Condition()
        self._objects: dict[tuple[str, str], dict[str, Any]] = {}
        self._history: list[tuple[int, str, dict[str, Any]]] = []  # (resourceVersion, type, object)
        self._rv = 100
        self._floor = 100  # watches from a version below this get 410: that history was compacted
        self._created = 0
        self._snapshots: dict[str, tuple[int, list[dict[str, Any]]]] = {}
        self._drop_generation = 0
        self._drop_mid_event = False
        self._expire_generation = 0
        self._bookmark_generation = 0
        self._refusing = False
        self._unseen = False
        self._open_watches = 0
        self._connections: set[socket.socket] = set()
        self._httpd: ThreadingHTTPServer | None = None
        self._serve_thread: threading.Thread | None = None
        self.port = 0

    # -- listener ------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "StandInApiServer":
        handler = type("Handler", (_Handler,), {"standin": self})
        httpd = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        httpd.daemon_threads = True
        self.port = httpd.server_address[1]
        self._httpd = httpd
        self._serve_thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._serve_thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut every connection (the process "dies"); `start()` serves the same port."""
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        with self._cond:
            self._drop_generation += 1
            self._cond.notify_all()
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def restart(self, downtime: float = 0.2, bump: int = 1000) -> None:
        """A server brought back from a backup: every object gets a new resourceVersion and the watch
        history is gone, so watches from any earlier version get 410."""
        self.stop()
        time.sleep(downtime)
        with self._cond:
            self._rv += bump
            for obj in sorted(self._objects.values(), key=lambda o: o["metadata"]["name"]):
                self._rv += 1
                obj["metadata"]["resourceVersion"] = str(self._rv)
            self._history.clear()
            self._snapshots.clear()
            self._floor = self._rv + 1
        self.start()

    # -- the objects (the server's truth) ------------------------------------------------------------

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        with self._cond:
            obj = copy.deepcopy(obj)
            metadata = obj.setdefault("metadata", {})
            key = (metadata.get("namespace", ""), metadata["name"])
            if key in self._objects:
                raise KeyError(f"{key} exists")
            metadata.setdefault("uid", str(uuid.uuid4()))
            self._created += 1
            # Distinct, increasing seconds so "the oldest wins" has a well-defined answer.
            minutes, seconds = divmod(self._created, 60)
            timestamp = f"2026-01-01T{minutes // 60:02d}:{minutes % 60:02d}:{seconds:02d}Z"
            metadata.setdefault("creationTimestamp", timestamp)
            metadata["generation"] = 1
            return self._record("ADDED", key, obj)

    def update(self, obj: dict[str, Any]) -> dict[str, Any]:
        with self._cond:
            metadata = obj["metadata"]
            key = (metadata.get("namespace", ""), metadata["name"])
            current = self._objects[key]
            obj = copy.deepcopy(obj)
            for field in ("uid", "creationTimestamp"):
                obj["metadata"][field] = current["metadata"][field]
            obj["metadata"]["generation"] = current["metadata"]["generation"] + 1
            return self._record("MODIFIED", key, obj)

    def delete(self, namespace: str, name: str) -> dict[str, Any]:
        with self._cond:
            return self._record("DELETED", (namespace, name), copy.deepcopy(self._objects[(namespace, name)]))

    def objects(self) -> list[dict[str, Any]]:
        with self._cond:
            return copy.deepcopy(list(self._objects.values()))

    @property
    def resource_version(self) -> int:
        return self._rv

    def _record(self, event_type: str, key: tuple[str, str], obj: dict[str, Any]) -> dict[str, Any]:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        if event_type == "DELETED":
            del self._objects[key]
        else:
            self._objects[key] = obj
        if not self._unseen:
            self._history.append((self._rv, event_type, copy.deepcopy(obj)))
        self._cond.notify_all()
        return copy.deepcopy(obj)

    def advance(self, steps: int = 1) -> int:
        """Other resources changed: the resourceVersion moves on without an AgentRuntime event."""
        with self._cond:
            self._rv += steps
            return self._rv

    # -- faults --------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def unseen_changes(self) -> Iterator[None]:
        """Changes inside the block reach the store but no watch stream (their history is compacted),
        as when a watch cache falls behind; only an ERROR 410 and a fresh LIST reveal them."""
        with self._cond:
            self._unseen = True
        try:
            yield
        finally:
            with self._cond:
                self._unseen = False
            self.compact()

    def expire_continue_tokens(self) -> None:
        with self._cond:
            self._snapshots.clear()

    def compact(self) -> None:
        """Forget the history up to now: watches from any earlier resourceVersion get 410."""
        with self._cond:
            self._floor = self._rv + 1
            self._history.clear()
            self._snapshots.clear()

    def drop_watches(self, mid_event: bool = False) -> None:
        """Cut every open watch stream without the closing chunk (optionally halfway through an event)."""
        with self._cond:
            self._drop_generation += 1
            self._drop_mid_event = mid_event
            self._cond.notify_all()

    def expire_watches(self) -> None:
        """Send ERROR 410 to every open watch and compact, as a watch cache that fell too far behind."""
        with self._cond:
            self._expire_generation += 1
            self._cond.notify_all()
        self.compact()

    def bookmark(self) -> None:
        """Send a BOOKMARK at the current resourceVersion to every open watch that allows bookmarks."""
        with self._cond:
            self._bookmark_generation += 1
            self._cond.notify_all()

    @contextlib.contextmanager
    def outage(self) -> Iterator[None]:
        """Cut open watches and refuse every API request inside the block; the changes made meanwhile
        are compacted away, so the informer can only learn them from a fresh LIST."""
        with self._cond:
            self._refusing = True
        self.drop_watches()
        try:
            yield
        finally:
            self.compact()
            with self._cond:
                self._refusing = False

    @property
    def open_watches(self) -> int:
        return self._open_watches

    def wait_for_watches(self, count: int = 1, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._open_watches < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{self._open_watches} open watches, wanted {count}")
                self._cond.wait(remaining)

    def watch_requests(self) -> list[dict[str, str]]:
        return [query for _, query in list(self.requests) if query.get("watch") in ("true", "1")]

    # -- request handling (called from handler threads) ----------------------------------------------

    def _list(self, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        with self._cond:
            token = query.get("continue")
            if token:
                try:
                    snapshot_id, offset_text = base64.urlsafe_b64decode(token.encode()).decode().split(":")
                    rv, items = self._snapshots[snapshot_id]
                    offset = int(offset_text)
                except (ValueError, KeyError):
                    return 410, status(410, "Expired", "The provided continue parameter is too old")
            else:
                snapshot_id, offset, rv = uuid.uuid4().hex, 0, self._rv
                items = [copy.deepcopy(self._objects[k]) for k in sorted(self._objects)]
                self._snapshots[snapshot_id] = (rv, items)
            limit = int(query.get("limit") or 0) or len(items) or 1
            page = items[offset : offset + limit]
            metadata: dict[str, Any] = {"resourceVersion": str(rv)}
            if offset + limit < len(items):
                metadata["continue"] = base64.urlsafe_b64encode(f"{snapshot_id}:{offset + limit}".encode()).decode()
                metadata["remainingItemCount"] = len(items) - offset - limit
            else:
                self._snapshots.pop(snapshot_id, None)
        return 200, {"apiVersion": API_VERSION, "kind": "AgentRuntimeList", "metadata": metadata, "items": page}

    def _pending(self, cursor: int) -> list[tuple[int, str, dict[str, Any]]]:
        """History after `cursor` (call with the lock held)."""
        return self._history[bisect.bisect_right(self._history, cursor, key=lambda entry: entry[0]) :]

    def _generations(self) -> _Generations:
        return _Generations(self._drop_generation, self._expire_generation, self._bookmark_generation)

    def _too_old(self, since: int) -> dict[str, Any] | None:
        if since + 1 < self._floor:
            return status(410, "Expired", f"too old resource version: {since} ({self._floor - 1})")
        return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    standin: StandInApiServer

    def setup(self) -> None:
        super().setup()
        with self.standin._cond:
            self.standin._connections.add(self.connection)

    def finish(self) -> None:
        with self.standin._cond:
            self.standin._connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        return None

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        url = urlparse(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        server = self.standin
        server.requests.append((url.path, query))
        if server._refusing:
            self._cut()
            return
        if url.path.rstrip("/") == "/version":
            self._json(200, server.version)
        elif url.path == f"/apis/{GROUP}/{VERSION}/{PLURAL}":
            if query.get("watch") in ("true", "1"):
                self._watch(query)
            else:
                if not server.lists_open.wait(30):
                    self._json(504, status(504, "Timeout", "list held too long"))
                    return
                code, body = server._list(query)
                if code == 200 and server.after_list_page is not None:
                    server.after_list_page(body)
                self._json(code, body)
        else:
            self._json(404, status(404, "NotFound", f"the server could not find {url.path}"))

    # -- responses -----------------------------------------------------------------------------------

    def _json(self, code: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _event(self, event_type: str, obj: dict[str, Any]) -> None:
        self._chunk(json.dumps({"type": event_type, "object": obj}).encode() + b"\n")

    def _cut(self) -> None:
        """Close the connection as a crashed server or a broken network would: no answer, no last chunk."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _watch(self, query: dict[str, str]) -> None:
        server = self.standin
        since_text = query.get("resourceVersion", "")
        bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
        deadline = time.monotonic() + float(query.get("timeoutSeconds") or 1800)
        with server._cond:
            since = int(since_text) if since_text not in ("", "0") else None
            gone = server._too_old(since) if since is not None else None
            if gone is not None and server.gone_as_http_status:
                self._json(410, gone)
                return
            # resourceVersion "" or "0": start with the current state as ADDED events, like the API server.
            backlog = [("ADDED", copy.deepcopy(o)) for o in server._objects.values()] if since is None else []
            cursor = server._rv if since is None else since
            seen = server._generations()
            server._open_watches += 1
            server._cond.notify_all()
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if gone is not None:
                self._event("ERROR", gone)
                self._chunk(b"")
                return
            for event_type, obj in backlog:
                self._event(event_type, obj)
            self._stream(cursor, deadline, bookmarks, seen)
        except OSError:
            self.close_connection = True
        finally:
            with server._cond:
                server._open_watches -= 1
                server._cond.notify_all()

    def _stream(self, cursor: int, deadline: float, bookmarks: bool, seen: _Generations) -> None:
        """Send history after `cursor` as it happens, until a fault, an expiry or `deadline`."""
        server = self.standin
        interval = server.bookmark_interval
        next_bookmark = time.monotonic() + interval if interval else math.inf

        def news() -> bool:
            return bool(server._pending(cursor)) or server._generations() != seen

        while True:
            with server._cond:
                server._cond.wait_for(news, timeout=max(0.0, min(deadline, next_bookmark) - time.monotonic()))
                now = time.monotonic()
                pending = server._pending(cursor)
                current = server._generations()
                dropped = current.drop != seen.drop
                mid_event = server._drop_mid_event
                expired = current.expire != seen.expire
                bookmark_due = bookmarks and (current.bookmark != seen.bookmark or now >= next_bookmark)
                latest = server._rv
                seen = current
            if dropped:
                if mid_event and pending:
                    _, event_type, obj = pending[0]
                    whole = json.dumps({"type": event_type, "object": obj}).encode() + b"\n"
                    self.wfile.write(b"%x\r\n%s" % (len(whole), whole[: len(whole) // 2]))
                self._cut()
                return
            if expired:
                self._event("ERROR", status(410, "Expired", f"too old resource version: {cursor} ({latest})"))
                self._chunk(b"")
                return
            for rv, event_type, obj in pending:
                self._event(event_type, obj)
                cursor = rv
            if bookmark_due:
                cursor = max(cursor, latest)
                bookmark = {
                    "apiVersion": API_VERSION,
                    "kind": "AgentRuntime",
                    "metadata": {"resourceVersion": str(cursor)},
                }
                self._event("BOOKMARK", bookmark)
                next_bookmark = now + interval if interval else math.inf
            if now >= deadline:
                self._chunk(b"")  # the last chunk: a clean end of the stream
                return
