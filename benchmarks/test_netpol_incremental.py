# SPDX-License-Identifier: MIT OR Apache-2.0
"""One pod or one policy changed at 1,000 NetworkPolicies / 10,000 pods: full recompute vs incremental.

    flock /tmp/meshcni-e2e.lock .venv/bin/python -m pytest benchmarks/test_netpol_incremental.py \\
        --benchmark-only -q -s

Data: the cluster of ``test_netpol_compile.py`` (100 namespaces x 100 pods, 10 policies each, ~2,000
identities, CIDR identities with atoms), plus one Identity for a label set no pod has yet, so the relabel
below makes a new group (the costly case: every policy whose selectors match it is compiled again).

Events, each measured on its own (one event per round, alternating so each round changes something):

- ``relabel``: pod ns-005/web-0 moves between its label set and ``app=web, version=v3`` (a new group
  with its own Identity, then back: the group is removed again);
- ``policy``: ns-005/back-from-web gains and loses a port.

Groups (``benchmark.group``), each with ``full`` (what every event cost before: the whole compile) and
``incremental`` side by side:

netpol-relabel / netpol-policy
    the control plane alone: ``compile_policies`` vs ``IncrementalPolicy.pods_changed`` /
    ``policies_changed`` (pure, no maps).
ipcache-relabel
    ``desired_ipcache`` vs ``IncrementalIPCache.pods_changed`` (pure).
agent-relabel-maps / agent-policy-maps (root)
    the agent's real ``Policy`` and ``IPCache`` reconcilers' ``desired`` + ``apply`` on real maps on a
    private bpffs, fed through their ``observe`` hook like the Runner does: the full path (compile, fit,
    diff against the dumped mc_policy, ipcache diff against its cache) against the incremental one (only
    the changed rows written, nothing dumped). After the last round the maps are compared with a full
    compile of the same caches.

``MESHCNI_BENCH_NETPOL_NS`` sets the size (namespaces; 100 -> 1,000 policies / 10k pods).
"""
from __future__ import annotations

import copy
import gc
import os
from contextlib import ExitStack

import pytest

from meshcni import sandbox
from meshcni.controllers.identity import MANAGED_BY, MANAGER, identity_labels, identity_name
from meshcni.controllers.ipcache import desired_ipcache
from meshcni.controllers.ipcache_inc import IncrementalIPCache
from meshcni.controllers.netpol import compile_policies
from meshcni.controllers.netpol_inc import IncrementalPolicy
from test_netpol_compile import N_NS, cluster

pytestmark = pytest.mark.pure

ROUNDS_FULL = 3
ROUNDS_INC = 60
NEW_ID = 16777216 + 500000


def _gc():
    gc.collect()  # returns a count, which pytest-benchmark would take for the round's arguments


def _key(o):
    m = o["metadata"]
    return f"{m['namespace']}/{m['name']}" if m.get("namespace") else m["name"]


class _Cache:
    """An informer's read side (``list``, ``get``) over a dict: the reconcilers read nothing else."""

    def __init__(self, objs):
        self.items = {_key(o): o for o in objs}

    def list(self):
        return list(self.items.values())

    def get(self, key):
        return self.items.get(key)


@pytest.fixture(scope="module")
def data():
    d = cluster(N_NS)
    i = next(j for j, p in enumerate(d["pods"]) if p["metadata"]["name"] == "web-0-5")
    pod = d["pods"][i]
    moved = copy.deepcopy(pod)
    moved["metadata"]["labels"] = {"app": "web", "tier": "front", "version": "v3", "pod-template-hash": "c00005"}
    nsl = {n["metadata"]["name"]: n["metadata"]["labels"] for n in d["namespaces"]}
    labels = identity_labels(moved, nsl["ns-005"])
    d["identities"].append({"apiVersion": "mesh-cni.dev/v1alpha1", "kind": "Identity",
                            "metadata": {"name": identity_name(labels), "namespace": "ns-005",
                                         "labels": {MANAGED_BY: MANAGER}},
                            "spec": {"id": NEW_ID, **labels}})
    j = next(j for j, p in enumerate(d["policies"]) if _key(p) == "ns-005/back-from-web")
    pol = d["policies"][j]
    changed = copy.deepcopy(pol)
    changed["spec"]["ingress"][0]["ports"].append({"port": 1234})
    d["relabel"] = (i, [moved, pod])       # round n puts variant n % 2 in place
    d["policy"] = (j, [changed, pol])
    return d


def _args(d):
    return d["policies"], d["pods"], d["namespaces"], d["identities"], d["cidrs"]


def _toggle(d, what):
    """The next variant of the object ``what`` changes, put in place: (key, object)."""
    i, variants = d[what]
    n = d.setdefault(f"{what}-n", 0)
    d[f"{what}-n"] = n + 1
    objs = d["pods" if what == "relabel" else "policies"]
    objs[i] = variants[n % 2]
    return _key(objs[i]), objs[i]


def _tuples(c):
    return {(e.identity, e.direction, e.peer, e.proto, e.port) for e in c.entries}


# ---------------------------------------------------------------- control plane alone

@pytest.mark.parametrize("what", ["relabel", "policy"])
def test_netpol_full(benchmark, data, what):
    benchmark.group = f"netpol-{what}"
    benchmark.pedantic(lambda: (_toggle(data, what), compile_policies(*_args(data))), setup=_gc,
                       rounds=ROUNDS_FULL, iterations=1)
    benchmark.extra_info.update(method="full: compile_policies", policies=len(data["policies"]),
                                pods=len(data["pods"]))


@pytest.mark.parametrize("what", ["relabel", "policy"])
def test_netpol_incremental(benchmark, data, what):
    inc = IncrementalPolicy()
    inc.full(*_args(data))
    deltas = []

    def event():
        k, o = _toggle(data, what)
        deltas.append(inc.pods_changed([(k, o)]) if what == "relabel" else inc.policies_changed([(k, o)]))

    benchmark.group = f"netpol-{what}"
    benchmark.pedantic(event, rounds=ROUNDS_INC, iterations=1)
    ref = compile_policies(*_args(data))
    got = inc.compiled()
    assert _tuples(got) == _tuples(ref) and got.enforced == ref.enforced
    benchmark.extra_info.update(method="incremental", policies_compiled=max(d.policies for d in deltas),
                                pairs_changed=max(len(d.new) for d in deltas),
                                rows_changed=max(sum(len(v) for v in d.new.values()) for d in deltas))


def test_ipcache_full(benchmark, data):
    benchmark.group = "ipcache-relabel"
    nodes = []
    benchmark.pedantic(lambda: (_toggle(data, "relabel"),
                                desired_ipcache(data["pods"], data["namespaces"], data["identities"], data["cidrs"],
                                                nodes, "n1")),
                       setup=_gc, rounds=ROUNDS_FULL, iterations=1)
    benchmark.extra_info.update(method="full: desired_ipcache")


def test_ipcache_incremental(benchmark, data):
    inc = IncrementalIPCache()
    inc.full(data["pods"], data["namespaces"], data["identities"], data["cidrs"], [], "n1")
    out = []
    benchmark.group = "ipcache-relabel"
    benchmark.pedantic(lambda: out.append(inc.pods_changed([_toggle(data, "relabel")])), rounds=ROUNDS_INC,
                       iterations=1)
    assert all(d is not None and len(d) == 1 for d in out)
    assert inc.prefixes == desired_ipcache(data["pods"], data["namespaces"], data["identities"], data["cidrs"],
                                           [], "n1")[0]
    benchmark.extra_info.update(method="incremental")


# ---------------------------------------------------------------- the agent's reconcilers on real maps

@pytest.fixture(scope="module")
def agent(data):
    if os.geteuid() != 0:
        pytest.skip("needs root (bpf(), a private bpffs)")
    from meshcni.agent.agent import Metrics
    from meshcni.agent.reconcilers import IPCache, Policy
    from meshcni.bpf import MeshMaps
    from meshcni.datapath.endpoints import EndpointDatapath, IPCacheDatapath
    from meshcni.datapath.policy import PolicyProgram
    with ExitStack() as stack:
        root = os.path.join(stack.enter_context(sandbox.private_bpffs("meshcni-npbench-")), "meshcni")
        maps = stack.enter_context(MeshMaps(root))
        prog = stack.enter_context(PolicyProgram(root))
        metrics = Metrics()
        pol = Policy(prog.datapath(maps), metrics)
        ipc = IPCache(IPCacheDatapath(maps.ipcache), EndpointDatapath(maps.endpoints), "n1", lambda: [], metrics)
        yield {"maps": maps, "policy": pol, "ipcache": ipc, "metrics": metrics}


def _caches(d):
    names = {"networkpolicies": "policies", "pods": "pods", "namespaces": "namespaces",
             "identities": "identities", "cidridentities": "cidrs"}
    out = {k: _Cache(d[v]) for k, v in names.items()}
    out.update(nodes=_Cache([]), remoteidentities=_Cache([]), clusters=_Cache([]))
    return out


def _run(rec, caches):
    rec.apply(rec.desired(caches).state)


@pytest.mark.parametrize("what", ["relabel", "policy"])
@pytest.mark.parametrize("mode", ["full", "incremental"])
def test_agent_maps(benchmark, data, agent, what, mode):
    caches = _caches(data)
    recs = [agent["policy"], agent["ipcache"]]
    for r in recs:
        r.changes.everything()
        _run(r, caches)  # a full run: the maps hold the current state

    def event():
        k, o = _toggle(data, what)
        cache = "pods" if what == "relabel" else "networkpolicies"
        caches[cache].items[k] = o
        for r in recs:
            if cache not in r.watches:
                continue  # the Runner hands a reconciler only the events of what it watches
            if mode == "full":
                r.changes.everything()
            r.observe(cache, None, o)
            _run(r, caches)

    before = {r.name: dict(r.runs) for r in recs}
    benchmark.group = f"agent-{what}-maps"
    benchmark.pedantic(event, setup=_gc if mode == "full" else None,
                       rounds=ROUNDS_FULL if mode == "full" else ROUNDS_INC, iterations=1)
    ran = {r.name: {k: r.runs[k] - before[r.name][k] for k in r.runs} for r in recs}
    if mode == "incremental":
        assert ran["policy"]["full"] == 0 and ran["ipcache"]["full"] == 0, ran
    # the maps equal a full compile of the same caches
    from meshcni.bpf import rows
    from meshcni.datapath.policy import build_policy
    c = compile_policies(*_args(data))
    pk, pv, ek, _ = build_policy(c.entries, c.enforced)
    k, v = agent["maps"].policy.dump()
    assert sorted(r.tobytes() for r in rows(k)) == sorted(r.tobytes() for r in rows(pk))
    k, _ = agent["maps"].enforce.dump()
    assert sorted(r.tobytes() for r in rows(k)) == sorted(r.tobytes() for r in rows(ek))
    assert agent["maps"].ipcache.prefixes() == desired_ipcache(data["pods"], data["namespaces"], data["identities"],
                                                               data["cidrs"], [], "n1")[0]
    benchmark.extra_info.update(method=mode, runs=ran, policy_rows=len(pk))
