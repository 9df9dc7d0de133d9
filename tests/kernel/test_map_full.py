# SPDX-License-Identifier: MIT OR Apache-2.0
"""Issue 15, fault "every map full in turn": a clear error naming the map and its capacity, the
reconcile counted ``map_full``, the entries there before intact (a desired state that does not fit
leaves the previous one whole), and the next desired state that fits applied.

Each map the control plane writes is created small (``MeshMaps(capacities=...)``) on a private
bpffs and driven past capacity through its real applier. Policy failing closed when mc_policy is
full is tests/kernel/test_policy_fail_closed.py (the reconciler fits the policy to the map's size).
"""
import pytest

from meshcni.bpf import MeshMaps
from meshcni.datapath.endpoints import EndpointDatapath, IPCacheDatapath
from meshcni.datapath.policy import PolicyDatapath, PolicyEntry
from meshcni.datapath.services import Backend, Frontend, Service, ServiceDatapath
from meshcni.errors import MapFullError
from meshcni.k8s.events import EventRecorder
from meshcni.k8s.reconciler import Desired, Reconciler, Runner

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
