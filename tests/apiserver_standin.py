"""A small stand-in Kubernetes API server, speaking the real wire protocol.

The real `kubernetes` client talks to it over plain HTTP on 127.0.0.1, so the informers, the reconciler
and leader election are tested end to end without a cluster and without mocking the client. It serves
several resources with the same machinery (one resourceVersion counter for all of them, as etcd has):

- AgentRuntimes under a configurable group/version (default agent.kagenti.dev/v1alpha1);
- core v1 pods (all-namespace and namespaced list/watch with `labelSelector`, GET/POST/PUT/PATCH/DELETE)
  and the `eviction` subresource, with configurable disruption budgets and replacement pods made by a
  pretend ReplicaSet/StatefulSet/DaemonSet controller;
- core v1 and events.k8s.io/v1 events;
- coordination.k8s.io/v1 leases, with optimistic concurrency (409 Conflict / AlreadyExists);
- `GET /version` (configurable answer).

Every LIST is paginated with `limit`/`continue` from a consistent snapshot (410 Expired for an unknown
continue token). `watch=true` gives a chunked stream of JSON events from `resourceVersion` on, BOOKMARK
events when asked and allowed, ERROR 410 events, HTTP 410 (or a 200 + ERROR event, as configured) when
the requested version is older than the compaction floor, and `timeoutSeconds`. A watch with a label
selector sees an object that stops matching as DELETED and one that starts matching as ADDED.

Faults the tests trigger: `drop_watches` (cut open streams, optionally mid-event), `expire_watches`
(ERROR 410 to every open stream), `outage` (refuse service while changes happen, then compact),
`restart` (listener down, every object re-stamped with new resourceVersions, history gone),
`fail_requests` (answer the next matching requests with an error Status).

Every request that is not a GET is recorded in `writes` (method, path, query, body), unknown paths
included (they answer 404), so tests can assert what a component wrote, or that it wrote nothing.
"""

from __future__ import annotations

import base64
import bisect
import contextlib
import copy
import datetime
import json
import math
import random
import re
import socket
import string
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator, NamedTuple
from urllib.parse import parse_qs, unquote, urlparse

GROUP = "agent.kagenti.dev"
VERSION = "v1alpha1"
PLURAL = "agentruntimes"
API_VERSION = f"{GROUP}/{VERSION}"

# The kinds of controller whose pods come back after an eviction.
REPLACING_CONTROLLERS = ("ReplicaSet", "StatefulSet", "DaemonSet")
PDB_MESSAGE = "Cannot evict pod as it would violate the pod's disruption budget."


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
    annotations: dict[str, str] | None = None,
    api_version: str = API_VERSION,
) -> dict[str, Any]:
    """An AgentRuntime object as a user would create it."""
    if skills is None:
        skills = [
            {"name": "resume-reviewer", "image": "ghcr.io/example/resume-reviewer:v1", "mountPath": "/skills/review"}
        ]
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if created is not None:
        metadata["creationTimestamp"] = created
    if annotations:
        metadata["annotations"] = dict(annotations)
    return {
        "apiVersion": api_version,
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


def owner_reference(kind: str, name: str, *, api_version: str = "apps/v1", controller: bool = True) -> dict[str, Any]:
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": name,
        "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{kind}/{name}")),
        "controller": controller,
        "blockOwnerDeletion": True,
    }


def pod(
    name: str,
    namespace: str = "team-a",
    *,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    owner: tuple[str, str] | dict[str, Any] | None = None,
    owner_references: list[dict[str, Any]] | None = None,
    containers: list[dict[str, Any]] | None = None,
    ready: bool = True,
) -> dict[str, Any]:
    """A pod as its controller would create it. `owner` is (kind, name) of an apps/v1 controller or a
    whole owner reference; `owner_references` replaces the list entirely."""
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "labels": dict(labels or {})}
    if annotations:
        metadata["annotations"] = dict(annotations)
    if owner_references is not None:
        metadata["ownerReferences"] = copy.deepcopy(owner_references)
    elif owner is not None:
        metadata["ownerReferences"] = [owner if isinstance(owner, dict) else owner_reference(*owner)]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {"containers": containers or [{"name": "agent", "image": "ghcr.io/example/agent:v1"}]},
        "status": pod_status(ready),
    }


def pod_status(ready: bool) -> dict[str, Any]:
    value = "True" if ready else "False"
    return {
        "phase": "Running",
        "conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "ContainersReady", "status": value},
            {"type": "Ready", "status": value},
        ],
    }


def is_ready(obj: dict[str, Any]) -> bool:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


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


def status(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details is not None:
        answer["details"] = details
    return answer


def success(code: int = 200) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": code}


# -- label selectors (the API server's syntax) --------------------------------------------------------

_REQUIREMENT = re.compile(
    r"^\s*(?P<neg>!)?\s*(?P<key>[A-Za-z0-9][-A-Za-z0-9_./]*)\s*"
    r"(?:(?P<op>==|=|!=)\s*(?P<value>[-A-Za-z0-9_.]*)|\s(?P<setop>in|notin)\s*\((?P<set>[^)]*)\))?\s*$"
)


class Requirement(NamedTuple):
    key: str
    op: str  # exists, !exists, =, !=, in, notin
    values: frozenset[str]

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        if self.op == "exists":
            return present
        if self.op == "!exists":
            return not present
        if self.op in ("=", "in"):
            return present and labels[self.key] in self.values
        return not present or labels[self.key] not in self.values  # != and notin


def parse_selector(text: str) -> list[Requirement]:
    """Requirements of a label selector (`a`, `!a`, `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`,
    comma-joined); ValueError for anything else."""
    parts, depth, current = [], 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    requirements = []
    for part in parts:
        if not part.strip():
            if len(parts) == 1:
                return []
            raise ValueError(f"empty requirement in {text!r}")
        match = _REQUIREMENT.match(part)
        if match is None or (match["neg"] and (match["op"] or match["setop"])):
            raise ValueError(f"unable to parse requirement {part!r}")
        if match["neg"]:
            requirements.append(Requirement(match["key"], "!exists", frozenset()))
        elif match["op"]:
            requirements.append(Requirement(match["key"], "=" if match["op"] != "!=" else "!=", frozenset([match["value"]])))
        elif match["setop"]:
            values = frozenset(v.strip() for v in match["set"].split(",") if v.strip())
            requirements.append(Requirement(match["key"], match["setop"], values))
        else:
            requirements.append(Requirement(match["key"], "exists", frozenset()))
    return requirements


def selector_matches(requirements: list[Requirement], obj: dict[str, Any] | None) -> bool:
    if obj is None:
        return False
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(r.matches(labels) for r in requirements)


# -- the server -----------------------------------------------------------------------------------------


class Write(NamedTuple):
    """One request that was not a GET, as received."""

    method: str
    path: str
    query: dict[str, str]
    body: Any  # the JSON body, or None


@dataclass
class Resource:
    """One kind of object the server stores."""

    group: str  # "" for core
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    objects: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    # (resourceVersion, type, object, previous object or None)
    history: list[tuple[int, str, dict[str, Any], dict[str, Any] | None]] = field(default_factory=list)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def prefix(self) -> str:
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"


@dataclass
class Pdb:
    """A disruption budget: evictions are refused while `max_unavailable` pods of the same controller
    (or the one pod named) are unhealthy; 0 refuses every eviction."""

    namespace: str
    owner: str | None
    pod: str | None
    max_unavailable: int
    name: str

    def covers(self, obj: dict[str, Any]) -> bool:
        metadata = obj["metadata"]
        if metadata.get("namespace") != self.namespace:
            return False
        if self.pod is not None:
            return metadata["name"] == self.pod
        return self.owner is None or _controller_name(obj) == self.owner


@dataclass
class _Failure:
    method: str
    path_contains: str
    code: int
    reason: str
    message: str
    remaining: int


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
        agentruntime_api: str = API_VERSION,
        replacement_ready_after: float = 0.3,
        replace_evicted: bool = True,
        deletion_grace: float = 0.0,
        on_pod_create: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self.version = version or version_info("1", "33+", "v1.33.2-gke.1000")
        # How a watch from a compacted resourceVersion is refused: HTTP 410 at the start, or (like the
        # watch cache does) 200 followed by an ERROR event with code 410.
        self.gone_as_http_status = gone_as_http_status
        self.bookmark_interval = bookmark_interval
        self.lists_open = threading.Event()  # clear it to hold every LIST until it is set again
        self.lists_open.set()
        self.requests: list[tuple[str, dict[str, str]]] = []  # (path, query) of every API request
        self.request_methods: list[tuple[str, str]] = []  # (method, path) of every API request
        self.writes: list[Write] = []  # every request that was not a GET
        # Called with each LIST page before it is sent (a test can expire continue tokens from it).
        self.after_list_page: Callable[[dict[str, Any]], None] | None = None
        # Every pod the server creates (POST, create_pod, replacements) passes through this first.
        self.on_pod_create = on_pod_create
        # Seconds until a replacement pod turns Ready (None: never by itself).
        self.replacement_ready_after = replacement_ready_after
        self.replace_evicted = replace_evicted
        # > 0: a deleted pod first shows a deletionTimestamp (not Ready) and goes away this much later.
        self.deletion_grace = deletion_grace
        self.evictions: list[tuple[str, str]] = []  # (namespace, name) of every pod evicted
        self.refused_evictions: list[tuple[str, str]] = []  # (namespace, name) of every 429 answered

        group, _, version_part = agentruntime_api.partition("/")
        self.agentruntime_api = agentruntime_api
        self.resources: dict[tuple[str, str, str], Resource] = {}
        for resource in (
            Resource(group, version_part, PLURAL, "AgentRuntime"),
            Resource("", "v1", "pods", "Pod"),
            Resource("", "v1", "events", "Event"),
            Resource("events.k8s.io", "v1", "events", "Event"),
            Resource("coordination.k8s.io", "v1", "leases", "Lease"),
        ):
            self.resources[(resource.group, resource.version, resource.plural)] = resource

        self._cond = threading.Condition()
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
        self._pdbs: list[Pdb] = []
        self._failures: list[_Failure] = []
        self._templates: dict[str, dict[str, Any]] = {}  # pod uid -> the pod as its controller asked for it
        self._timers: list[threading.Timer] = []
        self._rng = random.Random(11)
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

    def close(self) -> None:
        """stop() for good: pending replacement and deletion timers are cancelled too."""
        with self._cond:
            timers, self._timers = self._timers, []
        for timer in timers:
            timer.cancel()
        self.stop()

    def restart(self, downtime: float = 0.2, bump: int = 1000) -> None:
        """A server brought back from a backup: every object gets a new resourceVersion and the watch
        history is gone, so watches from any earlier version get 410."""
        self.stop()
        time.sleep(downtime)
        with self._cond:
            self._rv += bump
            for resource in self.resources.values():
                for obj in sorted(resource.objects.values(), key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"])):
                    self._rv += 1
                    obj["metadata"]["resourceVersion"] = str(self._rv)
                resource.history.clear()
            self._snapshots.clear()
            self._floor = self._rv + 1
        self.start()

    # -- resources -----------------------------------------------------------------------------------

    def resource(self, plural: str = PLURAL, group: str | None = None) -> Resource:
        """The resource called `plural` (events: core v1 unless group="events.k8s.io")."""
        for (res_group, _, res_plural), resource in self.resources.items():
            if res_plural == plural and (group is None and (plural != "events" or res_group == "") or res_group == group):
                return resource
        raise KeyError(plural)

    # -- the objects (the server's truth) ------------------------------------------------------------

    def create(self, obj: dict[str, Any], resource: str = PLURAL) -> dict[str, Any]:
        """Store a new object (an AgentRuntime unless `resource` names another plural); KeyError if it
        exists. Pods pass through `on_pod_create`."""
        res = self.resource(resource)
        if res.plural == "pods":
            return self.create_pod(obj)
        with self._cond:
            return self._create(res, obj)

    def update(self, obj: dict[str, Any], resource: str = PLURAL) -> dict[str, Any]:
        with self._cond:
            return self._update(self.resource(resource), obj)

    def delete(self, namespace: str, name: str, resource: str = PLURAL) -> dict[str, Any]:
        with self._cond:
            res = self.resource(resource)
            return self._record(res, "DELETED", (namespace, name), copy.deepcopy(res.objects[(namespace, name)]))

    def objects(self, resource: str = PLURAL) -> list[dict[str, Any]]:
        with self._cond:
            return copy.deepcopy(list(self.resource(resource).objects.values()))

    def get(self, namespace: str, name: str, resource: str = PLURAL) -> dict[str, Any] | None:
        with self._cond:
            found = self.resource(resource).objects.get((namespace, name))
            return copy.deepcopy(found) if found is not None else None

    @property
    def resource_version(self) -> int:
        return self._rv

    def advance(self, steps: int = 1) -> int:
        """Other resources changed: the resourceVersion moves on without an event."""
        with self._cond:
            self._rv += steps
            return self._rv

    def _create(self, res: Resource, obj: dict[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(obj)
        obj.setdefault("apiVersion", res.api_version)
        obj.setdefault("kind", res.kind)
        metadata = obj.setdefault("metadata", {})
        if not metadata.get("name") and metadata.get("generateName"):
            metadata["name"] = self._generate_name(res, metadata.get("namespace", ""), metadata["generateName"])
        key = (metadata.get("namespace", ""), metadata["name"])
        if key in res.objects:
            raise KeyError(f"{key} exists")
        metadata["uid"] = metadata.get("uid") or str(uuid.uuid4())
        self._created += 1
        # Distinct, increasing seconds so "the oldest wins" has a well-defined answer.
        minutes, seconds = divmod(self._created, 60)
        timestamp = f"2026-01-01T{minutes // 60:02d}:{minutes % 60:02d}:{seconds:02d}Z"
        metadata.setdefault("creationTimestamp", timestamp)
        metadata["generation"] = 1
        return self._record(res, "ADDED", key, obj)

    def _update(self, res: Resource, obj: dict[str, Any]) -> dict[str, Any]:
        metadata = obj["metadata"]
        key = (metadata.get("namespace", ""), metadata["name"])
        current = res.objects[key]
        obj = copy.deepcopy(obj)
        obj.setdefault("apiVersion", res.api_version)
        obj.setdefault("kind", res.kind)
        for name in ("uid", "creationTimestamp", "deletionTimestamp"):
            if name in current["metadata"]:
                obj["metadata"][name] = current["metadata"][name]
        obj["metadata"]["generation"] = current["metadata"].get("generation", 1) + 1
        return self._record(res, "MODIFIED", key, obj)

    def _generate_name(self, res: Resource, namespace: str, prefix: str) -> str:
        while True:
            name = prefix + "".join(self._rng.choice(string.ascii_lowercase + string.digits) for _ in range(5))
            if (namespace, name) not in res.objects:
                return name

    def _record(self, res: Resource, event_type: str, key: tuple[str, str], obj: dict[str, Any]) -> dict[str, Any]:
        """Apply a change (call with the lock held) and put it into the watch history."""
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        previous = res.objects.get(key)
        if event_type == "DELETED":
            del res.objects[key]
        else:
            res.objects[key] = obj
        if not self._unseen:
            res.history.append((self._rv, event_type, copy.deepcopy(obj), previous))
        self._cond.notify_all()
        return copy.deepcopy(obj)

    # -- pods ----------------------------------------------------------------------------------------

    def create_pod(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create a pod as its controller would (through `on_pod_create`); see `pod()` for a builder."""
        template = copy.deepcopy(obj)
        created = self.on_pod_create(copy.deepcopy(obj)) if self.on_pod_create is not None else obj
        with self._cond:
            stored = self._create(self.resource("pods"), created)
            self._templates[stored["metadata"]["uid"]] = template
            return stored

    def set_ready(self, namespace: str, name: str, ready: bool) -> dict[str, Any]:
        with self._cond:
            res = self.resource("pods")
            current = copy.deepcopy(res.objects[(namespace, name)])
            current["status"] = {**current.get("status", {}), **pod_status(ready)}
            return self._record(res, "MODIFIED", (namespace, name), current)

    def delete_pod(self, namespace: str, name: str) -> dict[str, Any]:
        """Delete a pod, honouring `deletion_grace` (a deletionTimestamp first, gone later)."""
        with self._cond:
            return self._delete_pod(namespace, name)

    def pods(self) -> list[dict[str, Any]]:
        return self.objects("pods")

    def pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.get(namespace, name, "pods")

    def _delete_pod(self, namespace: str, name: str) -> dict[str, Any]:
        res = self.resource("pods")
        current = res.objects[(namespace, name)]
        if self.deletion_grace <= 0:
            return self._record(res, "DELETED", (namespace, name), copy.deepcopy(current))
        if current["metadata"].get("deletionTimestamp"):
            return copy.deepcopy(current)
        terminating = copy.deepcopy(current)
        terminating["metadata"]["deletionTimestamp"] = _now()
        terminating["metadata"]["deletionGracePeriodSeconds"] = math.ceil(self.deletion_grace)
        terminating["status"] = {**terminating.get("status", {}), **pod_status(False)}
        uid = current["metadata"]["uid"]
        answer = self._record(res, "MODIFIED", (namespace, name), terminating)

        def finish() -> None:
            with self._cond:
                found = res.objects.get((namespace, name))
                if found is not None and found["metadata"]["uid"] == uid:
                    self._record(res, "DELETED", (namespace, name), copy.deepcopy(found))

        self._later(self.deletion_grace, finish)
        return answer

    def _later(self, delay: float, action: Callable[[], None]) -> None:
        timer = threading.Timer(delay, action)
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    # -- evictions -----------------------------------------------------------------------------------

    def set_pdb(
        self,
        namespace: str,
        *,
        owner: str | None = None,
        pod: str | None = None,
        max_unavailable: int = 0,
        name: str = "budget",
    ) -> None:
        """A disruption budget over the pods of controller `owner` (by owner name), the one pod `pod`, or
        (neither) every pod of `namespace`: evictions get 429 while `max_unavailable` covered pods are
        not Ready (or terminating); 0 refuses them all."""
        with self._cond:
            self._pdbs.append(Pdb(namespace, owner, pod, max_unavailable, name))

    def clear_pdbs(self) -> None:
        with self._cond:
            self._pdbs.clear()

    def _evict(self, namespace: str, name: str) -> tuple[int, dict[str, Any]]:
        res = self.resource("pods")
        with self._cond:
            current = res.objects.get((namespace, name))
            if current is None:
                return 404, status(404, "NotFound", f'pods "{name}" not found')
            if not current["metadata"].get("deletionTimestamp"):
                for pdb in self._pdbs:
                    if not pdb.covers(current):
                        continue
                    unhealthy = sum(
                        1
                        for other in res.objects.values()
                        if pdb.covers(other) and (not is_ready(other) or other["metadata"].get("deletionTimestamp"))
                    )
                    if unhealthy >= pdb.max_unavailable:
                        self.refused_evictions.append((namespace, name))
                        causes = [{"reason": "DisruptionBudget",
                                   "message": f"The disruption budget {pdb.name} needs more healthy pods"}]
                        return 429, status(429, "TooManyRequests", PDB_MESSAGE, {"causes": causes})
            template = self._templates.get(current["metadata"]["uid"]) or _template_of(current)
            owner = _controller(current)
            self._delete_pod(namespace, name)
            self.evictions.append((namespace, name))
        if self.replace_evicted and owner is not None and owner.get("kind") in REPLACING_CONTROLLERS:
            self._replace(template, owner, name)
        return 201, success(201)

    def _replace(self, template: dict[str, Any], owner: dict[str, Any], old_name: str) -> None:
        """What the controller does after one of its pods went away: a new pod from the same template,
        Ready after `replacement_ready_after` seconds. A StatefulSet's keeps the name (once the old one
        is gone), the others get a new one."""
        replacement = copy.deepcopy(template)
        metadata = replacement.setdefault("metadata", {})
        for name in ("uid", "resourceVersion", "creationTimestamp", "deletionTimestamp", "generation"):
            metadata.pop(name, None)
        if owner["kind"] == "StatefulSet":
            metadata["name"] = old_name
        else:
            metadata.pop("name", None)
            metadata["generateName"] = f"{owner['name']}-"
        replacement["status"] = pod_status(False)
        namespace = metadata.get("namespace", "")

        def create() -> None:
            with self._cond:
                if owner["kind"] == "StatefulSet" and (namespace, old_name) in self.resource("pods").objects:
                    self._later(0.05, create)  # the old one is still terminating
                    return
            created = self.create_pod(replacement)
            if self.replacement_ready_after is not None:
                uid = created["metadata"]["uid"]
                created_name = created["metadata"]["name"]

                def turn_ready() -> None:
                    with self._cond:
                        found = self.resource("pods").objects.get((namespace, created_name))
                        if found is None or found["metadata"]["uid"] != uid:
                            return
                    self.set_ready(namespace, created_name, True)

                self._later(self.replacement_ready_after, turn_ready)

        with self._cond:
            if owner["kind"] == "StatefulSet" and (namespace, old_name) in self.resource("pods").objects:
                self._later(0.05, create)
                return
        create()

    def settled(self) -> bool:
        """Nothing delayed is still to happen: no grace period running out, no replacement pod or
        readiness to come. What the server holds now is what it will hold until the next request."""
        return not any(timer.is_alive() for timer in list(self._timers))

    # -- events and leases ---------------------------------------------------------------------------

    def events(self) -> list[dict[str, Any]]:
        """Every stored event, core v1 and events.k8s.io/v1, oldest first."""
        with self._cond:
            found = list(self.resource("events").objects.values())
            found += list(self.resource("events", "events.k8s.io").objects.values())
        return copy.deepcopy(sorted(found, key=lambda e: int(e["metadata"]["resourceVersion"])))

    def leases(self) -> list[dict[str, Any]]:
        return self.objects("leases")

    # -- the write log -------------------------------------------------------------------------------

    def writes_to(self, *plurals: str) -> list[Write]:
        """Writes whose path names one of `plurals` as its resource (e.g. "deployments", "pods")."""
        wanted = set(plurals)
        return [w for w in list(self.writes) if wanted & set(w.path.strip("/").split("/"))]

    # -- faults --------------------------------------------------------------------------------------

    def fail_requests(
        self,
        method: str,
        path_contains: str,
        code: int = 500,
        *,
        reason: str = "InternalError",
        message: str = "an injected failure",
        count: int = 1,
    ) -> None:
        """Answer the next `count` requests with `method` whose path contains `path_contains` with a
        Status of `code` (after recording them)."""
        with self._cond:
            self._failures.append(_Failure(method.upper(), path_contains, code, reason, message, count))

    def clear_failures(self) -> None:
        with self._cond:
            self._failures.clear()

    def _injected_failure(self, method: str, path: str) -> dict[str, Any] | None:
        with self._cond:
            for failure in self._failures:
                if failure.remaining > 0 and failure.method == method and failure.path_contains in path:
                    failure.remaining -= 1
                    return status(failure.code, failure.reason, failure.message)
        return None

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
            for resource in self.resources.values():
                resource.history.clear()
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
        are compacted away, so an informer can only learn them from a fresh LIST."""
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

    def watch_requests(self, plural: str | None = None) -> list[dict[str, str]]:
        return [
            query
            for path, query in list(self.requests)
            if query.get("watch") in ("true", "1") and (plural is None or path.rstrip("/").endswith("/" + plural))
        ]

    # -- request handling (called from handler threads) ----------------------------------------------

    def _list(self, res: Resource, namespace: str | None, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        try:
            selector = parse_selector(query.get("labelSelector", ""))
        except ValueError as exc:
            return 400, status(400, "BadRequest", f"unable to parse requirement: {exc}")
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
                items = [
                    copy.deepcopy(res.objects[k])
                    for k in sorted(res.objects)
                    if (namespace is None or k[0] == namespace) and selector_matches(selector, res.objects[k])
                ]
                self._snapshots[snapshot_id] = (rv, items)
            limit = int(query.get("limit") or 0) or len(items) or 1
            page = items[offset : offset + limit]
            metadata: dict[str, Any] = {"resourceVersion": str(rv)}
            if offset + limit < len(items):
                metadata["continue"] = base64.urlsafe_b64encode(f"{snapshot_id}:{offset + limit}".encode()).decode()
                metadata["remainingItemCount"] = len(items) - offset - limit
            else:
                self._snapshots.pop(snapshot_id, None)
        return 200, {"apiVersion": res.api_version, "kind": f"{res.kind}List", "metadata": metadata, "items": page}

    def _pending(self, res: Resource, cursor: int) -> list[tuple[int, str, dict[str, Any], dict[str, Any] | None]]:
        """History after `cursor` (call with the lock held)."""
        return res.history[bisect.bisect_right(res.history, cursor, key=lambda entry: entry[0]) :]

    def _generations(self) -> _Generations:
        return _Generations(self._drop_generation, self._expire_generation, self._bookmark_generation)

    def _too_old(self, since: int) -> dict[str, Any] | None:
        if since + 1 < self._floor:
            return status(410, "Expired", f"too old resource version: {since} ({self._floor - 1})")
        return None

    def _route(self, path: str) -> tuple[Resource, str | None, str | None, str | None] | None:
        """(resource, namespace, name, subresource) for an API path, None for an unknown one."""
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if parts[:1] == ["api"] and len(parts) >= 3:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 4:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            return None
        namespace = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            namespace, rest = rest[1], rest[2:]
        if not rest or len(rest) > 3:
            return None
        res = self.resources.get((group, version, rest[0]))
        if res is None:
            return None
        name = rest[1] if len(rest) >= 2 else None
        sub = rest[2] if len(rest) == 3 else None
        if name is not None and namespace is None and res.namespaced:
            return None
        return res, namespace, name, sub

    def _write(self, method: str, res: Resource, namespace: str | None, name: str | None, sub: str | None,
               body: Any) -> tuple[int, dict[str, Any]]:
        """A POST/PUT/PATCH/DELETE on a known resource path."""
        if namespace is None and res.namespaced:
            return 405, status(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
        if sub is not None:
            if res.plural == "pods" and sub == "eviction" and method == "POST" and name is not None:
                return self._evict(namespace, name)
            return 404, status(404, "NotFound", f"the server could not find the requested resource ({sub})")
        if method == "POST":
            if name is not None:
                return 405, status(405, "MethodNotAllowed", "POST on an object")
            if not isinstance(body, dict) or not isinstance(body.get("metadata"), dict):
                return 400, status(400, "BadRequest", "the body is not an object with metadata")
            body = copy.deepcopy(body)
            body["metadata"]["namespace"] = namespace
            if not body["metadata"].get("name") and not body["metadata"].get("generateName"):
                return 422, status(422, "Invalid", "metadata.name: Required value: name or generateName is required")
            existing = body["metadata"].get("name")
            with self._cond:
                if existing and (namespace, existing) in res.objects:
                    return 409, status(409, "AlreadyExists", f'{res.qualified} "{existing}" already exists',
                                       {"name": existing, "group": res.group, "kind": res.plural})
            try:
                if res.plural == "pods":
                    return 201, self.create_pod(body)
                with self._cond:
                    return 201, self._create(res, body)
            except KeyError:
                return 409, status(409, "AlreadyExists", f'{res.qualified} "{existing}" already exists')
            except Exception as exc:  # noqa: BLE001 - a failing on_pod_create hook is a refused admission
                return 400, status(400, "BadRequest", f"admission refused the pod: {exc}")
        if name is None:
            return 405, status(405, "MethodNotAllowed", f"{method} needs an object name")
        with self._cond:
            current = res.objects.get((namespace, name))
            if current is None:
                return 404, status(404, "NotFound", f'{res.qualified} "{name}" not found',
                                   {"name": name, "group": res.group, "kind": res.plural})
            if method == "DELETE":
                if res.plural == "pods":
                    return 200, self._delete_pod(namespace, name)
                return 200, self._record(res, "DELETED", (namespace, name), copy.deepcopy(current))
            if method == "PATCH":
                if not isinstance(body, dict):
                    return 415, status(415, "UnsupportedMediaType", "only merge patches are supported here")
                body = _merge(copy.deepcopy(current), body)
            if not isinstance(body, dict) or not isinstance(body.get("metadata"), dict):
                return 400, status(400, "BadRequest", "the body is not an object with metadata")
            wanted = body["metadata"].get("resourceVersion")
            if wanted and wanted != current["metadata"]["resourceVersion"]:
                return 409, status(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {res.qualified} "{name}": the object has been modified; '
                    "please apply your changes to the latest version and try again",
                    {"name": name, "group": res.group, "kind": res.plural},
                )
            body = copy.deepcopy(body)
            body["metadata"].update(namespace=namespace, name=name)
            return 200, self._update(res, body)


def _merge(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (a strategic merge patch of maps behaves the same)."""
    if not isinstance(patch, dict):
        return patch
    if not isinstance(target, dict):
        target = {}
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        else:
            target[key] = _merge(target.get(key), value)
    return target


def _controller(obj: dict[str, Any]) -> dict[str, Any] | None:
    refs = obj["metadata"].get("ownerReferences") or []
    return next((r for r in refs if r.get("controller") is True), None)


def _controller_name(obj: dict[str, Any]) -> str | None:
    owner = _controller(obj)
    return owner.get("name") if owner is not None else None


def _template_of(obj: dict[str, Any]) -> dict[str, Any]:
    template = copy.deepcopy(obj)
    template.pop("status", None)
    return template


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


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
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._handle("PUT")

    def do_PATCH(self) -> None:  # noqa: N802
        self._handle("PATCH")

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle("DELETE")

    def _handle(self, method: str) -> None:
        url = urlparse(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        server = self.standin
        body = self._read_body()
        server.requests.append((url.path, query))
        server.request_methods.append((method, url.path))
        if method != "GET":
            server.writes.append(Write(method, url.path, query, body))
        if server._refusing:
            self._cut()
            return
        failure = server._injected_failure(method, url.path)
        if failure is not None:
            self._json(failure["code"], failure)
            return
        if method == "GET" and url.path.rstrip("/") == "/version":
            self._json(200, server.version)
            return
        route = server._route(url.path)
        if route is None:
            self._json(404, status(404, "NotFound", f"the server could not find {url.path}"))
            return
        res, namespace, name, sub = route
        if method != "GET":
            code, answer = server._write(method, res, namespace, name, sub, body)
            self._json(code, answer)
        elif name is not None:
            with server._cond:
                found = res.objects.get((namespace or "", name)) if sub is None else None
                found = copy.deepcopy(found) if found is not None else None
            if found is None:
                self._json(404, status(404, "NotFound", f'{res.qualified} "{name}" not found',
                                       {"name": name, "group": res.group, "kind": res.plural}))
            else:
                self._json(200, found)
        elif query.get("watch") in ("true", "1"):
            self._watch(res, namespace, query)
        else:
            if not server.lists_open.wait(30):
                self._json(504, status(504, "Timeout", "list held too long"))
                return
            code, answer = server._list(res, namespace, query)
            if code == 200 and server.after_list_page is not None:
                server.after_list_page(answer)
            self._json(code, answer)

    def _read_body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        if length <= 0:
            return None
        data = self.rfile.read(length)
        try:
            return json.loads(data)
        except ValueError:
            return data.decode(errors="replace")

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

    def _watch(self, res: Resource, namespace: str | None, query: dict[str, str]) -> None:
        server = self.standin
        try:
            selector = parse_selector(query.get("labelSelector", ""))
        except ValueError as exc:
            self._json(400, status(400, "BadRequest", f"unable to parse requirement: {exc}"))
            return
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
            backlog = (
                [
                    ("ADDED", copy.deepcopy(o))
                    for (ns, _), o in res.objects.items()
                    if (namespace is None or ns == namespace) and selector_matches(selector, o)
                ]
                if since is None
                else []
            )
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
            self._stream(res, namespace, selector, cursor, deadline, bookmarks, seen)
        except OSError:
            self.close_connection = True
        finally:
            with server._cond:
                server._open_watches -= 1
                server._cond.notify_all()

    def _stream(self, res: Resource, namespace: str | None, selector: list[Requirement], cursor: int,
                deadline: float, bookmarks: bool, seen: _Generations) -> None:
        """Send history after `cursor` as it happens, until a fault, an expiry or `deadline`."""
        server = self.standin
        interval = server.bookmark_interval
        next_bookmark = time.monotonic() + interval if interval else math.inf

        def news() -> bool:
            return bool(server._pending(res, cursor)) or server._generations() != seen

        while True:
            with server._cond:
                server._cond.wait_for(news, timeout=max(0.0, min(deadline, next_bookmark) - time.monotonic()))
                now = time.monotonic()
                pending = server._pending(res, cursor)
                current = server._generations()
                dropped = current.drop != seen.drop
                mid_event = server._drop_mid_event
                expired = current.expire != seen.expire
                bookmark_due = bookmarks and (current.bookmark != seen.bookmark or now >= next_bookmark)
                latest = server._rv
                seen = current
            visible = []
            for rv, event_type, obj, previous in pending:
                cursor = rv
                if namespace is not None and obj["metadata"].get("namespace") != namespace:
                    continue
                now_matches = selector_matches(selector, obj)
                was_matching = selector_matches(selector, previous) if previous is not None else False
                if event_type == "MODIFIED" and now_matches != was_matching:
                    event_type = "ADDED" if now_matches else "DELETED"
                elif not now_matches:
                    continue
                visible.append((event_type, obj))
            if dropped:
                if mid_event and visible:
                    event_type, obj = visible[0]
                    whole = json.dumps({"type": event_type, "object": obj}).encode() + b"\n"
                    self.wfile.write(b"%x\r\n%s" % (len(whole), whole[: len(whole) // 2]))
                self._cut()
                return
            if expired:
                self._event("ERROR", status(410, "Expired", f"too old resource version: {cursor} ({latest})"))
                self._chunk(b"")
                return
            for event_type, obj in visible:
                self._event(event_type, obj)
            if bookmark_due:
                cursor = max(cursor, latest)
                bookmark = {"apiVersion": res.api_version, "kind": res.kind, "metadata": {"resourceVersion": str(cursor)}}
                self._event("BOOKMARK", bookmark)
                next_bookmark = now + interval if interval else math.inf
            if now >= deadline:
                self._chunk(b"")  # the last chunk: a clean end of the stream
                return
