"""Leader election on a coordination.k8s.io/v1 Lease, in client-go's shape.

The official Python client ships a leader election with a Lease lock, but its loop cannot be stopped
(`run()` never returns while leading and exits the process on a bad setting), never releases the Lease,
judges expiry by wall-clock times, and its lock talks through the default client configuration with no
request timeouts. So this is a Lease lock on our own ApiClient's `CoordinationV1Api` (get / create /
replace, optimistic concurrency through the Lease's resourceVersion) and the loop around it:

- a candidate tries every `retry_period` (slightly jittered) and takes the Lease when nobody holds it
  or when the record has not changed for `lease_duration` by the candidate's own clock since it last
  saw it change (clocks of different machines are never compared);
- the leader renews every `retry_period`; if no renewal succeeds for `renew_deadline`, or it sees
  another holder, it stops leading at once and becomes a candidate again;
- `stop()` releases the Lease (holderIdentity cleared) so that a successor takes over at its next try.

All replicas must use the same durations: validity is judged with the observer's `lease_duration`
(the record's `leaseDurationSeconds`, a whole number, is written for other tools to read).
"""

from __future__ import annotations

import datetime
import logging
import math
import random
import threading
import time
from dataclasses import dataclass, replace
from typing import Any, Callable

import kubernetes.client
import urllib3.exceptions
from kubernetes.client.exceptions import ApiException

from app.sources.kube.reflector import describe

log = logging.getLogger(__name__)

HTTP_NOT_FOUND = 404
JITTER = 0.2  # a candidate waits retry_period * (1 .. 1 + JITTER), so replicas do not try in step


@dataclass(frozen=True)
class LeaderRecord:
    """What the Lease says about its holder."""

    holder_identity: str = ""
    lease_duration_seconds: int = 0
    acquire_time: datetime.datetime | None = None
    renew_time: datetime.datetime | None = None
    lease_transitions: int = 0


class LeaseLock:
    """One Lease `namespace/name`, read and written through the official client. Remembers the
    resourceVersion of the last Lease read, so an update of a Lease changed meanwhile fails (409)."""

    def __init__(
        self,
        api_client: kubernetes.client.ApiClient,
        namespace: str,
        name: str,
        identity: str,
        *,
        request_timeout: tuple[float, float] = (5.0, 10.0),
    ) -> None:
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self._api = kubernetes.client.CoordinationV1Api(api_client)
        self._timeout = request_timeout
        self._lease: Any = None  # the V1Lease last read or written

    def describe(self) -> str:
        return f"{self.namespace}/{self.name}"

    def get(self) -> LeaderRecord | None:
        """The current record, or None when there is no Lease yet."""
        try:
            lease = self._api.read_namespaced_lease(self.name, self.namespace, _request_timeout=self._timeout)
        except ApiException as exc:
            if exc.status == HTTP_NOT_FOUND:
                self._lease = None
                return None
            raise
        self._lease = lease
        spec = lease.spec or kubernetes.client.V1LeaseSpec()
        return LeaderRecord(
            holder_identity=spec.holder_identity or "",
            lease_duration_seconds=spec.lease_duration_seconds or 0,
            acquire_time=spec.acquire_time,
            renew_time=spec.renew_time,
            lease_transitions=spec.lease_transitions or 0,
        )

    def create(self, record: LeaderRecord) -> None:
        """Create the Lease holding `record`; ApiException 409 when someone created it first."""
        body = kubernetes.client.V1Lease(
            metadata=kubernetes.client.V1ObjectMeta(name=self.name, namespace=self.namespace), spec=_spec(record)
        )
        self._lease = self._api.create_namespaced_lease(self.namespace, body, _request_timeout=self._timeout)

    def update(self, record: LeaderRecord) -> None:
        """Replace the record of the Lease last read; ApiException 409 when it changed since."""
        if self._lease is None:
            raise RuntimeError("update before get: there is no Lease to replace")
        metadata = kubernetes.client.V1ObjectMeta(
            name=self.name, namespace=self.namespace, resource_version=self._lease.metadata.resource_version
        )
        body = kubernetes.client.V1Lease(metadata=metadata, spec=_spec(record))
        self._lease = self._api.replace_namespaced_lease(self.name, self.namespace, body, _request_timeout=self._timeout)


def _spec(record: LeaderRecord) -> kubernetes.client.V1LeaseSpec:
    return kubernetes.client.V1LeaseSpec(
        holder_identity=record.holder_identity,
        lease_duration_seconds=record.lease_duration_seconds,
        acquire_time=record.acquire_time,
        renew_time=record.renew_time,
        lease_transitions=record.lease_transitions,
    )


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _ignore(*_: Any) -> None:
    return None


class LeaderElector:
    """Runs the election for `lock.identity` on a daemon thread. Callbacks run on that thread and must
    return quickly: `on_started_leading()`, `on_stopped_leading()`, `on_new_leader(identity)` (whenever
    the observed holder changes to a new identity, ours included)."""

    def __init__(
        self,
        lock: LeaseLock,
        *,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        on_started_leading: Callable[[], None] = _ignore,
        on_stopped_leading: Callable[[], None] = _ignore,
        on_new_leader: Callable[[str], None] = _ignore,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        if not 0 < retry_period < renew_deadline < lease_duration:
            raise ValueError(
                f"leader election needs retry period < renew deadline < lease duration "
                f"(got {retry_period}s, {renew_deadline}s, {lease_duration}s)"
            )
        self.lock = lock
        self.identity = lock.identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self._on_started = on_started_leading
        self._on_stopped = on_stopped_leading
        self._on_new_leader = on_new_leader
        self._clock = clock
        self._rng = rng or random.Random()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._leading = False
        self._last_renew = -math.inf  # clock() of the last successful acquire or renew
        self._observed: LeaderRecord | None = None
        self._observed_at = -math.inf  # clock() when the record was last seen to change
        self._reported_leader = ""
        self._last_problem = ""
        self.transitions = 0  # leaseTransitions of the last record seen

    # -- state ---------------------------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        """True while this replica holds the Lease and renewed it within the renew deadline."""
        return self._leading and self._clock() - self._last_renew < self.renew_deadline

    @property
    def leader(self) -> str:
        """The holder last observed ("" when nobody holds the Lease or it was not read yet)."""
        return self._observed.holder_identity if self._observed is not None else ""

    # -- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="leader-election", daemon=True)
        self._thread.start()

    def stop(self, *, release: bool = True, timeout: float = 10.0) -> None:
        """Stop the loop; when leading, release the Lease (unless `release` is False, as when the
        process dies) and call on_stopped_leading. Safe to call twice."""
        self._stopping.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=timeout)
        if self._leading:
            if release:
                self._release()
            self._lose("stopped")

    # -- the loop ------------------------------------------------------------------------------------

    def _run(self) -> None:
        log.info("leader election for Lease %s as %s", self.lock.describe(), self.identity)
        while not self._stopping.is_set():
            if not self._leading:
                if self._try_acquire_or_renew():
                    self._leading = True
                    log.info("became the leader (Lease %s, transitions %d)", self.lock.describe(), self.transitions)
                    self._call(self._on_started)
                    self._stopping.wait(self.retry_period)
                else:
                    self._stopping.wait(self.retry_period * (1 + self._rng.uniform(0, JITTER)))
                continue
            if self._try_acquire_or_renew():
                self._stopping.wait(self.retry_period)
                continue
            if self._stopping.is_set():
                break
            if self._observed is not None and self._observed.holder_identity not in ("", self.identity):
                self._lose(f"the Lease is held by {self._observed.holder_identity}")
            elif self._clock() - self._last_renew >= self.renew_deadline:
                self._lose(f"no renewal for {self.renew_deadline:g}s")
            else:
                self._stopping.wait(self.retry_period)

    def _try_acquire_or_renew(self) -> bool:
        now, wall = self._clock(), _utcnow()
        wanted = LeaderRecord(self.identity, math.ceil(self.lease_duration), wall, wall, 0)
        try:
            current = self.lock.get()
            if current is None:
                self.lock.create(wanted)
                self._observe(wanted, now)
                self._last_renew = now
                return True
            if current != self._observed:
                self._observe(current, now)
            held_by_other = current.holder_identity not in ("", self.identity)
            if held_by_other and now - self._observed_at < self.lease_duration:
                return False
            if current.holder_identity == self.identity:
                wanted = replace(wanted, acquire_time=current.acquire_time or wall,
                                 lease_transitions=current.lease_transitions)
            else:
                wanted = replace(wanted, lease_transitions=current.lease_transitions + 1)
            self.lock.update(wanted)
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
            self._problem(exc)
            return False
        self._observe(wanted, now)
        self._last_renew = now
        self._last_problem = ""
        return True

    def _observe(self, record: LeaderRecord, now: float) -> None:
        self._observed = record
        self._observed_at = now
        self.transitions = record.lease_transitions
        holder = record.holder_identity
        if holder and holder != self._reported_leader:
            self._reported_leader = holder
            log.info("the leader is %s (Lease %s, transitions %d)", holder, self.lock.describe(), self.transitions)
            self._call(self._on_new_leader, holder)

    def _release(self) -> None:
        """Clear the holder so that a successor need not wait for the Lease to lapse."""
        wall = _utcnow()
        try:
            current = self.lock.get()
            if current is None or current.holder_identity != self.identity:
                return
            self.lock.update(replace(current, holder_identity="", lease_duration_seconds=1, renew_time=wall))
            log.info("released the Lease %s", self.lock.describe())
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
            log.warning("could not release the Lease %s: %s", self.lock.describe(), describe(exc))

    def _lose(self, why: str) -> None:
        self._leading = False
        self._last_renew = -math.inf
        log.info("stopped leading (%s)", why)
        self._call(self._on_stopped)

    def _problem(self, exc: Exception) -> None:
        """Log a failed attempt once per distinct problem (a candidate retries every retry period)."""
        text = describe(exc)
        if isinstance(exc, ApiException) and exc.status == 409:
            log.debug("Lease %s changed under us: %s", self.lock.describe(), text)
            return
        if text != self._last_problem:
            self._last_problem = text
            log.warning("leader election on Lease %s failed: %s", self.lock.describe(), text)

    def _call(self, callback: Callable[..., None], *args: Any) -> None:
        try:
            callback(*args)
        except Exception:  # noqa: BLE001 - a broken callback must not end the election
            log.exception("leader election callback failed")
