# SPDX-License-Identifier: MIT OR Apache-2.0
"""Issue 15, fault "every map full in turn": a clear error naming the map and its capacity, the
reconcile counted ``map_full``, the entries there before intact (a desired state that does not fit
leaves the previous one whole), and the next desired state that fits applied. Through the agent's
own Services and ipcache reconcilers on real informers, the overflow is also a ``MapFull`` Event on
the node and ``meshcni_map_full_total{controller,map}``.

Each map the control plane writes is created small (``MeshMaps(capacities=...)``) on a private
bpffs and driven past capacity through its real applier. Policy failing closed when mc_policy is
full is tests/kernel/test_policy_fail_closed.py (the reconciler fits the policy to the map's size).
"""
import logging
from pathlib import Path

import pytest
from kubernetes import client

from meshcni.agent.agent import Metrics, event_reason, make_informers
from meshcni.agent.reconcilers import IPCache, Services
from meshcni.apiserver import APIServer
from meshcni.bpf import MeshMaps
from meshcni.controllers.services import ServiceIDs
from meshcni.datapath.endpoints import EndpointDatapath, IPCacheDatapath
from meshcni.datapath.policy import PolicyDatapath, PolicyEntry
from meshcni.datapath.services import Backend, Frontend, Service, ServiceDatapath
from meshcni.errors import MapFullError
from meshcni.k8s.events import EventRecorder
from meshcni.k8s import api_client
from meshcni.k8s.reconciler import MAP_FULL_REASON, Desired, Reconciler, Runner
from testutil import eventually

pytestmark = pytest.mark.kernel
CAP = 8


def contents(maps, *names):
    out = {}
    for n in names:
        k, v = maps.map(n).dump()
        out[n] = sorted((a.tobytes(), b.tobytes()) for a, b in zip(k, v))
    return out


def svc(i, nbe, maglev=False, base=0):
    return Service(f"default/s{i}", [Frontend(f"10.96.0.{i}", 80)],
                   [Backend(f"10.244.{base + i}.{j + 1}", 8080) for j in range(nbe)], svc_id=i, maglev=maglev)


SVC_MAPS = ("mc_svc", "mc_backends", "mc_revnat", "mc_maglev")
# map -> (a desired state that fits, a bigger one that does not): each overflows only its own map
SVC_CASES = {
    # 2 Services x (1 master + 2 slots) = 6 rows; then 3 Services = 9
    "mc_svc": ([svc(1, 2), svc(2, 2)], [svc(1, 2), svc(2, 2), svc(3, 2)]),
    # 2 x 3 backends = 6; then one Service grows to 7 distinct backends (7 svc rows + 3)
    "mc_backends": ([svc(1, 3), svc(2, 3)], [svc(1, 3), svc(2, 6)]),
    # 5 Services without backends: 5 svc rows, 5 revnat; then 9
    "mc_revnat": ([svc(i, 0) for i in range(1, 6)], [svc(i, 0) for i in range(1, 10)]),
    "mc_maglev": ([svc(i, 1, maglev=True) for i in range(1, 3)], [svc(i, 1, maglev=True) for i in range(1, 4)]),
}
SVC_CAPS = {"mc_svc": {"mc_svc": CAP, "mc_backends": 64, "mc_revnat": 64, "mc_maglev": 64},
            "mc_backends": {"mc_svc": 64, "mc_backends": CAP, "mc_revnat": 64, "mc_maglev": 64},
            "mc_revnat": {"mc_svc": 64, "mc_backends": 64, "mc_revnat": CAP, "mc_maglev": 64},
            "mc_maglev": {"mc_svc": 64, "mc_backends": 64, "mc_revnat": 64, "mc_maglev": 2}}


class Apply(Reconciler):
    """The real applier under the real Runner, with a desired state set by the test."""
    name = "services"

    def __init__(self, apply):
        self.want = None
        self._apply = apply

    def desired(self, caches):
        return Desired(self.want)

    def apply(self, state):
        self._apply(state)
        return {}


def runner_for(apply):
    r = Apply(apply)
    return r, Runner("test", {}, [r], EventRecorder(None, "test", "n1"))


def map_full_count(runner):
    return runner.metrics.registry.get_sample_value("meshcni_reconcile_total",
                                                    {"controller": "services", "outcome": "map_full"}) or 0


@pytest.mark.parametrize("full", SVC_MAPS)
def test_service_maps_full_in_turn(pin_root, full):
    fits, too_big = SVC_CASES[full]
    cap = SVC_CAPS[full][full]
    with MeshMaps(pin_root, capacities=SVC_CAPS[full]) as maps:
        dp = ServiceDatapath(maps)
        r, runner = runner_for(dp.apply)
        r.want = fits
        runner.run_once("services")
        before = contents(maps, *SVC_MAPS)
        assert before[full], full
        r.want = too_big
        with pytest.raises(MapFullError) as e:
            runner.run_once("services")
        assert f"map {full} is full (max_entries {cap})" in str(e.value) and e.value.capacity == cap
        assert map_full_count(runner) == 1
        assert contents(maps, *SVC_MAPS) == before  # nothing half-applied, nothing lost
        # what fits again is applied (a shrink, and back)
        r.want = fits[:1]
        runner.run_once("services")
        r.want = fits
        runner.run_once("services")
        assert contents(maps, *SVC_MAPS) == before


def test_backend_swap_that_needs_old_and_new_at_once_is_refused_whole(pin_root):
    # 6 backends in use, 6 others wanted: mc_backends (9) cannot hold both during the switch
    with MeshMaps(pin_root, capacities={"mc_backends": 9}) as maps:
        dp = ServiceDatapath(maps)
        dp.apply([svc(1, 3), svc(2, 3)])
        before = contents(maps, *SVC_MAPS)
        with pytest.raises(MapFullError, match=r"map mc_backends is full \(max_entries 9\): 12 entries wanted"):
            dp.apply([svc(1, 3, base=100), svc(2, 3, base=100)])
        assert contents(maps, *SVC_MAPS) == before
        # one Service at a time fits (6 old + 3 new)
        dp.apply([svc(1, 3, base=100), svc(2, 3)])
        dp.apply([svc(1, 3, base=100), svc(2, 3, base=100)])
        assert len(maps.backends.dump()[0]) == 6


def prefixes(n, base=0):
    return {f"10.{base}.{i}.0/24": 1000 + i for i in range(n)}


@pytest.mark.parametrize("which", ["mc_ipcache", "mc_endpoints"])
def test_ipcache_and_endpoints_full(pin_root, which):
    with MeshMaps(pin_root, capacities={which: CAP}) as maps:
        if which == "mc_ipcache":
            dp = IPCacheDatapath(maps.ipcache)
            fits, too_big = prefixes(6), {**prefixes(3), **prefixes(6, base=1)}
        else:
            dp = EndpointDatapath(maps.endpoints)
            fits = [(10 + i, f"10.244.0.{i + 2}", 1000 + i, 77) for i in range(6)]
            too_big = fits[:3] + [(30 + i, f"10.244.1.{i + 2}", 2000 + i, 77) for i in range(6)]
        r, runner = runner_for(dp.apply)
        r.want = fits
        runner.run_once("services")
        before = contents(maps, which)
        r.want = too_big
        with pytest.raises(MapFullError, match=f"map {which} is full \\(max_entries {CAP}\\): 9 entries wanted, "
                                               f"nothing written, its 6 entries kept"):
            runner.run_once("services")
        assert map_full_count(runner) == 1
        assert contents(maps, which) == before
        if which == "mc_ipcache":
            assert maps.ipcache.prefixes() == fits
            # the cache=True reconcile must not trust its cache after the refusal
            r.want = prefixes(8, base=2)
            runner.run_once("services")
            assert maps.ipcache.prefixes() == prefixes(8, base=2)


def policy_entries(identity, n):
    return [PolicyEntry(identity=identity, direction=0, peer=2000 + i, proto=6, port=80 + i) for i in range(n)]


@pytest.mark.parametrize("which", ["mc_policy", "mc_enforce"])
def test_policy_maps_full(pin_root, which):
    caps = {"mc_policy": CAP, "mc_enforce": 64} if which == "mc_policy" else {"mc_policy": 64, "mc_enforce": 2}
    with MeshMaps(pin_root, capacities=caps) as maps:
        dp = PolicyDatapath(None, maps)
        dp.apply(policy_entries(100, 3), [(100, 0)])
        before = contents(maps, "mc_policy", "mc_enforce")
        if which == "mc_policy":
            entries, enforced = policy_entries(100, 2) + policy_entries(101, 7), [(100, 0), (101, 0)]
        else:
            entries, enforced = policy_entries(100, 1), [(100, 0), (101, 0), (102, 0)]
        with pytest.raises(MapFullError, match=f"map {which} is full \\(max_entries {caps[which]}\\)"):
            dp.apply(entries, enforced)
        assert contents(maps, "mc_policy", "mc_enforce") == before  # the previous policy still enforced, whole


# ---- the agent's own Services and ipcache reconcilers: a full map is an Event and a metric ----

CRDS = Path(__file__).resolve().parents[2] / "deploy" / "crds"


@pytest.fixture
def agent_api(tmp_path):
    with APIServer(crd_dir=str(CRDS), bookmark_interval=0.2) as srv:
        api = api_client(srv.write_kubeconfig(str(tmp_path / "kubeconfig")))
        core = client.CoreV1Api(api)
        core.create_namespace({"metadata": {"name": "mf"}})
        yield api, core


def _service(i):
    return {"metadata": {"name": f"s{i}", "namespace": "mf"},
            "spec": {"clusterIP": f"10.96.7.{i}", "ports": [{"port": 80, "protocol": "TCP"}]}}


def _node(i):
    return {"metadata": {"name": f"n{i}"},
            "status": {"addresses": [{"type": "InternalIP", "address": f"192.168.50.{i}"}]}}


def _map_full_events(core):
    return [e for e in core.list_namespaced_event("default").items if e.reason == MAP_FULL_REASON]


@pytest.mark.parametrize("which", ["mc_svc", "mc_ipcache"])
def test_agent_reconciler_on_a_full_map_reports_an_event_and_a_metric(pin_root, agent_api, which):
    """A Service or Node too many for mc_svc / mc_ipcache: the agent's reconciler is refused
    whole (the map keeps what it held), a MapFull Warning Event on this node names the map and
    its capacity (one while it lasts, however often the retries hit it), and
    meshcni_map_full_total{controller, map} counts it. Once it fits again the state is applied,
    and the next overflow is reported anew."""
    api, core = agent_api
    cap = 4
    metrics = Metrics()
    with MeshMaps(pin_root, capacities={which: cap}) as maps:
        if which == "mc_svc":
            rec = Services(ServiceDatapath(maps), ServiceIDs(), metrics, logging.getLogger("test"))
            make, delete = (lambda i: core.create_namespaced_service("mf", _service(i)),
                            lambda i: core.delete_namespaced_service(f"s{i}", "mf"))
        else:
            rec = IPCache(IPCacheDatapath(maps.ipcache), EndpointDatapath(maps.endpoints), "n1", lambda: [], metrics)
            make, delete = (lambda i: core.create_node(_node(i)), lambda i: core.delete_node(f"n{i}"))
        for i in (1, 2, 3):
            make(i)
        caches = {i.name: i for i in make_informers(api) if i.name in rec.watches}
        events = EventRecorder(core, "meshcni-agent", "n1", host="n1", reason=event_reason)
        runner = Runner("agent", caches, [rec], events, metrics.reconcile, base_delay=0.05, max_delay=0.2)
        try:
            runner.start()

            def full_count():
                return metrics.registry.get_sample_value("meshcni_map_full_total",
                                                         {"controller": rec.name, "map": which}) or 0

            def ok_count():
                return metrics.registry.get_sample_value("meshcni_reconcile_total",
                                                         {"controller": rec.name, "outcome": "ok"}) or 0

            make(4)
            eventually(lambda: len(contents(maps, which)[which]) == cap, 15, "the map filled", interval=0.05)
            before = contents(maps, which)
            make(5)
            eventually(lambda: full_count() >= 3, 15, "retries refused by the full map", interval=0.05)
            evs = _map_full_events(core)
            assert len(evs) == 1, [e.message for e in evs]
            ev = evs[0]
            assert (ev.involved_object.kind, ev.involved_object.name, ev.type) == ("Node", "n1", "Warning")
            assert f"map {which} is full (max_entries {cap})" in ev.message and ev.message.startswith(rec.name)
            assert ev.count == 1                                     # retries are the same report
            assert metrics.registry.get_sample_value("meshcni_reconcile_total",
                                                     {"controller": rec.name, "outcome": "map_full"}) >= 3
            assert contents(maps, which) == before                   # nothing half-applied
            # it fits again: applied, and the report ends
            n_ok, n_full = ok_count(), full_count()
            delete(5)
            eventually(lambda: ok_count() > n_ok, 15, "a reconcile that fits", interval=0.05)
            assert contents(maps, which) == before and full_count() == n_full
            # the same overflow again is reported again (its Event's count goes up)
            make(6)
            eventually(lambda: [e.count for e in _map_full_events(core)] == [2], 15, "the Event bumped",
                       interval=0.05)
            assert contents(maps, which) == before
        finally:
            runner.stop()
