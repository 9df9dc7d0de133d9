# SPDX-License-Identifier: MIT OR Apache-2.0
"""Leader election on a real Lease in the in-process API server, with short durations."""
import datetime
import threading
import time

import pytest
from kubernetes import client

from meshcni.apiserver import APIServer
from meshcni.k8s import LeaderElector, api_client
from testutil import eventually

pytestmark = pytest.mark.pure

# seconds; short so failover tests stay fast, in the same proportions as the defaults (15/10/2)
TIMING = dict(lease_duration=1.5, renew_deadline=1.0, retry_period=0.1)


def until(cond, timeout=5.0, what="condition"):
    return eventually(cond, timeout, what, interval=0.01)


@pytest.fixture(scope="module")
def server():
    with APIServer(bookmark_interval=0.2) as srv:
        yield srv


@pytest.fixture(scope="module")
def api(server, tmp_path_factory):
    return api_client(server.write_kubeconfig(str(tmp_path_factory.mktemp("kc") / "kubeconfig")))


@pytest.fixture
def ns(api, request):
    name = "le-" + request.node.name.replace("_", "-").lower()[:40].strip("-")
    client.CoreV1Api(api).create_namespace({"metadata": {"name": name}})
    return name


@pytest.fixture
def electors():
    made = []
    yield made.append
    for e in made:
        e.stop()


class Log:
    def __init__(self):
        self.lock = threading.Lock()
        self.entries = []

    def cb(self, who, what):
        def f():
            with self.lock:
                self.entries.append((who, what))
        return f


def make(api, ns, identity, log, electors, **kw):
    e = LeaderElector(api, "meshcni-controller", ns, identity,
                      on_started_leading=log.cb(identity, "started"),
                      on_stopped_leading=log.cb(identity, "stopped"), **dict(TIMING, **kw))
    electors(e)
    return e


def lease(api, ns):
    return client.CoordinationV1Api(api).read_namespaced_lease("meshcni-controller", ns)


def test_exactly_one_leads_and_follower_takes_over_on_stop(api, ns, electors):
    log = Log()
    a = make(api, ns, "a", log, electors)
    b = make(api, ns, "b", log, electors)
    a.start()
    b.start()
    until(lambda: a.is_leader or b.is_leader, what="a leader")
    time.sleep(0.5)  # several renew rounds: still exactly one
    assert a.is_leader != b.is_leader
    leader, follower = (a, b) if a.is_leader else (b, a)
    assert log.entries == [(leader.identity, "started")]
    held = lease(api, ns)
    assert held.spec.holder_identity == leader.identity
    assert follower.leader() == leader.identity

    t0 = time.monotonic()
    leader.stop()
    assert not leader.is_leader
    assert lease(api, ns).spec.holder_identity in ("", follower.identity)  # released
    until(lambda: follower.is_leader, what="failover")
    # a released lease is taken at the next retry, not after lease_duration
    assert time.monotonic() - t0 < TIMING["lease_duration"]
    assert log.entries == [(leader.identity, "started"), (leader.identity, "stopped"),
                           (follower.identity, "started")]
    after = lease(api, ns)
    assert after.spec.holder_identity == follower.identity
    assert after.spec.lease_transitions == held.spec.lease_transitions  # released, so not a takeover


def test_lease_fields(api, ns, electors):
    log = Log()
    e = make(api, ns, "solo", log, electors)
    before = datetime.datetime.now(datetime.timezone.utc)
    e.start()
    assert e.wait_for_leadership(3)
    first = lease(api, ns)
    assert first.spec.holder_identity == "solo"
    assert first.spec.lease_duration_seconds == 2  # 1.5 s rounded up: the field is whole seconds
    assert first.spec.lease_transitions == 0
    acquired = first.spec.acquire_time
    assert before - datetime.timedelta(seconds=1) <= acquired <= datetime.datetime.now(datetime.timezone.utc)
    time.sleep(0.35)
    renewed = lease(api, ns)
    assert renewed.spec.renew_time > first.spec.renew_time  # renewed every retry_period
    assert renewed.spec.acquire_time == acquired            # renewing is not re-acquiring
    assert int(renewed.metadata.resource_version) > int(first.metadata.resource_version)


def test_expired_lease_of_a_dead_leader_is_taken_over(api, ns, electors):
    # a leader that died without releasing: its lease just stops being renewed
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    client.CoordinationV1Api(api).create_namespaced_lease(ns, {
        "metadata": {"name": "meshcni-controller"},
        "spec": {"holderIdentity": "dead", "leaseDurationSeconds": 1, "acquireTime": now,
                 "renewTime": now, "leaseTransitions": 4}})
    log = Log()
    e = make(api, ns, "heir", log, electors)
    t0 = time.monotonic()
    e.start()
    time.sleep(0.5)
    assert not e.is_leader  # still within the dead leader's lease, as far as we have seen
    assert e.leader() == "dead"
    assert e.wait_for_leadership(3)
    assert time.monotonic() - t0 >= 1.0
    got = lease(api, ns)
    assert got.spec.holder_identity == "heir"
    assert got.spec.lease_transitions == 5


def test_racing_candidates_elect_one(api, ns, electors):
    log = Log()
    es = [make(api, ns, f"c{i}", log, electors, retry_period=0.05) for i in range(5)]
    for e in es:
        e.start()
    until(lambda: any(e.is_leader for e in es), what="a leader")
    for _ in range(20):
        assert sum(e.is_leader for e in es) == 1
        time.sleep(0.02)
    assert len([x for x in log.entries if x[1] == "started"]) == 1


def test_leader_steps_down_when_it_cannot_renew(tmp_path, electors):
    srv = APIServer(bookmark_interval=0.2).start()
    api = api_client(srv.write_kubeconfig(str(tmp_path / "kc")))
    client.CoreV1Api(api).create_namespace({"metadata": {"name": "cut"}})
    log = Log()
    e = make(api, "cut", "lonely", log, electors)
    e.start()
    assert e.wait_for_leadership(3)
    srv.stop()
    t0 = time.monotonic()
    until(lambda: not e.is_leader, timeout=4, what="step down")
    # it gives up after renew_deadline, before lease_duration lets anyone else in
    assert time.monotonic() - t0 < TIMING["lease_duration"] + 0.3
    assert log.entries[-1] == ("lonely", "stopped")


def test_rejects_inconsistent_timing(api):
    with pytest.raises(ValueError, match="renew_deadline"):
        LeaderElector(api, "x", "default", "me", lease_duration=5, renew_deadline=5)
