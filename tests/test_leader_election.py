"""LeaseLock and LeaderElector against the stand-in API server, through the real `kubernetes` client's
CoordinationV1Api: one leader at a time, hand-over on stop (released) and on death (lapsed), 409s,
lost renewals, transitions."""

from __future__ import annotations

import threading
import time

import pytest

from app.sources.kube.leader import LeaderElector, LeaderRecord, LeaseLock
from tests.apiserver_standin import StandInApiServer
from tests.informer_harness import api_client_for, running_standin
from tests.polling import wait_until

NAMESPACE = "skill-webhook"
LEASE = "skill-webhook-reconciler"
# Small settings so hand-overs take seconds; generous bounds below because machines are noisy.
LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD = 1.5, 1.0, 0.2
SLACK = 2.0


@pytest.fixture
def server():
    with running_standin() as standin:
        yield standin


class Candidate:
    """An elector plus what its callbacks reported."""

    def __init__(self, server: StandInApiServer, identity: str, **options) -> None:
        self.started = 0
        self.stopped = 0
        self.leaders: list[str] = []
        self._lock = threading.Lock()
        self.elector = LeaderElector(
            LeaseLock(api_client_for(server), NAMESPACE, LEASE, identity),
            lease_duration=options.pop("lease_duration", LEASE_DURATION),
            renew_deadline=options.pop("renew_deadline", RENEW_DEADLINE),
            retry_period=options.pop("retry_period", RETRY_PERIOD),
            on_started_leading=self._started,
            on_stopped_leading=self._stopped,
            on_new_leader=self._new_leader,
            **options,
        )

    def _started(self) -> None:
        with self._lock:
            self.started += 1

    def _stopped(self) -> None:
        with self._lock:
            self.stopped += 1

    def _new_leader(self, identity: str) -> None:
        with self._lock:
            self.leaders.append(identity)


@pytest.fixture
def candidates(server):
    made: list[Candidate] = []

    def make(identity: str, **options) -> Candidate:
        candidate = Candidate(server, identity, **options)
        made.append(candidate)
        candidate.elector.start()
        return candidate

    yield make
    for candidate in made:
        candidate.elector.stop()


def lease_spec(server: StandInApiServer) -> dict:
    return server.get(NAMESPACE, LEASE, "leases")["spec"]


def leaders(*candidates: Candidate) -> list[str]:
    return [c.elector.identity for c in candidates if c.elector.is_leader]


@pytest.mark.slow  # watches the two electors through 2 s of renewals
def test_exactly_one_of_two_electors_leads(server, candidates):
    a, b = candidates("replica-a"), candidates("replica-b")
    assert wait_until(lambda: len(leaders(a, b)) == 1)
    # It stays that way through many renewals, and both agree on who leads.
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        assert len(leaders(a, b)) <= 1
        time.sleep(0.02)
    leader = leaders(a, b)[0]
    assert len(leaders(a, b)) == 1
    assert a.elector.leader == b.elector.leader == leader
    assert lease_spec(server)["holderIdentity"] == leader
    assert a.leaders == b.leaders == [leader]
    assert a.started + b.started == 1 and a.stopped + b.stopped == 0
    assert lease_spec(server)["leaseDurationSeconds"] == 2  # 1.5 s, rounded up to whole seconds


def test_stopping_the_leader_releases_the_lease_and_the_other_takes_over_at_once(server, candidates):
    a = candidates("replica-a")
    assert wait_until(lambda: a.elector.is_leader)
    b = candidates("replica-b")
    assert wait_until(lambda: b.elector.leader == "replica-a")
    transitions = lease_spec(server)["leaseTransitions"]

    stopped_at = time.monotonic()
    a.elector.stop()
    assert a.stopped == 1 and not a.elector.is_leader
    assert wait_until(lambda: b.elector.is_leader, timeout=LEASE_DURATION + RETRY_PERIOD + SLACK)
    # Released: no need to wait for the lease to lapse.
    assert time.monotonic() - stopped_at < LEASE_DURATION
    assert lease_spec(server)["holderIdentity"] == "replica-b"
    assert lease_spec(server)["leaseTransitions"] == transitions + 1
    assert b.leaders == ["replica-a", "replica-b"] and b.started == 1


@pytest.mark.slow  # waits out a lease
def test_a_leader_that_dies_without_releasing_is_replaced_after_the_lease_lapses(server, candidates):
    a = candidates("replica-a")
    assert wait_until(lambda: a.elector.is_leader)
    b = candidates("replica-b")
    assert wait_until(lambda: b.elector.leader == "replica-a")

    died_at = time.monotonic()
    a.elector.stop(release=False)  # the process is killed: no release
    assert lease_spec(server)["holderIdentity"] == "replica-a"
    assert wait_until(lambda: b.elector.is_leader, timeout=LEASE_DURATION + RETRY_PERIOD + SLACK)
    waited = time.monotonic() - died_at
    # Not before the lease lapsed by b's own clock (it last saw a renewal at most one retry before).
    assert waited >= LEASE_DURATION - RETRY_PERIOD - 0.1, waited
    assert lease_spec(server)["holderIdentity"] == "replica-b"


@pytest.mark.slow  # waits out the renew deadline
def test_a_leader_cut_off_from_the_server_steps_down_within_the_renew_deadline(server, candidates):
    a = candidates("replica-a")
    assert wait_until(lambda: a.elector.is_leader)
    server.fail_requests("GET", f"/leases/{LEASE}", 503, reason="ServiceUnavailable", count=10_000)
    assert wait_until(lambda: not a.elector.is_leader, timeout=RENEW_DEADLINE + SLACK)
    assert wait_until(lambda: a.stopped == 1)

    server.clear_failures()  # the server is back: a becomes a candidate again and takes the lease back
    assert wait_until(lambda: a.elector.is_leader, timeout=LEASE_DURATION + RETRY_PERIOD + SLACK)
    assert a.started == 2


@pytest.mark.slow
def test_a_409_on_renewal_is_retried_and_leadership_kept(server, candidates):
    a = candidates("replica-a")
    assert wait_until(lambda: a.elector.is_leader)
    before = len([w for w in server.writes if w.method == "PUT"])
    server.fail_requests("PUT", f"/leases/{LEASE}", 409, reason="Conflict", message="the object has been modified")
    assert wait_until(lambda: len([w for w in server.writes if w.method == "PUT"]) >= before + 3)
    assert a.elector.is_leader and a.stopped == 0


def test_two_candidates_racing_for_a_new_lease_get_one_leader(server):
    made = [Candidate(server, f"replica-{i}") for i in range(3)]
    for candidate in made:
        candidate.elector.start()
    try:
        assert wait_until(lambda: len(leaders(*made)) == 1)
        creates = [w for w in server.writes if w.method == "POST"]
        assert len(creates) >= 1 and len(server.leases()) == 1
    finally:
        for candidate in made:
            candidate.elector.stop()


def test_a_lease_changed_behind_the_leaders_back_is_a_conflict_then_given_up(server, candidates):
    a = candidates("replica-a")
    assert wait_until(lambda: a.elector.is_leader)
    lease = server.get(NAMESPACE, LEASE, "leases")
    lease["spec"]["holderIdentity"] = "intruder"
    server.update(lease, "leases")  # as another replica with a stale view would
    assert wait_until(lambda: not a.elector.is_leader, timeout=RENEW_DEADLINE + SLACK)
    assert a.elector.leader == "intruder" and "intruder" in a.leaders


def test_transitions_count_each_change_of_holder(server, candidates):
    a = candidates("replica-a")
    assert wait_until(lambda: a.elector.is_leader)
    assert lease_spec(server)["leaseTransitions"] == 0
    a.elector.stop()
    b = candidates("replica-b")
    assert wait_until(lambda: b.elector.is_leader)
    b.elector.stop()
    c = candidates("replica-a-again")
    assert wait_until(lambda: c.elector.is_leader)
    assert lease_spec(server)["leaseTransitions"] == 2
    assert c.elector.transitions == 2


def test_lease_lock_reads_writes_and_detects_conflicts(server):
    client = api_client_for(server)
    lock = LeaseLock(client, NAMESPACE, "plain", "me")
    assert lock.get() is None
    record = LeaderRecord("me", 15, None, None, 0)
    lock.create(record)
    assert lock.get().holder_identity == "me"
    other = LeaseLock(client, NAMESPACE, "plain", "other")
    other.get()
    other.update(LeaderRecord("other", 15, None, None, 1))
    with pytest.raises(Exception) as conflict:
        lock.update(LeaderRecord("me", 15, None, None, 1))  # lock's view is stale
    assert getattr(conflict.value, "status", None) == 409
    assert lock.get().holder_identity == "other" and lock.get().lease_transitions == 1


def test_durations_must_be_ordered(server):
    lock = LeaseLock(api_client_for(server), NAMESPACE, LEASE, "me")
    with pytest.raises(ValueError):
        LeaderElector(lock, lease_duration=1.0, renew_deadline=2.0, retry_period=0.5)
    with pytest.raises(ValueError):
        LeaderElector(lock, lease_duration=3.0, renew_deadline=2.0, retry_period=2.0)
